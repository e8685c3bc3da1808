"""The arm's geometry for the shield's rules 5 and 6 (:class:`hardware.rules.ArmGeometry`).

Forward kinematics and the collision test run on a private ``MjData`` of the arm's MJCF:
``mj_kinematics`` then ``mj_collision``, no physics step, so a check never moves the twin
and works the same for real hardware. Contacts are kept between a moving link and static
geometry (the table, the fixed base) and between two moving links (self-collision); MuJoCo
already skips parent-child pairs and the model's ``<exclude>`` pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mujoco
import numpy as np

from mbpo_arm.hardware.shield_config import ShieldConfig
from mbpo_arm.sim.twin import check_joints, name_ids


class MujocoGeometry:
    """End-effector position and collision test of an arm model.

    Args:
        model_path: the MJCF (its table and links are what rule 6 checks).
        joint_names: the ``J`` joints of ``q``, in order; the others stay at the ``home``
            keyframe (or the model default).
        ee_site: the end-effector site.
        clearance: a link closer than this (m) to static geometry (the table) collides;
        self_clearance: two links closer than this collide (default ``clearance``). Geoms of
            a private copy of the model are grown (links by half of ``self_clearance``,
            static geoms by the rest of ``clearance``): not every collision function of
            MuJoCo honours ``geom_margin`` (box-cylinder reports only penetration).
        gravity_sag: also check the configuration a position servo settles at under gravity,
            ``q - g(q) / kp`` (``g`` the gravity torques from ``mj_rne`` at rest, ``kp`` the
            stiffness of the model's position actuator on each joint): an arm held out
            horizontally hangs below its command.

    Raises:
        FileNotFoundError, ValueError: the file is missing, does not load, or lacks a name.
    """

    def __init__(self, model_path: str | Path, joint_names: Sequence[str],
                 ee_site: str = "ee_site", clearance: float = 0.0,
                 self_clearance: float | None = None, gravity_sag: bool = False) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"shield model {str(path)!r} not found; set model: in the "
                                    "limits file to the arm's MJCF")
        try:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        except ValueError as err:
            raise ValueError(f"MuJoCo cannot load {str(path)!r}: {' '.join(str(err).split())}"
                             ) from err
        model = self.model
        self._static = model.body_weldid[model.geom_bodyid] == 0
        link = (clearance if self_clearance is None else self_clearance) / 2
        _grow(model, np.where(self._static, max(clearance - link, 0.0), link))
        # The midphase prunes pairs with bounding-volume trees built for the original sizes.
        model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_MIDPHASE)
        self.joint_names = tuple(joint_names)
        self._qadr = model.jnt_qposadr[check_joints(model, self.joint_names)]
        self._site = int(name_ids(model, mujoco.mjtObj.mjOBJ_SITE, [ee_site], "ee_site")[0])
        self._dof = model.jnt_dofadr[check_joints(model, self.joint_names)]
        self._compliance = _compliance(model, self._dof) if gravity_sag else None
        # The pairs rule 6 can report (two geoms, at least one on a moving link), numbered.
        moving, g = ~self._static, model.ngeom
        first, second = np.triu_indices(g, 1)
        keep = moving[first] | moving[second]
        first, second = first[keep], second[keep]
        self._pair_index = np.full((g, g), -1, dtype=np.int64)
        self._pair_index[first, second] = self._pair_index[second, first] = np.arange(len(first))
        self.pairs: tuple[tuple[str, str], ...] = tuple(
            (model.geom(int(a)).name or str(a), model.geom(int(b)).name or str(b))
            for a, b in zip(first, second, strict=True))
        self._data = mujoco.MjData(model)
        key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "home")
        if key >= 0:
            self._data.qpos[:] = model.key_qpos[key]

    @classmethod
    def from_limits(cls, config: ShieldConfig) -> MujocoGeometry:
        """The geometry a limits file names (``model``, ``ee_site``, the clearances)."""
        if config.model is None:
            raise ValueError(f"{config.source}: no model: to check the workspace and collisions")
        return cls(config.model, config.joint_names, config.ee_site, config.clearance,
                   config.self_clearance, config.gravity_sag)

    def ee_position(self, q: np.ndarray) -> np.ndarray:
        """``[3]`` end-effector position (m) at ``q`` ``[J]`` (rad)."""
        self._data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self._data)
        return self._data.site_xpos[self._site].copy()

    def contacts(self, q: np.ndarray) -> np.ndarray:
        """``[K, 2]`` geom pairs within the clearance at ``q`` that involve a moving link."""
        geoms, _ = self._contacts(q)
        return geoms

    def collides(self, q: np.ndarray) -> bool:
        """Whether the arm commanded to ``q`` ``[J]`` comes within the clearance of the table
        or itself (at ``q``, and where gravity sags it to with ``gravity_sag``)."""
        if len(self.contacts(q)) > 0:
            return True
        return self._compliance is not None and len(self.contacts(self.sagged(q))) > 0

    def penetration(self, q: np.ndarray) -> float:
        """How deep (m) the arm commanded to ``q`` ``[J]`` is inside the clearance: the
        deepest of its contacts (at ``q``, and where gravity sags it to); 0 exactly when
        :meth:`collides` is false."""
        return float(self.pair_depths(q).max(initial=0.0))

    def pair_depths(self, q: np.ndarray) -> np.ndarray:
        """``[P]`` how deep (m) each pair of :attr:`pairs` is inside the clearance at ``q``
        ``[J]`` (the deepest of its contacts, at ``q`` and where gravity sags it to); 0 for a
        pair not in contact. Its maximum is :meth:`penetration`. The shield lets an arm that
        is already inside move only where no pair comes in or goes deeper."""
        out = np.zeros(len(self.pairs))
        self._deepest(q, out)
        if self._compliance is not None:
            self._deepest(self.sagged(q), out)
        return out

    def _deepest(self, q: np.ndarray, out: np.ndarray) -> None:
        """Raise ``out[p]`` ``[P]`` to the depth of pair ``p``'s contacts at ``q``."""
        geoms, depth = self._contacts(q)
        if len(depth):
            np.maximum.at(out, self._pair_index[geoms[:, 0], geoms[:, 1]], depth)

    def _contacts(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Geom pairs ``[K, 2]`` within the clearance at ``q`` that involve a moving link,
        and how far inside it each is ``[K]`` (m; MuJoCo's ``includemargin - dist``)."""
        data = self._data
        data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, data)
        mujoco.mj_collision(self.model, data)
        n = data.ncon
        if n == 0:
            return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
        geoms = data.contact.geom[:n]
        static = self._static[geoms]
        keep = ~(static[:, 0] & static[:, 1])
        depth = data.contact.includemargin[:n] - data.contact.dist[:n]
        return geoms[keep], np.maximum(depth[keep], 0.0)

    def sagged(self, q: np.ndarray) -> np.ndarray:
        """``[J]`` where position servos commanded to ``q`` settle under gravity (rad)."""
        data = self._data
        data.qpos[self._qadr] = q
        data.qvel[:] = 0.0
        mujoco.mj_kinematics(self.model, data)
        mujoco.mj_comPos(self.model, data)
        bias = np.zeros(self.model.nv)
        mujoco.mj_rne(self.model, data, 0, bias)  # gravity torques at rest
        return q - bias[self._dof] * self._compliance


def _grow(model: mujoco.MjModel, grow: np.ndarray) -> None:
    """Grow geom ``g`` of ``model`` by ``grow[g]`` (m) on all sides, with its bounding
    volumes."""
    t = mujoco.mjtGeom
    for g in range(model.ngeom):
        by = float(grow[g])
        kind = int(model.geom_type[g])
        if kind in (t.mjGEOM_BOX.value, t.mjGEOM_ELLIPSOID.value):
            model.geom_size[g, :3] += by
        elif kind == t.mjGEOM_CYLINDER.value:
            model.geom_size[g, :2] += by
        elif kind in (t.mjGEOM_SPHERE.value, t.mjGEOM_CAPSULE.value):
            model.geom_size[g, 0] += by
        else:  # planes, meshes, height fields: margin instead
            model.geom_margin[g] += by
            continue
        model.geom_aabb[g, 3:] += by
        model.geom_rbound[g] += np.sqrt(3) * by


def _compliance(model: mujoco.MjModel, dofs: np.ndarray) -> np.ndarray:
    """``[J]`` 1 / kp of the position actuator on each joint's dof (0 where none drives it)."""
    out = np.zeros(len(dofs))
    for a in range(model.nu):
        if int(model.actuator_trntype[a]) != int(mujoco.mjtTrn.mjTRN_JOINT):
            continue
        dof = model.jnt_dofadr[model.actuator_trnid[a, 0]]
        kp = float(model.actuator_gainprm[a, 0])
        hit = np.flatnonzero(dofs == dof)
        if hit.size and kp > 0:
            out[hit] = 1.0 / kp
    return out
