"""Making datasets: collection in the twin, and import from run directories.

Behaviour policies for ``mbpo-arm collect policy=...``:

- ``random``: uniform actions in ``[-1, 1]``.
- ``expert`` / ``medium`` (``ArmReach`` only): a scripted resolved-rate reach controller,
  ``a = J^+ (gain * (target - ee)) / action_scale`` with the Jacobian of the twin's forward
  kinematics (Whitney 1969, resolved motion rate control), plus Gaussian action noise
  (``noise``; ``medium`` defaults to the noise that gives about half the episodes a success).
- ``checkpoint``: a run's deterministic SAC policy plus Gaussian noise (any task: this is how
  the Hopper "medium" dataset is made from the project's own SAC checkpoint).
- ``mixed``: a training run's whole replay (:func:`import_run`), as D4RL's "medium-replay".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
from omegaconf import OmegaConf

from mbpo_arm.agent.checkpoint import latest_checkpoint, load_checkpoint
from mbpo_arm.agent.config import SACConfig
from mbpo_arm.agent.dataset import (
    Dataset,
    DatasetError,
    DatasetMeta,
    from_arrays,
    from_replay,
    spec,
)
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.runtime.replay_log import read_log
from mbpo_arm.agent.sac import SAC

Policy = Callable[[np.ndarray], np.ndarray]  # obs [D] -> action [A] in [-1, 1]
POLICIES = ("random", "medium", "expert", "checkpoint", "mixed")
MEDIUM_NOISE = 0.55 # std of the action noise of the scripted "medium" reach controller


# ---------------------------------------------------------------------------- policies
def random_policy(env: gym.Env, rng: np.random.Generator) -> Policy:
    shape = env.action_space.shape
    return lambda obs: rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def scripted_reach(env: gym.Env, noise: float, rng: np.random.Generator,
                   gain: float = 0.5, eps: float = 1e-4) -> Policy:
    """The noisy resolved-rate reach controller of the module docstring, over an
    ``ArmReach`` env (its kinematics give the Jacobian by central differences)."""
    inner = env.unwrapped
    if not hasattr(inner, "kinematics"):
        raise ValueError(f"policy=medium/expert is the scripted reach controller; task "
                         f"{env.spec.id if env.spec else inner} is not an ArmReach task (use "
                         "policy=checkpoint)")
    names = list(inner.loop.joint_names)
    idx = [names.index(j) for j in inner.config.joints]
    layout, scale = inner.layout, inner.config.action_scale

    def act(obs: np.ndarray) -> np.ndarray:
        q_full = np.array(inner.loop.state.position, dtype=np.float64)
        q_full[idx] = obs[:len(idx)]
        jac = np.zeros((3, len(idx)))
        for k, j in enumerate(idx):
            step = np.zeros_like(q_full)
            step[j] = eps
            jac[:, k] = (inner.kinematics.ee_position(q_full + step)
                         - inner.kinematics.ee_position(q_full - step)) / (2 * eps)
        dq = np.linalg.pinv(jac, rcond=1e-3) @ (gain * obs[layout.offset])
        action = dq / scale + noise * rng.standard_normal(len(idx))
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return act


def checkpoint_policy(run_dir: str | Path, env: gym.Env, noise: float,
                      rng: np.random.Generator) -> Policy:
    """The deterministic policy of ``run_dir``'s newest checkpoint plus Gaussian noise."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"checkpoint={run_dir}: no checkpoint there; train a run first")
    state, _ = load_checkpoint(ckpt, buffer_names=())
    sac_state = state["sac"]
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if (sac_state["obs_dim"], sac_state["act_dim"]) != (obs_dim, act_dim):
        raise ValueError(f"checkpoint={run_dir}: policy for obs_dim={sac_state['obs_dim']}, "
                         f"act_dim={sac_state['act_dim']}; this task has {obs_dim}, {act_dim}")
    sac = SAC(obs_dim, act_dim, SACConfig(hidden=tuple(sac_state["hidden"])))
    sac.load_policy_state_dict(sac_state)

    def act(obs: np.ndarray) -> np.ndarray:
        action = sac.act(obs, deterministic=True) + noise * rng.standard_normal(act_dim)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return act


# ----------------------------------------------------------------------------- collect
def env_meta(env: gym.Env, robot: str, source: str) -> DatasetMeta:
    """The metadata of transitions recorded in ``env`` (rate from the robot or ``dt``)."""
    inner = env.unwrapped
    loop = getattr(inner, "loop", None)
    period = getattr(loop, "period", None) or getattr(inner, "dt", None) or 0.05
    joints = list(getattr(getattr(inner, "config", None), "joints", ()) or [])
    return DatasetMeta(robot=robot, task=env.spec.id if env.spec else type(inner).__name__,
                       control_hz=round(1.0 / period, 6),
                       obs_spec=spec(env.observation_space.shape[0]),
                       action_spec=spec(env.action_space.shape[0], joints or None, bounded=True),
                       source=source)


def collect(env: gym.Env, policy: Policy, episodes: int, seed: int, meta: DatasetMeta
            ) -> Dataset:
    """Run ``policy`` for ``episodes`` episodes (seeded resets ``seed, seed + 1, ...``) and
    keep every transition with the *executed* action; the behaviour policy's mean return and
    success rate go to ``meta.extra``."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    rows: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs",
                                             "terminated", "truncated")}
    returns, successes = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total, info = False, 0.0, {}
        while not done:
            action = policy(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            for k, v in zip(rows, (obs, info.get("executed_action", action), reward, next_obs,
                                   terminated, truncated), strict=True):
                rows[k].append(v)
            total += float(reward)
            done, obs = terminated or truncated, next_obs
        returns.append(total)
        if "is_success" in info:
            successes.append(float(info["is_success"]))
    meta.extra.update(behaviour_return=float(np.mean(returns)), episodes_collected=episodes,
                      behaviour_success_rate=float(np.mean(successes)) if successes else None)
    return from_arrays(meta, **{k: np.asarray(v) for k, v in rows.items()})


# ------------------------------------------------------------------------- run import
def import_run(run_dir: str | Path) -> Dataset:
    """Every transition of a run (its newest checkpoint's replay, or the async runtime's
    ``replay.log`` where that holds more) as a dataset; metadata from its ``config.yaml``."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.exists():
        raise DatasetError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = OmegaConf.load(config)
    ckpt = latest_checkpoint(run_dir)
    buffer = load_checkpoint(ckpt, ("replay",))[1].get("replay") if ckpt else None
    log = run_dir / "replay.log"
    if log.exists():
        records = read_log(log)
        if buffer is None or len(records) > len(buffer):
            buffer = ReplayBuffer(max(len(records), 1), records.obs.shape[1],
                                  records.action.shape[1])
            buffer.add(records.obs, records.action, records.reward, records.next_obs,
                       records.terminated, records.truncated)
    if buffer is None or len(buffer) == 0:
        raise DatasetError(f"{run_dir}: the run has no transitions yet (no checkpoint replay "
                           "and no replay.log)")
    backend = str(cfg.get("backend_name", "unknown"))
    hz = OmegaConf.select(cfg, "runtime.control_hz", default=None) \
        or OmegaConf.select(cfg, "backend.control_hz", default=None)  # runs saved before
    meta = DatasetMeta(robot=backend, task=str(cfg.task.id), control_hz=float(hz or 20.0),
                       obs_spec=spec(buffer.obs_dim), action_spec=spec(buffer.act_dim,
                                                                      bounded=True),
                       source=f"run:{run_dir}",
                       extra={"algo": str(OmegaConf.select(cfg, "agent.algo", default="")),
                              "seed": int(cfg.get("seed", 0))})
    return from_replay(buffer, meta)


