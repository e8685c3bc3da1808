"""Every YAML in configs/ composes, validates and builds what it names; bad input gets a
one-line error naming the key."""

from __future__ import annotations

import functools
from contextlib import ExitStack
from dataclasses import fields

import pytest
from omegaconf import DictConfig, OmegaConf

from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.configs.schema import BACKEND_SCHEMAS, CONFIG_DIR, ConfigError, RunConfig, options
from mbpo_arm.launch.build import build_policy, build_run
from tests.hardware.emulated import emulated_arm
from tests.hardware.ros2_helpers import fresh_domain, twin_driver_thread

GROUPS = ("backend", "task", "agent", "logger", "runtime")


def case(group: str, option: str) -> object:
    """A hardware case (the servo emulator on a pty, the ROS 2 twin over DDS) is slow."""
    hardware = group == "robot" or (group, option) in (("backend", "serial"),
                                                        ("backend", "ros2"))
    return pytest.param(group, option, marks=pytest.mark.slow) if hardware else (group, option)


@pytest.mark.parametrize("group,option", [case(g, o) for g in (*GROUPS, "robot")
                                          for o in options(g)])
def test_every_yaml_composes_and_builds(group: str, option: str, tmp_path) -> None:
    with ExitStack() as stack:
        overrides = [f"{group}={option}", "logger.wandb=disabled"]
        if (group, option) == ("backend", "serial") or group == "robot":
            # A serial arm is built against the servo emulator on a pseudo-terminal.
            preset = OmegaConf.load(CONFIG_DIR / "robot" / f"{option}.yaml") \
                if group == "robot" else {}
            protocol = preset.backend.get("protocol", "feetech") if group == "robot" \
                else "feetech"
            _, serial = stack.enter_context(emulated_arm(tmp_path, protocol))
            overrides += ["backend=serial", *serial]
        if group == "robot" and "shield" in preset:  # no limits ship for this arm
            assert preset.shield.limits_file is None
            overrides.append("shield.limits_file=so101")
        rc, _ = load_run_config(overrides)
        assert getattr(rc, "backend" if group == "robot" else group) is not None
        if (group, option) == ("backend", "ros2"):  # an arm on its topics: the twin driver
            rc.backend.domain_id = fresh_domain()
            stack.enter_context(twin_driver_thread(rc.backend))
        env, sac = build_policy(rc)
        stack.callback(env.close)
        obs, _ = env.reset(seed=0)
        action = sac.act(obs)
        assert action.shape == env.action_space.shape
        env.step(action)


@pytest.mark.parametrize("option", [o for o in options("agent") if o != "sac"])
def test_every_agent_preset_builds_its_model(option: str, tmp_path) -> None:
    """The model-based presets build the whole run (the ensemble of their sizes, the task's
    model functions) on the task they name, not only compose."""
    task = next((t for t in ("hopper", "inverted_pendulum") if t in option), "reach")
    rc, _ = load_run_config([f"agent={option}", f"task={task}", "logger.wandb=disabled"])
    run = build_run(rc, tmp_path)
    try:
        model = run.agent.model
        assert model is not None and model.ensemble.members == rc.agent.model.members
        assert model.mbpo == rc.agent.mbpo and model.mbpo.model_learning_starts is not None
    finally:
        run.logger.close()
        run.env.close()
        run.eval_env.close()


@pytest.mark.parametrize("backend", sorted(BACKEND_SCHEMAS))
def test_the_composed_defaults_are_the_dataclass_defaults(backend: str) -> None:
    """Every default lives in the dataclasses: composing with no overrides (but the backend)
    gives exactly the schemas' defaults, field by field, for every group."""
    rc, _ = load_run_config([f"backend={backend}"])
    expected = RunConfig(backend_name=backend, backend=BACKEND_SCHEMAS[backend]())
    for part in fields(RunConfig):
        assert getattr(rc, part.name) == getattr(expected, part.name), part.name


@pytest.mark.parametrize("group,option", [(g, o) for g in (*GROUPS, "robot") for o in options(g)
                                          if (CONFIG_DIR / g / f"{o}.yaml").exists()])
def test_a_preset_changes_what_it_names(group: str, option: str) -> None:
    """A YAML preset holds only values that differ from what it extends: each key it sets
    changes the composed config (no restated defaults to drift)."""
    node = OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml")
    base = [o for o in (node.get("defaults") or []) if isinstance(o, str) and o != "_self_"]
    extra = ["backend=serial"] if group == "robot" else []
    parent = [f"{group}={base[0]}"] if base else extra
    mine = composed((*extra, f"{group}={option}"))
    theirs = composed(tuple(parent))
    scope = mine if group == "robot" else mine[group]
    against = theirs if group == "robot" else theirs[group]
    for key in leaves(OmegaConf.masked_copy(node, [k for k in node if k != "defaults"])):
        assert OmegaConf.select(scope, key) != OmegaConf.select(against, key), \
            f"configs/{group}/{option}.yaml restates {key}"


@functools.cache
def composed(overrides: tuple[str, ...]) -> DictConfig:
    """The composed config of ``overrides`` (many presets share a parent: composed once)."""
    return load_run_config(list(overrides))[1]


def leaves(node: DictConfig, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        out += leaves(value, path + ".") if isinstance(value, DictConfig) else [path]
    return out


def test_defaults_are_reach_on_the_twin_with_sac() -> None:
    rc, _ = load_run_config([])
    assert rc.backend_name == "mujoco"
    assert rc.task.id == "ArmReach-v0"
    assert rc.agent.algo == "sac"
    assert rc.logger.wandb == "offline"


@pytest.mark.parametrize("override,needle", [
    ("trainer.total_steps=abc", "trainer.total_steps"),
    ("trainer.total_steps=0", "trainer.total_steps"),
    ("trainer.totl_steps=5", "trainer.totl_steps"),
    ("backend=nope", "mujoco"),
    ("task=nope", "reach"),
    ("agent.sac.gamma=2.0", "gamma"),
    ("logger.wandb=sometimes", "offline"),
    ("task.id=NoSuchEnv-v9", "task.id"),
    ("device=tpu", "device"),
    ("runtime.ray.robots=[arm1,arm2]", "runtime.ray.source=robot is not in"),
    ("runtime.ray.source=twin3", "twin<i>"),
    ("runtime.ray.twins=-1", "runtime.ray.twins"),
    ("runtime.ray.evaluate_on=gpu", "runtime.ray.evaluate_on='gpu' is not allowed"),
])
def test_bad_override_names_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        rc, _ = load_run_config(["logger.wandb=disabled", override])
        build_policy(rc)[0].close()
    message = str(err.value)
    assert needle in message
    assert "\n" not in message


def test_bring_your_own_model_with_wrong_path_fails_at_start(tmp_path) -> None:
    rc, _ = load_run_config([f"backend.model_path={tmp_path}/arm.xml"])
    with pytest.raises(FileNotFoundError, match="arm.xml"):
        build_policy(rc)


def test_task_joint_not_on_the_backend_fails_at_start() -> None:
    rc, _ = load_run_config(["task.reach.joints=[base_yaw,elbow]"])
    with pytest.raises(ValueError, match="elbow"):
        build_policy(rc)


def test_missing_joint_name_fails_at_start() -> None:
    rc, _ = load_run_config(["backend.joint_names=[base_yaw,no_such_joint]",
                             "backend.actuator_names=[base_yaw_act,gripper_act]"])
    with pytest.raises(ValueError, match="no_such_joint"):
        build_policy(rc)
