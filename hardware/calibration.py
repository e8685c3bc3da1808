"""Per-robot calibration: servo ticks <-> joint radians, directions, ranges, in a JSON file.

For joint ``j``: ``q = direction * (ticks - zero) * 2 pi / ticks_per_turn`` (rad), where
``zero`` is the reading in the arm's zero pose (the pose where every joint of the MuJoCo twin
reads 0) and ``direction`` is +1 where the servo counts up as the joint turns positive.
``min``/``max`` are the ticks at the ends of the range a person moved the joint through;
they become the joint limits and the servos' own position-limit registers.

:func:`walk_through` is the interactive procedure behind ``mbpo-arm calibrate``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np

VERSION = 1


@dataclass(frozen=True)
class JointCalibration:
    """One joint: servo ``id``, ``zero`` ticks, ``direction`` (+1/-1), range ``min``..``max``
    in raw ticks."""

    id: int
    zero: int
    direction: int
    min: int
    max: int

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"direction must be 1 or -1, got {self.direction}")
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max}) ticks")


@dataclass(frozen=True)
class Calibration:
    """The calibration of one arm: ``joints`` in command order."""

    protocol: str
    joints: dict[str, JointCalibration]
    ticks_per_turn: int = 4096

    def _arrays(self, names: Sequence[str]) -> tuple[np.ndarray, ...]:
        missing = [n for n in names if n not in self.joints]
        if missing:
            raise ValueError(f"calibration has no joints {missing}; it has "
                             f"{list(self.joints)}: run `mbpo-arm calibrate` for this arm")
        rows = [self.joints[n] for n in names]
        return tuple(np.array([getattr(r, k) for r in rows], dtype=np.float64)
                     for k in ("zero", "direction", "min", "max"))

    def to_radians(self, ticks: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """``[J]`` ticks -> ``[J]`` rad for joints ``names``."""
        zero, direction, _, _ = self._arrays(names)
        return direction * (np.asarray(ticks, dtype=np.float64) - zero) * self.rad_per_tick

    def to_ticks(self, position: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """``[J]`` rad -> ``[J]`` whole ticks (int64), rounded to the nearest."""
        zero, direction, _, _ = self._arrays(names)
        ticks = zero + direction * np.asarray(position, dtype=np.float64) / self.rad_per_tick
        return np.rint(ticks).astype(np.int64)

    def range_radians(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` ``[J]`` rad of the calibrated ranges."""
        zero, direction, lo, hi = self._arrays(names)
        a, b = direction * (lo - zero), direction * (hi - zero)
        return np.minimum(a, b) * self.rad_per_tick, np.maximum(a, b) * self.rad_per_tick

    @property
    def rad_per_tick(self) -> float:
        return 2 * math.pi / self.ticks_per_turn

    # ---------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> None:
        """Write the JSON file crash-safe (temporary file, fsync, rename)."""
        data = {"version": VERSION, "protocol": self.protocol,
                "ticks_per_turn": self.ticks_per_turn,
                "joints": {n: asdict(j) for n, j in self.joints.items()}}
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a file written by :meth:`save`; one-line errors name the file and the fix."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"calibration file {str(path)!r} not found; run `mbpo-arm "
                                    "calibrate` first, or set backend.calibration=<file>")
        try:
            data = json.loads(path.read_text())
            joints = {str(n): JointCalibration(**{k: int(v) for k, v in j.items()})
                      for n, j in data["joints"].items()}
            return cls(str(data["protocol"]), joints, int(data.get("ticks_per_turn", 4096)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"calibration file {str(path)!r} is not valid ({err}); run "
                             "`mbpo-arm calibrate` again") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: temporary file in the same directory,
    fsync, ``os.replace`` (the same recipe as ``agent/io.py``, which hardware/ may not
    import)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------- the walk-through
MIN_MOVE_TICKS = 30  # about 2.6 degrees: less is taken for "did not move"
WRAP_JUMP = 2048  # ticks between two samples 20 ms apart: only an encoder wrap jumps this far


def walk_through(read_ticks: Callable[[], np.ndarray], names: Sequence[str],
                 ids: Sequence[int], protocol: str, stdin: IO[str], stdout: IO[str],
                 zero_pose: str, period: float = 0.02) -> Calibration:
    """Ask a person to move the (limp) arm and build its :class:`Calibration`.

    Args:
        read_ticks: returns the ``[J]`` present positions (raw ticks) of the servos.
        names, ids: the joints and their servo ids, in command order.
        stdin, stdout: the terminal (any text streams; ``stdin`` needs a ``fileno`` so that
            the ranges are sampled while waiting for Enter).
        zero_pose: words describing the zero pose of this arm.
        period: seconds between samples while recording the ranges.

    Raises:
        RuntimeError: a joint did not move when asked to (three tries), or the input ended.
    """
    def say(text: str) -> None:
        print(text, file=stdout, flush=True)

    def enter(prompt: str) -> None:
        say(prompt + " Then press Enter.")
        if stdin.readline() == "":
            raise RuntimeError("calibration stopped: the input ended before it was done")

    enter(f"Torque is off. Move the arm to its zero pose: {zero_pose}.")
    zero = np.asarray(read_ticks(), dtype=np.int64)
    directions = []
    for k, name in enumerate(names):
        for _ in range(3):
            enter(f"Turn {name} (servo {ids[k]}) a little in its positive direction and hold it.")
            delta = int(read_ticks()[k] - zero[k])
            if abs(delta) >= MIN_MOVE_TICKS:
                directions.append(1 if delta > 0 else -1)
                break
            say(f"{name} moved {delta} ticks; move it further (at least {MIN_MOVE_TICKS}).")
        else:
            raise RuntimeError(f"calibration stopped: {name} (servo {ids[k]}) did not move; "
                               "check that it is powered and free to turn")
    say("Move every joint slowly through its whole range, to both ends, then press Enter.")
    low, high, last = zero.copy(), zero.copy(), zero.copy()
    while True:
        ticks = np.asarray(read_ticks(), dtype=np.int64)
        wrapped = np.flatnonzero(np.abs(ticks - last) > WRAP_JUMP)
        if wrapped.size:  # a jump of half a turn in one sample: the encoder passed 4095 -> 0
            name = names[int(wrapped[0])]
            raise RuntimeError(f"calibration stopped: {name} crossed its encoder's 0/4095 "
                               "point; mount its horn so that the joint's range stays on one "
                               "side of it, then calibrate again")
        last = ticks
        low, high = np.minimum(low, ticks), np.maximum(high, ticks)
        ready, _, _ = select.select([stdin], [], [], period)
        if ready:
            if stdin.readline() == "":
                raise RuntimeError("calibration stopped: the input ended before it was done")
            break
    joints = {}
    for k, name in enumerate(names):
        if high[k] - low[k] < MIN_MOVE_TICKS:
            raise RuntimeError(f"calibration stopped: {name} moved only {high[k] - low[k]} "
                               "ticks while recording the ranges; move each joint to both ends")
        joints[name] = JointCalibration(int(ids[k]), int(zero[k]), directions[k], int(low[k]),
                                        int(high[k]))
    calibration = Calibration(protocol, joints)
    lower, upper = calibration.range_radians(names)
    for name, lo, hi in zip(names, lower, upper, strict=True):
        say(f"  {name:16s} {lo:+.3f} .. {hi:+.3f} rad")
    return calibration
