"""Forward kinematics of the arm from its MJCF, for any backend (the twin or real hardware).

Only ``mujoco.mj_kinematics`` runs, on a private ``MjData``: no physics step, no contacts,
so it is cheap and has no effect on any simulation.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np

from sim.twin import JOINTS, TwinConfig, check_joints, load_model, name_ids


class ArmKinematics:
    """End-effector position as a function of joint positions.

    Args:
        model: the arm's MuJoCo model (not modified).
        joint_names: the ``J`` joints that ``q`` lists, in order.
        ee_site: the end-effector site.

    Joints of the model that are not in ``joint_names`` stay at their ``home`` keyframe value
    (the model default if there is no such keyframe), as the twin holds them.

    Raises:
        ValueError: a joint or the site is not in the model (the message lists its names).
    """

    def __init__(self, model: mujoco.MjModel, joint_names: Sequence[str] = JOINTS,
                 ee_site: str = "ee_site") -> None:
        self.model = model
        self.joint_names = tuple(str(j) for j in joint_names)
        self.ee_site = str(ee_site)
        joints = check_joints(model, self.joint_names)
        self._qadr = model.jnt_qposadr[joints]
        self._site = int(name_ids(model, mujoco.mjtObj.mjOBJ_SITE, [self.ee_site],
                                  "backend.ee_site")[0])
        self._data = mujoco.MjData(model)
        key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "home")
        if key >= 0:
            self._data.qpos[:] = model.key_qpos[key]

    @classmethod
    def from_config(cls, config: TwinConfig | None = None) -> ArmKinematics:
        """Kinematics of the model, joints and site named by a twin config (the shipped arm by
        default); the same start-up errors as :func:`sim.twin.load_model`."""
        config = config if config is not None else TwinConfig()
        return cls(load_model(config), config.joint_names, config.ee_site)

    def ee_position(self, q: np.ndarray) -> np.ndarray:
        """World position of the end-effector site.

        Args:
            q: joint positions ``[J]`` or a batch ``[N, J]`` (rad), in ``joint_names`` order.

        Returns:
            ``[3]`` for ``q`` of shape ``[J]``, ``[N, 3]`` for ``[N, J]`` (m).
        """
        q = np.asarray(q, dtype=np.float64)
        j = len(self.joint_names)
        if q.ndim not in (1, 2) or q.shape[-1] != j:
            raise ValueError(f"q has shape {q.shape}, expected ({j},) or (N, {j}) for joints "
                             f"{list(self.joint_names)}")
        batch = np.atleast_2d(q)
        out = np.empty((len(batch), 3))
        data, model, qadr, site = self._data, self.model, self._qadr, self._site
        for n, qn in enumerate(batch):
            data.qpos[qadr] = qn
            mujoco.mj_kinematics(model, data)
            out[n] = data.site_xpos[site]
        return out[0] if q.ndim == 1 else out
