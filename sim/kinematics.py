"""Forward kinematics of the arm from its MJCF, for any backend (the twin or real hardware).

Only ``mujoco.mj_kinematics`` runs, on a private ``MjData``: no physics step, no contacts,
so it is cheap and has no effect on any simulation. :class:`TorchChain` is the same kinematic
chain as batched torch maths, for model rollouts that need the end effector of ``[B]``
predicted configurations at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np
import torch

from mbpo_arm.hardware.config import JOINTS
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.twin import check_joints, load_model, name_ids


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

    def torch_chain(self, joint_names: Sequence[str]) -> TorchChain:
        """The end effector as a batched torch function of the ``joint_names`` joints (a subset
        of this kinematics' joints, any order); the others stay where ``ee_position`` holds
        them (their ``home`` values)."""
        return TorchChain(self.model, joint_names, self.ee_site, self._data.qpos.copy())


def _mat(quat: np.ndarray) -> np.ndarray:
    out = np.empty(9)
    mujoco.mju_quat2Mat(out, np.asarray(quat, dtype=np.float64))
    return out.reshape(3, 3)


class TorchChain:
    """Forward kinematics from the world to a site as batched torch maths.

    Walks the bodies from the world to the site's body as MuJoCo's ``mj_kinematics`` does: each
    body's fixed offset (``body_pos``, ``body_quat``), then each of its hinge or slide joints
    about its axis through its anchor by ``qpos - qpos0`` (MuJoCo's joint reference).

    Args:
        model: the arm's model (read once; not kept).
        joint_names: the ``J`` joints the input ``q`` lists; other joints are fixed at ``qpos``.
        site: the site whose world position is returned.
        qpos: ``[nq]`` positions of the joints not in ``joint_names``.
    Raises:
        ValueError: a joint on the way to the site is neither hinge nor slide.
    """

    def __init__(self, model: mujoco.MjModel, joint_names: Sequence[str], site: str,
                 qpos: np.ndarray) -> None:
        ids = check_joints(model, joint_names)
        column = {int(j): k for k, j in enumerate(ids)}
        site_id = int(name_ids(model, mujoco.mjtObj.mjOBJ_SITE, [site], "site")[0])
        bodies, b = [], int(model.site_bodyid[site_id])
        while b > 0:
            bodies.append(b)
            b = int(model.body_parentid[b])
        hinge, slide = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)
        # One entry per body: (offset pos [3], offset rot [3, 3], joints on it), root first.
        # Each joint: (is_hinge, axis [3], anchor [3], column of q or None, fixed angle,
        # qpos0, the axis's cross-product matrix [3, 3] for Rodrigues' formula).
        self._links = []
        for b in reversed(bodies):
            joints = []
            for j in range(model.body_jntadr[b], model.body_jntadr[b] + model.body_jntnum[b]):
                kind, adr = int(model.jnt_type[j]), int(model.jnt_qposadr[j])
                if kind not in (hinge, slide):
                    name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
                    raise ValueError(f"joint {name!r} on the way to site {site!r} is neither "
                                     "hinge nor slide; TorchChain handles 1-DoF joints only")
                joints.append((kind == hinge, model.jnt_axis[j].copy(), model.jnt_pos[j].copy(),
                               column.get(j), float(qpos[adr] - model.qpos0[adr]),
                               float(model.qpos0[adr]), _skew(model.jnt_axis[j])))
            self._links.append((model.body_pos[b].copy(), _mat(model.body_quat[b]), joints))
        self._site = (model.site_pos[site_id].copy(), _mat(model.site_quat[site_id]))
        self._cache: dict[tuple[torch.device, torch.dtype], tuple] = {}

    def _constants(self, like: torch.Tensor) -> tuple:
        key = (like.device, like.dtype)
        if key not in self._cache:
            def t(x: np.ndarray) -> torch.Tensor:
                return torch.as_tensor(x, dtype=like.dtype, device=like.device)
            links = [(t(p), t(r), [(h, t(a), t(c), col, fixed, ref, t(k), t(k @ k))
                                   for h, a, c, col, fixed, ref, k in joints])
                     for p, r, joints in self._links]
            self._cache[key] = (links, t(self._site[0]))
        return self._cache[key]

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        """``[..., J]`` joint positions (rad or m) -> ``[..., 3]`` world position of the site."""
        links, site_pos = self._constants(q)
        batch = q.shape[:-1]
        pos = q.new_zeros((*batch, 3))
        rot = torch.eye(3, dtype=q.dtype, device=q.device).expand(*batch, 3, 3)
        for offset, offset_rot, joints in links:
            pos = pos + (rot @ offset.unsqueeze(-1)).squeeze(-1)
            rot = rot @ offset_rot
            for is_hinge, axis, anchor, col, fixed, ref, k, kk in joints:
                value = q[..., col] - ref if col is not None else q.new_full(batch, fixed)
                world_anchor = pos + (rot @ anchor.unsqueeze(-1)).squeeze(-1)
                if is_hinge:
                    rot = rot @ _axis_rotation(k, kk, value)
                    pos = world_anchor - (rot @ anchor.unsqueeze(-1)).squeeze(-1)
                else:
                    pos = pos + value.unsqueeze(-1) * (rot @ axis.unsqueeze(-1)).squeeze(-1)
        return pos + (rot @ site_pos.unsqueeze(-1)).squeeze(-1)


def _skew(axis: np.ndarray) -> np.ndarray:
    """``[3, 3]`` cross-product matrix ``K`` of ``axis`` (``K v = axis x v``)."""
    x, y, z = axis
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def _axis_rotation(k: torch.Tensor, kk: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: ``[..., 3, 3]`` rotations by ``angle`` ``[...]`` about the unit axis
    whose cross-product matrix is ``k`` (``kk = k @ k``, both precomputed)."""
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    return torch.eye(3, dtype=k.dtype, device=k.device) + s * k + (1 - c) * kk
