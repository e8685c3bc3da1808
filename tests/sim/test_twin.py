"""The twin as a backend: tracking, clipping, determinism, clock, start-up errors."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_arm.hardware.config import JOINTS
from mbpo_arm.hardware.robot import Backend, Simulated
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.twin import TwinRobot

TARGET = np.array([0.5, -0.4, 0.6, -0.3, 0.8, 0.5])


@pytest.fixture()
def robot() -> TwinRobot:
    twin = TwinRobot(TwinConfig())
    twin.connect()
    return twin


def test_is_a_simulated_backend_with_model_limits(robot: TwinRobot) -> None:
    assert isinstance(robot, Backend) and isinstance(robot, Simulated)
    assert robot.joint_names == JOINTS
    assert robot.control_period == pytest.approx(0.05)
    assert robot.n_substeps == 25
    lim = robot.limits
    np.testing.assert_array_equal(lim.lower, robot.model.jnt_range[:, 0])
    np.testing.assert_array_equal(lim.upper, robot.model.jnt_range[:, 1])
    np.testing.assert_array_equal(lim.velocity, np.full(6, 4.7))
    np.testing.assert_array_equal(lim.effort, np.full(6, 3.0))


def test_tracks_a_commanded_pose_against_gravity(robot: TwinRobot) -> None:
    robot.place(robot.home_position)
    robot.write(TARGET)
    for _ in range(10):  # 0.5 s
        robot.step()
    state = robot.read()
    assert np.abs(state.position - TARGET).max() < 0.02
    assert np.abs(state.velocity).max() < 0.05
    assert robot.contacts_with_table() == 0


def test_write_clips_and_returns_what_was_sent(robot: TwinRobot) -> None:
    wild = np.array([5.0, -5.0, 0.1, 2.0, -3.0, 9.0])
    sent = robot.write(wild)
    expected = np.clip(wild, robot.limits.lower, robot.limits.upper)
    np.testing.assert_array_equal(sent, expected)
    np.testing.assert_array_equal(robot.data.ctrl, expected)
    with pytest.raises(ValueError, match="shoulder_pitch"):
        robot.write(np.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        robot.write(np.array([0.0, np.nan, 0, 0, 0, 0]))


def test_same_calls_give_bit_identical_states() -> None:
    rng = np.random.default_rng(0)
    commands = rng.uniform(-1.0, 1.0, (30, 6))
    runs = []
    for _ in range(2):
        twin = TwinRobot(TwinConfig())
        states = [twin.place(twin.home_position)]
        for c in commands:
            twin.write(c)
            twin.step()
            states.append(twin.read())
        runs.append(states)
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a.position, b.position)
        assert np.array_equal(a.velocity, b.velocity)
        assert a.stamp == b.stamp


def test_reset_is_reproducible_on_one_twin(robot: TwinRobot) -> None:
    def run() -> np.ndarray:
        robot.place(robot.home_position)
        for c in (TARGET, -TARGET, TARGET):
            robot.write(c)
            robot.step()
        return robot.read().position

    assert np.array_equal(run(), run())


def test_stamps_advance_by_the_control_period() -> None:
    twin = TwinRobot(TwinConfig(), control_hz=30.0)  # 33.3 ms: not a multiple of 2 ms
    stamps = [twin.place(twin.home_position).stamp]
    for _ in range(50):
        twin.step()
        stamps.append(twin.read().stamp)
    assert stamps[0] == 0.0
    np.testing.assert_allclose(np.diff(stamps), 1 / 30.0, rtol=0, atol=1e-12)
    assert twin.model.opt.timestep * twin.n_substeps == pytest.approx(1 / 30.0, abs=1e-15)


def test_reset_clips_and_holds_the_pose(robot: TwinRobot) -> None:
    state = robot.place(np.array([9.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    assert state.position[0] == robot.limits.upper[0]
    assert state.stamp == 0.0 and not state.velocity.any()
    np.testing.assert_array_equal(robot.data.ctrl, state.position)
    np.testing.assert_array_equal(robot.home_position, robot.model.key("home").qpos)


def test_contacts_with_table_counts_a_link_pressed_into_it(robot: TwinRobot) -> None:
    assert robot.place(robot.home_position) and robot.contacts_with_table() == 0
    robot.write(np.array([0.0, 1.7, 0.5, 0.5, 0.0, 0.0]))
    for _ in range(10):
        robot.step()
    assert robot.contacts_with_table() > 0
    assert robot.read().position[1] < 1.6  # the table stops the arm


def test_wrong_model_path_names_the_path_and_the_fix(tmp_path) -> None:
    path = tmp_path / "my_arm.xml"
    with pytest.raises(FileNotFoundError, match="my_arm.xml") as err:
        TwinRobot(TwinConfig(model_path=str(path)))
    assert "backend.model_path=" in str(err.value)


def test_missing_names_are_named_with_the_models_names() -> None:
    with pytest.raises(ValueError, match="elbow_flex") as err:
        TwinRobot(TwinConfig(joint_names=(*JOINTS[:2], "elbow_flex", *JOINTS[3:])))
    assert "elbow_pitch" in str(err.value)  # lists what the model has
    with pytest.raises(ValueError, match="gripper_motor"):
        TwinRobot(TwinConfig(actuator_names=(*[f"{j}_act" for j in JOINTS[:5]],
                                             "gripper_motor")))
    with pytest.raises(ValueError, match="tool_tip"):
        TwinRobot(TwinConfig(ee_site="tool_tip"))
    with pytest.raises(ValueError, match="does not drive joint"):
        TwinRobot(TwinConfig(actuator_names=tuple(f"{j}_act" for j in reversed(JOINTS))))


def test_config_validates_and_accepts_lists() -> None:
    cfg = TwinConfig(joint_names=list(JOINTS[:5]),
                     actuator_names=[f"{j}_act" for j in JOINTS[:5]])
    assert cfg.joint_names == JOINTS[:5] and isinstance(cfg.actuator_names, tuple)
    twin = TwinRobot(cfg, control_hz=10)
    assert twin.read().position.shape == (5,)
    assert twin.n_substeps == 50
    with pytest.raises(ValueError, match="control_hz"):
        TwinRobot(TwinConfig(), control_hz=0)
    with pytest.raises(ValueError, match="timestep"):  # longer than the control period
        TwinRobot(TwinConfig(timestep=0.2), control_hz=10)
    with pytest.raises(ValueError, match="actuator_names"):
        TwinConfig(actuator_names=("base_yaw_act",))
    with pytest.raises(ValueError, match="timestep"):
        TwinConfig(timestep=-1.0)


def test_config_accepts_omegaconf_lists() -> None:
    omegaconf = pytest.importorskip("omegaconf")
    names = omegaconf.OmegaConf.create({"j": list(JOINTS)})["j"]
    cfg = TwinConfig(joint_names=names)
    assert cfg.joint_names == JOINTS and all(type(n) is str for n in cfg.joint_names)
