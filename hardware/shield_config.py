"""The shield's settings: the per-robot limits file (:class:`ShieldConfig`) and the run's
``shield:`` section (:class:`ShieldSettings`).

A limits file (``configs/limits/so101.yaml`` for the shipped arm) holds what belongs to the
robot: hardware position limits and the margin kept inside them, the largest jump from the
measured position, velocity, acceleration and (optional) jerk limits, the end-effector
workspace box, the MJCF model used for kinematics and collisions, the home pose and the speed
of slow moves. Scalars apply to every joint; lists give one value per joint.

Units: rad, rad/s, rad/s^2, rad/s^3, m, s.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_arm.hardware.robot import JointLimits


@dataclass
class Workspace:
    """Rule 5: the end effector stays in the box ``[lower, upper]`` (world frame, m) and at
    least ``min_height`` above the table (z = 0)."""

    lower: tuple[float, float, float] = (-np.inf, -np.inf, -np.inf)
    upper: tuple[float, float, float] = (np.inf, np.inf, np.inf)
    min_height: float = 0.0

    def contains(self, point: np.ndarray) -> bool:
        """Whether the ``[3]`` point (m) is inside."""
        return bool(np.all(point >= self.lower) and np.all(point <= self.upper)
                    and point[2] >= self.min_height)

    def excess(self, point: np.ndarray) -> float:
        """How far (m, largest per axis) the ``[3]`` point is outside; 0 when inside."""
        below = np.maximum(np.asarray(self.lower, dtype=np.float64) - point, 0.0)
        above = np.maximum(point - np.asarray(self.upper, dtype=np.float64), 0.0)
        return float(max(below.max(), above.max(), self.min_height - point[2], 0.0))


@dataclass
class ShieldConfig:
    """A robot's limits, each ``[J]`` in ``joint_names`` order (see the module docstring).

    ``lower``/``upper`` are the hardware limits; commands stay within ``lower + margin`` and
    ``upper - margin``. ``None`` switches a rule off (``acceleration``, ``jerk``,
    ``workspace``, ``model``).
    """

    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    margin: np.ndarray
    max_step: np.ndarray  # largest |command - measured position| (rad)
    velocity: np.ndarray  # largest command speed (rad/s)
    acceleration: np.ndarray | None = None  # rad/s^2
    jerk: np.ndarray | None = None  # rad/s^3
    workspace: Workspace | None = None
    model: Path | None = None  # MJCF with the arm and the table (rules 5 and 6)
    ee_site: str = "ee_site"
    clearance: float = 0.01  # rule 6: closest allowed distance to the table (m)
    self_clearance: float = 0.005  # rule 6: closest allowed distance between links (m)
    gravity_sag: bool = True  # rule 6 also checks where gravity sags the commanded pose
    collision_points: int = 2  # configurations checked along each step (rules 5 and 6)
    home: np.ndarray | None = None  # the home pose (must be inside every limit)
    home_speed: float = 0.5  # joint speed of slow moves, e.g. the reset to home (rad/s)
    source: str = "<defaults>"  # where it was read from, for error messages

    def __post_init__(self) -> None:
        self.joint_names = tuple(str(j) for j in self.joint_names)
        j = len(self.joint_names)
        for name in ("lower", "upper", "margin", "max_step", "velocity", "acceleration", "jerk",
                     "home"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _per_joint(value, j, name, self.source))
        self.check()

    # ------------------------------------------------------------------------ checks
    def check(self) -> None:
        """Raise ValueError (one line, naming the file and the key) on inconsistent limits."""
        src, names = self.source, self.joint_names

        def bad(key: str, mask: np.ndarray, why: str) -> None:
            if np.any(mask):
                joints = [names[i] for i in np.flatnonzero(mask)]
                raise ValueError(f"{src}: {key} {why} for joints {joints}")

        bad("lower/upper", ~(self.lower < self.upper), "has lower >= upper")
        bad("margin", (self.margin < 0) | (2 * self.margin >= self.upper - self.lower),
            "must be >= 0 and leave part of the range")
        for key in ("max_step", "velocity", "acceleration", "jerk"):
            value = getattr(self, key)
            if value is not None:
                bad(key, ~(value > 0), "must be > 0")
        bad("max_step", self.max_step < self.margin,
            "must be >= margin (else a command cannot reach the limits from the hardware stop)")
        if not self.home_speed > 0:
            raise ValueError(f"{src}: home_speed must be > 0, got {self.home_speed}")
        if min(self.clearance, self.self_clearance) < 0 or self.collision_points < 1:
            raise ValueError(f"{src}: clearance and self_clearance must be >= 0, "
                             "collision_points >= 1")
        ws = self.workspace
        if ws is not None and not (np.all(np.less(ws.lower, ws.upper))
                                   and ws.min_height < ws.upper[2]):
            raise ValueError(f"{src}: workspace lower {list(ws.lower)} must be below upper "
                             f"{list(ws.upper)} (and min_height below upper z)")
        if self.home is not None:
            lo, hi = self.lower + self.margin, self.upper - self.margin
            bad("home", (self.home < lo) | (self.home > hi), "is outside lower/upper +- margin")

    def check_home(self, ee_position: np.ndarray | None, collides: bool) -> None:
        """Raise ValueError if the home pose's end effector ``[3]`` is outside the workspace
        or the home pose collides (rules 5 and 6 would refuse the robot's own home)."""
        if ee_position is not None and self.workspace is not None \
                and not self.workspace.contains(ee_position):
            raise ValueError(f"{self.source}: the workspace box {list(self.workspace.lower)} .. "
                             f"{list(self.workspace.upper)} (min_height "
                             f"{self.workspace.min_height}) excludes the home pose, whose end "
                             f"effector is at {np.round(ee_position, 3).tolist()}; widen it")
        if collides:
            raise ValueError(f"{self.source}: the home pose {self.home.tolist()} collides with "
                             f"the table or the arm (clearance {self.clearance} m)")

    def check_robot(self, joint_names: tuple[str, ...], limits: JointLimits) -> None:
        """The file must name the robot's joints in order, within its hardware limits."""
        if tuple(joint_names) != self.joint_names:
            raise ValueError(f"{self.source}: joint_names {list(self.joint_names)} do not match "
                             f"the backend's joints {list(joint_names)}; list them in order")
        lo, hi = self.lower + self.margin, self.upper - self.margin
        outside = (lo < limits.lower) | (hi > limits.upper)
        if np.any(outside):
            joints = [self.joint_names[i] for i in np.flatnonzero(outside)]
            raise ValueError(f"{self.source}: limits minus margin exceed the backend's hardware "
                             f"limits for joints {joints}; tighten lower/upper or the margin")

    # ----------------------------------------------------------------------- builders
    @classmethod
    def from_joint_limits(cls, joint_names: tuple[str, ...], limits: JointLimits,
                          **kwargs: Any) -> ShieldConfig:
        """Position and velocity limits of a (simulated) robot, no margin, no step limit."""
        kwargs.setdefault("source", "the backend's own limits")
        return cls(joint_names=joint_names, lower=limits.lower, upper=limits.upper,
                   margin=np.zeros(len(joint_names)), max_step=np.full(len(joint_names), np.inf),
                   velocity=limits.velocity, **kwargs)

    @classmethod
    def load(cls, path: str | Path) -> ShieldConfig:
        """Read a limits file; raise FileNotFoundError or a one-line ValueError naming it."""
        import yaml

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"shield limits file {str(path)!r} not found; set "
                                    "shield.limits_file=<name under configs/limits/ or a path>")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of limit names to values")
        allowed = {f for f in cls.__dataclass_fields__ if f != "source"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ValueError(f"{path}: {unknown[0]!r} is not a limits key; keys: "
                             f"{', '.join(sorted(allowed))}")
        missing = [k for k in ("joint_names", "lower", "upper", "velocity") if k not in raw]
        if missing:
            raise ValueError(f"{path}: missing {missing}; a limits file needs at least "
                             "joint_names, lower, upper and velocity")
        raw = dict(raw)
        raw.setdefault("margin", 0.0)
        raw.setdefault("max_step", np.inf)
        if raw.get("workspace") is not None:
            ws = dict(raw["workspace"])
            extra = sorted(set(ws) - {"lower", "upper", "min_height"})
            if extra:
                raise ValueError(f"{path}: workspace.{extra[0]} is not a key; keys: lower, "
                                 "upper, min_height")
            raw["workspace"] = Workspace(
                lower=tuple(float(v) for v in ws.get("lower", (-np.inf,) * 3)),
                upper=tuple(float(v) for v in ws.get("upper", (np.inf,) * 3)),
                min_height=float(ws.get("min_height", 0.0)))
        if raw.get("model") is not None:
            raw["model"] = model_path(str(raw["model"]), path.parent)
        return cls(**raw, source=str(path))


def _per_joint(value: Any, j: int, name: str, source: str) -> np.ndarray:
    """A scalar or a list of ``j`` numbers as a float64 ``[j]`` array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {name} must be a number or a list of numbers, got "
                         f"{value!r}") from None
    if arr.ndim == 0:
        arr = np.full(j, float(arr))
    if arr.shape != (j,):
        raise ValueError(f"{source}: {name} has {arr.size} values for {j} joints; give one per "
                         "joint or a single number")
    if np.isnan(arr).any():
        raise ValueError(f"{source}: {name} has NaN values")
    return arr


def model_path(name: str, relative_to: Path) -> Path:
    """The MJCF a limits file names: ``package://<package>/<file>`` inside an installed
    package (ROS's notation; the shipped files name the twin's model so), an absolute path, or
    a path relative to the limits file."""
    if name.startswith("package://"):
        package, _, rest = name.removeprefix("package://").partition("/")
        return Path(str(files(package) / rest))
    path = Path(name).expanduser()
    return path if path.is_absolute() else (relative_to / path).resolve()
