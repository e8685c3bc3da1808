"""ArmReach-v0 over the MuJoCo twin: the gymnasium API, reward parity with the pure functions,
time limits as truncation, executed actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import mbpo_arm.envs.reach  # noqa: F401  (registers ArmReach-v0)
from mbpo_arm.envs.config import ReachConfig, TaskConfig
from mbpo_arm.envs.factory import env_task_functions, make_env
from mbpo_arm.envs.tasks import ReachLayout, reach_distance


@pytest.fixture
def env() -> gym.Env:
    env = gym.make("ArmReach-v0")
    yield env
    env.close()


def test_check_env_passes(env: gym.Env) -> None:
    check_env(env.unwrapped, skip_render_check=True)


def test_observation_layout(env: gym.Env) -> None:
    obs, info = env.reset(seed=0)
    assert obs.shape == (19,) and env.action_space.shape == (5,)
    layout = ReachLayout(5)
    ee = env.unwrapped.kinematics.ee_position(env.unwrapped.loop.state.position)
    np.testing.assert_allclose(obs[layout.ee], ee)
    np.testing.assert_allclose(obs[layout.offset], obs[layout.target] - ee)
    assert info["distance"] == pytest.approx(float(reach_distance(obs, layout)))
    assert obs[layout.target][2] >= 0.05


def test_reward_and_termination_match_the_pure_functions(env: gym.Env) -> None:
    fns = env_task_functions(env)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(60):
        action = rng.uniform(-1.5, 1.5, 5)  # beyond the box too: clipped, then executed
        next_obs, reward, terminated, truncated, info = env.step(action)
        rows.append((obs, info["executed_action"], next_obs, reward, terminated))
        obs = next_obs
    o, a, n, r, t = (np.array(x) for x in zip(*rows, strict=True))
    np.testing.assert_allclose(fns.reward(o, a, n), r, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fns.termination(o, a, n), t)
    # the same functions on torch tensors, batched, as model rollouts call them
    rt = fns.reward(*(torch.as_tensor(x) for x in (o, a, n)))
    np.testing.assert_allclose(rt.numpy(), r, atol=1e-12)


def test_derive_rebuilds_what_follows_from_the_joints(env: gym.Env) -> None:
    """A prediction with the right joints but a wrong end effector, target and offset is made
    exactly the observation the env gives (forward kinematics in torch)."""
    derive = env_task_functions(env).derive
    layout, rng = ReachLayout(5), np.random.default_rng(0)
    obs, _ = env.reset(seed=2)
    rows = []
    for _ in range(30):
        next_obs, *_ = env.step(rng.uniform(-1, 1, 5))
        rows.append((obs, next_obs))
        obs = next_obs
    o, n = (torch.as_tensor(np.array(x)) for x in zip(*rows, strict=True))
    wrong = n.clone()
    wrong[:, 2 * layout.joints:] += torch.as_tensor(rng.normal(0, 0.05, (len(n), 9)))
    np.testing.assert_allclose(derive(o, wrong).numpy(), n.numpy(), atol=1e-9)
    np.testing.assert_allclose(derive(o.float(), wrong.float()).numpy(), n.numpy(), atol=1e-5)


def test_relabel_gives_real_observations_with_new_goals(env: gym.Env) -> None:
    """A relabelled start state is the observation the env would give with that target: the
    arm's part unchanged, the target one another row had, one it reached, or one near the
    row's own end effector, in thirds; the offset recomputed; about ``fraction`` of the rows
    change and the input is left as it was."""
    relabel = env_task_functions(env).relabel
    layout, rng = ReachLayout(5), np.random.default_rng(0)
    rows = []
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        for _ in range(10):
            obs, *_ = env.step(rng.uniform(-1, 1, 5))
            rows.append(obs)
    obs = np.array(rows, dtype=np.float32)
    before = obs.copy()
    out = relabel(obs, 0.5, np.random.default_rng(1))
    np.testing.assert_array_equal(obs, before)
    changed = (out[:, layout.target] != obs[:, layout.target]).any(1)
    assert 0.4 < changed.mean() < 0.6
    np.testing.assert_array_equal(out[:, :layout.target.start], obs[:, :layout.target.start])
    np.testing.assert_allclose(out[:, layout.offset], out[:, layout.target] - out[:, layout.ee],
                               atol=1e-6)
    new = out[changed][:, layout.target]
    targets = {tuple(g) for g in obs[:, layout.target]}
    reached = {tuple(g) for g in obs[:, layout.ee]}
    near = np.linalg.norm(new - out[changed][:, layout.ee], axis=1) < 0.15
    kinds = np.array([[tuple(g) in targets, tuple(g) in reached] for g in new])
    assert (kinds.any(1) | near).all()  # every new goal is one of the three kinds
    for share in (kinds[:, 0].mean(), kinds[:, 1].mean(), (~kinds.any(1)).mean()):
        assert 0.2 < share < 0.45
    assert relabel(obs, 0.0, rng).tobytes() == obs.tobytes()


def test_time_limit_is_truncation_never_termination(env: gym.Env) -> None:
    env.reset(seed=2)
    for step in range(1, 101):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        assert truncated == (step == 100)


def test_action_moves_the_command_by_the_scale() -> None:
    env = make_env(TaskConfig(reach=ReachConfig(action_scale=0.05, init_noise=0.0)))
    env.reset(seed=0)
    before = env.unwrapped._command.copy()
    env.step(np.array([1.0, 0, 0, 0, -1.0]))
    after = env.unwrapped._command
    np.testing.assert_allclose(after[0] - before[0], 0.05, atol=1e-12)
    np.testing.assert_allclose(after[4] - before[4], -0.05, atol=1e-12)
    np.testing.assert_allclose(after[5], before[5])  # the gripper holds its home pose
    env.close()


def test_executed_action_reports_limit_clipping() -> None:
    env = make_env(TaskConfig(reach=ReachConfig(action_scale=0.5)))
    env.reset(seed=0)
    for _ in range(20):  # push the base joint into its upper limit
        _, _, _, _, info = env.step(np.array([1.0, 0, 0, 0, 0]))
    assert info["executed_action"][0] == pytest.approx(0.0, abs=1e-6)
    env.close()


def test_same_seed_same_episode() -> None:
    def rollout() -> np.ndarray:
        env = gym.make("ArmReach-v0")
        obs, _ = env.reset(seed=7)
        out = [obs]
        for i in range(30):
            out.append(env.step(np.sin(np.arange(5) + i))[0])
        env.close()
        return np.array(out)

    np.testing.assert_array_equal(rollout(), rollout())


def test_scripted_controller_can_succeed() -> None:
    """The task is solvable: a Jacobian-transpose controller reaches within 2 cm."""
    env = gym.make("ArmReach-v0")
    obs, _ = env.reset(seed=4)
    inner = env.unwrapped
    layout = inner.layout
    info = {}
    for _ in range(100):
        q = inner.loop.state.position
        err = obs[layout.target] - obs[layout.ee]
        jac = np.zeros((3, 5))
        for j, idx in enumerate(inner._idx):
            dq = q.copy()
            dq[idx] += 1e-4
            jac[:, j] = (inner.kinematics.ee_position(dq) - obs[layout.ee]) / 1e-4
        step = np.linalg.lstsq(jac, err, rcond=None)[0] / inner.config.action_scale
        obs, _, _, truncated, info = env.step(np.clip(step, -1, 1))
        if truncated:
            break
    assert info["is_success"], f"final distance {info['distance']:.3f} m"
    env.close()
