"""The shipped MJCF: names, physics settings, servo ranges, a collision-free home pose."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from mbpo_arm.hardware.config import JOINTS
from mbpo_arm.sim.config import ASSET, TwinConfig
from mbpo_arm.sim.twin import load_model


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return load_model()


def test_asset_loads_with_six_joints_actuators_and_ee_site(model: mujoco.MjModel) -> None:
    assert ASSET.is_file()
    assert model.njnt == 6 and model.nu == 6
    assert [model.joint(i).name for i in range(6)] == list(JOINTS)
    assert [model.actuator(i).name for i in range(6)] == [f"{j}_act" for j in JOINTS]
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "ee_site") >= 0
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "front") >= 0
    assert model.opt.timestep == 0.002
    assert model.opt.gravity[2] < 0
    assert model.nmesh == 0  # primitive geoms only


def test_servos_are_position_actuators_over_the_joint_range(model: mujoco.MjModel) -> None:
    assert model.jnt_limited.all()
    np.testing.assert_array_equal(model.actuator_ctrlrange, model.jnt_range)
    np.testing.assert_array_equal(model.actuator_forcerange, np.tile([-3.0, 3.0], (6, 1)))
    kp = model.actuator_gainprm[:, 0]
    np.testing.assert_array_equal(model.actuator_biasprm[:, 1], -kp)  # position servo
    assert (kp > 0).all()


def test_link_masses_are_those_of_a_desk_arm(model: mujoco.MjModel) -> None:
    moving = model.body_weldid != 0
    masses = model.body_mass[moving]
    assert ((masses >= 0.02) & (masses <= 0.2)).all(), masses


def test_home_pose_is_above_the_table_without_contacts(model: mujoco.MjModel) -> None:
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_forward(model, data)
    assert data.ncon == 0
    assert data.site_xpos[model.site("ee_site").id][2] > 0.08


def test_links_collide_with_the_table(model: mujoco.MjModel) -> None:
    data = mujoco.MjData(model)
    data.qpos[:] = [0.0, 1.7, 0.5, 0.5, 0.0, 0.0]  # shoulder fully forward: gripper in table
    mujoco.mj_forward(model, data)
    table = model.geom("table").id
    assert any(table in data.contact.geom[i] for i in range(data.ncon))


def test_timestep_override(model: mujoco.MjModel) -> None:
    assert load_model(TwinConfig(timestep=0.001)).opt.timestep == 0.001
    assert model.opt.timestep == 0.002  # loading again does not touch other models
