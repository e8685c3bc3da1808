"""Forward kinematics agrees with the twin's own site positions, one pose or a batch."""

from __future__ import annotations

import numpy as np
import pytest

from mbpo_arm.hardware.config import JOINTS
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.kinematics import ArmKinematics
from mbpo_arm.sim.twin import TwinRobot, load_model


@pytest.fixture(scope="module")
def kin() -> ArmKinematics:
    return ArmKinematics.from_config(TwinConfig())


def test_matches_the_twin_after_steps(kin: ArmKinematics) -> None:
    twin = TwinRobot(TwinConfig())
    site = twin.model.site("ee_site").id
    np.testing.assert_allclose(kin.ee_position(twin.read().position),
                               twin.data.site_xpos[site], rtol=0, atol=1e-9)
    twin.write(np.array([0.7, 0.3, -0.4, 0.6, 1.0, 0.8]))
    for _ in range(3):
        twin.step()
        q = twin.read().position
        np.testing.assert_allclose(kin.ee_position(q), twin.data.site_xpos[site],
                                   rtol=0, atol=1e-9)
        np.testing.assert_allclose(kin.ee_position(q), twin.ee_position, rtol=0, atol=1e-9)


def test_batches_match_single_calls(kin: ArmKinematics) -> None:
    q = np.random.default_rng(0).uniform(-1.5, 1.5, (7, 6))
    batch = kin.ee_position(q)
    assert batch.shape == (7, 3)
    for n in range(7):
        np.testing.assert_array_equal(batch[n], kin.ee_position(q[n]))
    assert kin.ee_position(q[0]).shape == (3,)
    assert kin.ee_position(np.zeros((0, 6))).shape == (0, 3)


def test_zero_pose_geometry(kin: ArmKinematics) -> None:
    # Upper arm up (0.1 + 0.116), forearm (0.135) and gripper (0.03 + 0.066) forward.
    np.testing.assert_allclose(kin.ee_position(np.zeros(6)), [0.231, 0.0, 0.216], atol=1e-12)


def test_subset_of_joints_holds_the_rest_at_home() -> None:
    model = load_model()
    kin5 = ArmKinematics(model, JOINTS[:5])
    kin6 = ArmKinematics(model, JOINTS)
    q = np.array([0.2, 0.1, 0.3, -0.2, 0.5])
    home_gripper = model.key("home").qpos[5]
    np.testing.assert_array_equal(kin5.ee_position(q), kin6.ee_position([*q, home_gripper]))


def test_torch_chain_matches_mujoco(kin: ArmKinematics) -> None:
    """The batched torch chain gives mj_kinematics' site positions, for all joints or a subset
    (the rest held at home), in float64 and float32, with any leading batch shape."""
    import torch

    q = np.random.default_rng(0).uniform(-1.6, 1.6, (64, len(JOINTS)))
    chain = kin.torch_chain(JOINTS)
    np.testing.assert_allclose(chain(torch.as_tensor(q)).numpy(), kin.ee_position(q),
                               atol=1e-12)
    arm = JOINTS[:4]
    home = [kin.model.key("home").qpos[kin.model.joint(j).qposadr[0]] for j in JOINTS]
    held = np.tile(home, (64, 1))
    held[:, :4] = q[:, :4]
    sub = kin.torch_chain(arm)(torch.as_tensor(q[:, :4], dtype=torch.float32).reshape(8, 8, 4))
    np.testing.assert_allclose(sub.reshape(64, 3).numpy(), kin.ee_position(held), atol=1e-5)


def test_errors_name_the_problem(kin: ArmKinematics) -> None:
    with pytest.raises(ValueError, match="wrist_flex"):
        ArmKinematics(load_model(), ("base_yaw", "wrist_flex"))
    with pytest.raises(ValueError, match="tcp"):
        ArmKinematics(load_model(), JOINTS, "tcp")
    with pytest.raises(ValueError, match=r"\(6,\) or \(N, 6\)"):
        kin.ee_position(np.zeros(5))
    with pytest.raises(FileNotFoundError, match="nowhere.xml"):
        ArmKinematics.from_config(TwinConfig(model_path="/nowhere.xml"))
