"""Limits files and the composition: inconsistent limits and hardware without a limits file
fail at start-up with one line naming the problem; every backend's robot is shielded."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.configs.schema import ConfigError
from mbpo_arm.envs.config import ReachConfig, TaskConfig
from mbpo_arm.envs.factory import BACKENDS, make_env, make_loop
from mbpo_arm.hardware.config import ShieldSettings
from mbpo_arm.hardware.shield_config import ShieldConfig
from mbpo_arm.launch.build import build_policy
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.twin import TwinRobot
from tests.hardware.conftest import LIMITS


def limits_file(tmp_path, **changes) -> str:
    raw = yaml.safe_load(LIMITS.read_text())
    raw["model"] = str(ShieldConfig.load(LIMITS).model)
    raw.update(changes)
    path = tmp_path / "arm.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("changes,needle", [
    ({"lower": [-1.92, 2.0, -1.69, -1.66, -2.74, -0.17]}, "lower >= upper"),
    ({"margin": 2.0}, "margin"),
    ({"velocity": [4.7, 4.7, 0.0, 4.7, 4.7, 4.7]}, "velocity must be > 0"),
    ({"velocity": [4.7, 4.7]}, "2 values for 6 joints"),
    ({"max_step": 0.01}, "max_step must be >= margin"),
    ({"workspace": {"lower": [0, 0, 0], "upper": [-1, 1, 1]}}, "must be below upper"),
    ({"home": [0, 0, 9, 0, 0, 0]}, "home"),
    ({"speed": 1}, "'speed' is not a limits key"),
])
def test_inconsistent_limits_fail_with_one_line(tmp_path, changes, needle) -> None:
    with pytest.raises(ValueError) as err:
        ShieldConfig.load(limits_file(tmp_path, **changes))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_workspace_that_excludes_home_fails_at_start(tmp_path) -> None:
    path = limits_file(tmp_path, workspace={"lower": [-0.3, -0.3, 0.2], "upper": [0.3, 0.3, 0.4]})
    with pytest.raises(ValueError, match="excludes the home pose"):
        make_loop("mujoco", TwinConfig(), ShieldSettings(limits_file=path))


def test_limits_for_other_joints_fail_at_start(tmp_path) -> None:
    path = limits_file(tmp_path, joint_names=["a", "b", "c", "d", "e", "f"])
    with pytest.raises(ValueError, match="do not match the backend's joints"):
        make_loop("mujoco", TwinConfig(), ShieldSettings(limits_file=path))


@pytest.fixture
def hardware_backend(monkeypatch) -> str:
    """A backend name outside SIMULATED_BACKENDS (the twin's classes stand in for a bus that
    cannot run here): the factory must treat it as hardware."""
    monkeypatch.setitem(BACKENDS, "bench_arm", (TwinConfig, TwinRobot))
    return "bench_arm"


def test_hardware_without_limits_file_refuses_to_start(hardware_backend) -> None:
    with pytest.raises(ValueError, match="needs a limits file: set shield.limits_file"):
        make_loop(hardware_backend, TwinConfig(), ShieldSettings(limits_file=None))
    with pytest.raises(ValueError, match="shield.enabled=false is not allowed"):
        make_loop(hardware_backend, TwinConfig(), ShieldSettings(enabled=False))
    with pytest.raises(ValueError, match="shield.slow_reset=false is not allowed"):
        make_loop(hardware_backend, TwinConfig(),
                  ShieldSettings(limits_file=str(LIMITS), slow_reset=False))


def test_hardware_with_limits_is_shielded_and_resets_through_it(hardware_backend) -> None:
    loop = make_loop(hardware_backend, TwinConfig(), ShieldSettings(limits_file=str(LIMITS)))
    assert loop.shield is not None and not loop.place_resets and loop.pace is not None
    assert loop.shield.collision and loop.shield.workspace is not None


def test_the_cli_shields_every_env_and_reports_interventions() -> None:
    rc, _ = load_run_config(["logger.wandb=disabled"])
    assert rc.shield.limits_file == "so101"
    env, _ = build_policy(rc)
    try:
        loop = env.unwrapped.loop
        assert loop.shield is not None and loop.place_resets
        env.reset(seed=0)
        info = {}
        for _ in range(30):  # full speed into the base joint's limit
            *_, info = env.step(np.array([1.0, 0, 0, 0, 0], dtype=np.float32))
        assert "position" in info["shield"]
        assert loop.shield.counts["position"] > 0
    finally:
        env.close()


def test_bad_shield_config_is_one_line() -> None:
    with pytest.raises(ConfigError, match="shield.limits_file=nope"):
        load_run_config(["shield.limits_file=nope"])
    with pytest.raises(ConfigError, match="shield.watchdog.on_timeout"):
        load_run_config(["shield.watchdog.on_timeout=maybe"])


def test_disabled_shield_on_the_twin_sends_proposals_as_they_are() -> None:
    env = make_env(TaskConfig(reach=ReachConfig()), shield=ShieldSettings(enabled=False))
    assert env.unwrapped.loop.shield is None
    env.close()


def test_interventions_reach_the_run_metrics(tmp_path) -> None:
    from mbpo_arm.agent.logger import read_metrics
    from mbpo_arm.agent.train import collect_step, evaluate
    from mbpo_arm.launch.build import build_run

    rc, _ = load_run_config(["logger.wandb=disabled", "logger.progress=false",
                             "trainer.eval_episodes=1", "agent.sac.learning_starts=1000",
                             f"run_dir={tmp_path}"])
    run = build_run(rc, tmp_path)
    try:
        run.agent.rng = np.random.default_rng(0)
        obs, _ = run.env.reset(seed=0)
        for _ in range(100):  # uniform random actions before learning_starts
            obs = collect_step(run, obs)
        assert sum(run.progress.shield_counts.values()) > 0
        evaluate(run)
        event = read_metrics(tmp_path)[-1]
        for rule, n in run.progress.shield_counts.items():
            assert event[f"shield_{rule}"] == n
    finally:
        run.logger.close()
        run.env.close()
        run.eval_env.close()


def test_the_async_runtime_resets_slowly_unless_told_otherwise() -> None:
    from mbpo_arm.launch.build import slow_resets

    rc, _ = load_run_config(["logger.wandb=disabled"])
    assert slow_resets(rc).shield.slow_reset is True
    rc, _ = load_run_config(["logger.wandb=disabled", "shield.slow_reset=false"])
    assert slow_resets(rc).shield.slow_reset is False
