"""The MuJoCo twin: an SO-101-class arm behind the :class:`hardware.robot.Backend` interface.

The twin plays the part of the real arm: position commands go to servo-like ``position``
actuators (clipped to the joint limits, as the servo firmware does), and each ``step()``
integrates the physics for one control period. Passive, like every backend: the control loop
(:class:`hardware.loop.ControlLoop`) steps it on simulated time, or paces it by the wall
clock. Everything is deterministic: the same sequence
of calls gives bit-identical states.

Units: radians, radians per second, seconds. Arrays are float64 ``[J]`` in the order of
``TwinConfig.joint_names``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from mbpo_arm.hardware.robot import JointLimits, RobotState, check_command
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.gl import DEFAULT, GLBackendError, backend_problem, gl_backend

DEFAULT_VELOCITY_LIMIT = 4.7
# Custom numeric ``velocity_limit:<joint>`` in the MJCF overrides the default per joint.
VELOCITY_NUMERIC = "velocity_limit:"


def twin_config_of(config: Any) -> TwinConfig:
    """The twin of a hardware arm's backend config (serial, ROS 2): its MJCF (``model_path``;
    null: the shipped arm), joints, end-effector site, and actuators (``actuator_names`` where
    the config has them, else ``<joint>_act``)."""
    actuators = getattr(config, "actuator_names", None) or tuple(
        f"{j}_act" for j in config.joint_names)
    return TwinConfig(model_path=config.model_path, joint_names=config.joint_names,
                      actuator_names=actuators, ee_site=config.ee_site)


@dataclass(frozen=True)
class Marker:
    """A sphere drawn into a rendered frame only (e.g. the reach target).

    ``pos`` ``[3]`` world position (m); ``radius`` (m); ``rgba`` in ``[0, 1]``; ``glow``: the
    emission, 1 for a flat colour that lighting and shadow do not change (easy to find in a
    frame), 0 for a shaded sphere.
    """

    pos: Sequence[float]
    radius: float
    rgba: tuple[float, float, float, float]
    glow: float = 1.0


def add_marker(scene: mujoco.MjvScene, marker: Marker) -> None:
    """Append ``marker`` to ``scene`` after ``update_scene`` (RuntimeError when it is full)."""
    if scene.ngeom >= scene.maxgeom:
        raise RuntimeError(f"the scene holds {scene.maxgeom} geoms; no room for a marker")
    geom = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(geom, int(mujoco.mjtGeom.mjGEOM_SPHERE), np.full(3, marker.radius),
                        np.asarray(marker.pos, dtype=np.float64), np.eye(3).ravel(),
                        np.asarray(marker.rgba, dtype=np.float32))
    geom.emission = marker.glow
    geom.castshadow = 0
    geom.category = int(mujoco.mjtCatBit.mjCAT_DECOR)
    scene.ngeom += 1


def _new_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    """An offscreen renderer; a backend that cannot make a GL context is one clear line."""
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except ValueError:  # a frame larger than the model's offscreen buffer: mujoco's message
        raise
    except Exception as err:  # mujoco raises AttributeError, RuntimeError, FatalError here
        backend = gl_backend() or "(unset)"
        hint = backend_problem(backend) or f"try MUJOCO_GL={DEFAULT} (headless) or osmesa"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise GLBackendError(f"cannot render with MUJOCO_GL={backend}: {first}; {hint}") from err


def _names(model: mujoco.MjModel, obj: mujoco.mjtObj, count: int) -> list[str]:
    return [mujoco.mj_id2name(model, obj, i) or f"<unnamed {i}>" for i in range(count)]


def name_ids(model: mujoco.MjModel, obj: mujoco.mjtObj, names: Sequence[str],
             what: str) -> np.ndarray:
    """Ids ``[len(names)]`` of the named ``obj`` elements (``what`` names them in errors).

    Raises:
        ValueError: a name is not in the model; the message lists the names it has.
    """
    ids = np.array([mujoco.mj_name2id(model, obj, n) for n in names], dtype=np.int64)
    if (ids < 0).any():
        count = {mujoco.mjtObj.mjOBJ_JOINT: model.njnt, mujoco.mjtObj.mjOBJ_ACTUATOR: model.nu,
                 mujoco.mjtObj.mjOBJ_SITE: model.nsite}[obj]
        missing = [n for n, i in zip(names, ids, strict=True) if i < 0]
        raise ValueError(f"{what} {missing} not in the MuJoCo model; it has "
                         f"{_names(model, obj, count)}")
    return ids


def check_joints(model: mujoco.MjModel, joint_names: Sequence[str]) -> np.ndarray:
    """Ids ``[J]`` of 1-DoF (hinge or slide) joints; ValueError names any other."""
    ids = name_ids(model, mujoco.mjtObj.mjOBJ_JOINT, joint_names, "backend.joint_names")
    one_dof = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    bad = [n for n, i in zip(joint_names, ids, strict=True)
           if int(model.jnt_type[i]) not in one_dof]
    if bad:
        raise ValueError(f"backend.joint_names {bad} are not hinge or slide joints; the twin "
                         "drives 1-DoF joints only")
    return ids


def load_model(cfg: TwinConfig | None = None) -> mujoco.MjModel:
    """Load and check the MJCF of ``cfg`` (the shipped arm by default).

    Raises:
        FileNotFoundError: the model file does not exist.
        ValueError: the file does not compile, or a configured joint, actuator or site is
            not in it, or an actuator does not drive its paired joint.
    """
    cfg = cfg if cfg is not None else TwinConfig()
    path = cfg.path
    if not path.is_file():
        raise FileNotFoundError(f"MuJoCo model file {str(path)!r} not found (resolved to "
                                f"{str(path.resolve())!r}); set backend.model_path=<path to an "
                                "MJCF file>, or backend.model_path=null for the shipped arm")
    try:
        model = mujoco.MjModel.from_xml_path(str(path))
    except ValueError as err:
        message = " ".join(str(err).split())
        raise ValueError(f"MuJoCo cannot load {str(path)!r}: {message}") from err
    if cfg.timestep is not None:
        model.opt.timestep = cfg.timestep
    joints = check_joints(model, cfg.joint_names)
    actuators = name_ids(model, mujoco.mjtObj.mjOBJ_ACTUATOR, cfg.actuator_names,
                         "backend.actuator_names")
    name_ids(model, mujoco.mjtObj.mjOBJ_SITE, [cfg.ee_site], "backend.ee_site")
    for act, joint, act_name, joint_name in zip(actuators, joints, cfg.actuator_names,
                                                cfg.joint_names, strict=True):
        drives_joint = int(model.actuator_trntype[act]) == int(mujoco.mjtTrn.mjTRN_JOINT)
        if not drives_joint or model.actuator_trnid[act, 0] != joint:
            raise ValueError(f"actuator {act_name!r} does not drive joint {joint_name!r}; "
                             "order backend.actuator_names like backend.joint_names")
    return model


def model_limits(model: mujoco.MjModel, joint_names: Sequence[str],
                 actuator_names: Sequence[str]) -> JointLimits:
    """Joint limits ``[J]`` from the model: range (within the actuator ctrlrange), velocity
    (custom numeric ``velocity_limit:<joint>``, else the STS3215 default) and effort (the
    actuator forcerange, else the joint's actuatorfrcrange, else unlimited)."""
    joints = check_joints(model, joint_names)
    acts = name_ids(model, mujoco.mjtObj.mjOBJ_ACTUATOR, actuator_names, "actuator_names")
    lower = np.where(model.jnt_limited[joints], model.jnt_range[joints, 0], -np.inf)
    upper = np.where(model.jnt_limited[joints], model.jnt_range[joints, 1], np.inf)
    ctrl = model.actuator_ctrllimited[acts].astype(bool)
    lower = np.where(ctrl, np.maximum(lower, model.actuator_ctrlrange[acts, 0]), lower)
    upper = np.where(ctrl, np.minimum(upper, model.actuator_ctrlrange[acts, 1]), upper)
    velocity = np.full(len(joints), DEFAULT_VELOCITY_LIMIT)
    for k, name in enumerate(joint_names):
        nid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_NUMERIC, VELOCITY_NUMERIC + name)
        if nid >= 0:
            velocity[k] = model.numeric_data[model.numeric_adr[nid]]
    force = model.actuator_forcelimited[acts].astype(bool)
    jnt_force = model.jnt_actfrclimited[joints].astype(bool)
    effort = np.where(force, np.abs(model.actuator_forcerange[acts]).max(axis=1),
                      np.where(jnt_force, np.abs(model.jnt_actfrcrange[joints]).max(axis=1),
                               np.inf))
    return JointLimits(lower=lower.astype(np.float64), upper=upper.astype(np.float64),
                       velocity=velocity, effort=effort.astype(np.float64))


class TwinRobot:
    """The MuJoCo twin as a :class:`hardware.robot.Backend` and
    :class:`~hardware.robot.Simulated` (stepped by the control loop).

    The model is loaded (and checked) in the constructor so that a bad config fails at
    start-up. ``step()`` integrates ``n_substeps`` physics steps, then runs ``mj_forward``
    so that everything derived from the state (site positions, contacts) matches it.

    The timestep is adjusted to ``control_period / n_substeps`` (``n_substeps`` the nearest
    whole number of model steps per period), so stamps advance by exactly one control period.

    Attributes:
        config: the :class:`TwinConfig`.
        model, data: the MuJoCo model and its simulation state.
        joint_names: ``[J]`` driven joints; ``limits``: their :class:`JointLimits`.
        control_period: seconds per ``step()``; ``n_substeps``: physics steps per period.
    """

    def __init__(self, config: TwinConfig | None = None, control_hz: float = 20.0) -> None:
        self.config = config if config is not None else TwinConfig()
        if not control_hz > 0:
            raise ValueError(f"runtime.control_hz must be > 0, got {control_hz}")
        self.model = load_model(self.config)
        self.data = mujoco.MjData(self.model)
        self.joint_names = self.config.joint_names
        self.control_period = 1.0 / float(control_hz)
        if self.config.timestep is not None and self.config.timestep > self.control_period:
            raise ValueError(f"backend.timestep={self.config.timestep} is longer than the "
                             f"control period 1/{control_hz:g} s; lower it or "
                             "runtime.control_hz")
        self.n_substeps = max(1, round(self.control_period / self.model.opt.timestep))
        self.model.opt.timestep = self.control_period / self.n_substeps
        self.limits = model_limits(self.model, self.joint_names, self.config.actuator_names)
        joints = check_joints(self.model, self.joint_names)
        self._qadr = self.model.jnt_qposadr[joints]
        self._vadr = self.model.jnt_dofadr[joints]
        self._act = name_ids(self.model, mujoco.mjtObj.mjOBJ_ACTUATOR,
                             self.config.actuator_names, "actuator_names")
        self._site = int(name_ids(self.model, mujoco.mjtObj.mjOBJ_SITE, [self.config.ee_site],
                                  "ee_site")[0])
        # Geoms welded to the world (table, fixed base) versus geoms on moving links.
        self._static_geom = self.model.body_weldid[self.model.geom_bodyid] == 0
        self._key = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_KEY, "home")
        self._gains = (self.model.actuator_gainprm.copy(), self.model.actuator_biasprm.copy())
        self._renderer: mujoco.Renderer | None = None
        self._ticks = 0
        self.connected = False
        self.place(self.home_position)

    # ---------------------------------------------------------------- Backend interface
    def connect(self) -> None:
        """Nothing to open for the twin (the model loads in the constructor). Idempotent."""
        self.connected = True

    def close(self) -> None:
        """Release the offscreen renderer, if any. Idempotent."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.connected = False

    def read(self) -> RobotState:
        """The joint positions and velocities ``[J]``, stamped with the simulated time."""
        return RobotState(position=self.data.qpos[self._qadr].copy(),
                          velocity=self.data.qvel[self._vadr].copy(),
                          stamp=float(self.data.time))

    def write(self, position: np.ndarray) -> np.ndarray:
        """Set the servo targets to ``[J]`` ``position`` clipped to the limits; return the
        ``[J]`` command actually sent. Non-finite values are refused (ValueError)."""
        command = check_command(position, self.joint_names)
        sent = self.limits.clip(command)
        self.data.ctrl[self._act] = sent
        return sent.copy()

    def step(self) -> None:
        """Integrate one control period."""
        for _ in range(self.n_substeps):
            mujoco.mj_step(self.model, self.data)
        self._ticks += 1
        # Set the clock from the tick count, so that it does not drift by rounding.
        self.data.time = self._ticks * self.control_period
        mujoco.mj_forward(self.model, self.data)

    def place(self, position: np.ndarray) -> RobotState:
        """Place the arm at ``[J]`` ``position`` (clipped) at rest, servo targets there, time 0.
        Joints not driven take their ``home`` keyframe value (or the model default).
        """
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (len(self.joint_names),):
            raise ValueError(f"reset position has shape {position.shape}, expected "
                             f"({len(self.joint_names)},) for joints {list(self.joint_names)}")
        if self._key >= 0:
            mujoco.mj_resetDataKeyframe(self.model, self.data, self._key)
        else:
            mujoco.mj_resetData(self.model, self.data)
        self.enable_torque()
        sent = self.limits.clip(position)
        self.data.qpos[self._qadr] = sent
        self.data.qvel[:] = 0.0
        self.data.ctrl[self._act] = sent
        self.data.time = 0.0
        self._ticks = 0
        mujoco.mj_forward(self.model, self.data)
        return self.read()

    # --------------------------------------------------------------------------- extras
    def clock(self) -> float:
        """Now on the clock of the state stamps: the simulated time (s)."""
        return float(self.data.time)

    def release_torque(self) -> None:
        """The servos go limp (zero stiffness and damping), as a torque-off on the bus does;
        :meth:`enable_torque` or :meth:`place` brings them back."""
        self.model.actuator_gainprm[self._act] = 0.0
        self.model.actuator_biasprm[self._act] = 0.0

    def enable_torque(self) -> None:
        """The servos hold their targets again (the model's own gains)."""
        self.model.actuator_gainprm[self._act] = self._gains[0][self._act]
        self.model.actuator_biasprm[self._act] = self._gains[1][self._act]

    @property
    def home_position(self) -> np.ndarray:
        """``[J]`` the ``home`` keyframe's joint positions (the model default if none)."""
        qpos = self.model.key_qpos[self._key] if self._key >= 0 else self.model.qpos0
        return self.limits.clip(np.array(qpos[self._qadr], dtype=np.float64))

    @property
    def ee_position(self) -> np.ndarray:
        """``[3]`` world position of the end-effector site at the current state."""
        return self.data.site_xpos[self._site].copy()

    def contacts_with_table(self) -> int:
        """Number of contacts between moving links and static geometry (table, fixed base)."""
        n = self.data.ncon
        if n == 0:
            return 0
        geoms = self.data.contact.geom[:n]
        active = self.data.contact.exclude[:n] == 0
        static = self._static_geom[geoms]
        return int(np.count_nonzero(active & (static[:, 0] != static[:, 1])))

    def render(self, width: int = 480, height: int = 360, camera: str = "front",
               markers: Sequence[Marker] = ()) -> np.ndarray:
        """An offscreen image ``[height, width, 3]`` uint8 from ``camera``, with ``markers``
        drawn into the scene (visual only: no physics, no collisions).

        Needs an OpenGL backend chosen before mujoco is imported (``MUJOCO_GL=egl`` or
        ``osmesa`` on a headless machine; see :mod:`sim.gl`).

        Raises:
            ValueError: ``camera`` is not in the model (the message lists those it has).
            sim.gl.GLBackendError: no OpenGL context can be made (one line saying why).
        """
        cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam < 0:
            raise ValueError(f"camera {camera!r} not in the model; it has "
                             f"{_names(self.model, mujoco.mjtObj.mjOBJ_CAMERA, self.model.ncam)}")
        r = self._renderer
        if r is None or (r.width, r.height) != (width, height):
            if r is not None:
                r.close()
            self._renderer = None
            self._renderer = r = _new_renderer(self.model, width, height)
        r.update_scene(self.data, camera=cam)
        for marker in markers:
            add_marker(r.scene, marker)
        return r.render()
