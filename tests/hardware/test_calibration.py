"""Calibration maths and its file: ticks <-> radians, directions, ranges, crash-safe writes."""

from __future__ import annotations

import io
import json
import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.hardware.calibration import Calibration, JointCalibration, walk_through

NAMES = ("a", "b")


def calibration() -> Calibration:
    return Calibration("feetech", {"a": JointCalibration(1, 2048, 1, 1000, 3000),
                                   "b": JointCalibration(2, 2100, -1, 1500, 2600)})


def test_ticks_and_radians_round_trip_with_directions() -> None:
    cal = calibration()
    np.testing.assert_allclose(cal.to_radians(np.array([2048 + 1024, 2100 + 1024]), NAMES),
                               [math.pi / 2, -math.pi / 2])
    q = np.array([0.3, -0.7])
    ticks = cal.to_ticks(q, NAMES)
    assert ticks.dtype == np.int64
    np.testing.assert_allclose(cal.to_radians(ticks, NAMES), q, atol=cal.rad_per_tick / 2)


def test_range_is_ordered_whatever_the_direction() -> None:
    lower, upper = calibration().range_radians(NAMES)
    k = 2 * math.pi / 4096
    np.testing.assert_allclose(lower, [(1000 - 2048) * k, -(2600 - 2100) * k])
    np.testing.assert_allclose(upper, [(3000 - 2048) * k, -(1500 - 2100) * k])


def test_file_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "arm.json"
    calibration().save(path)
    assert Calibration.load(path) == calibration()
    assert sorted(p.name for p in path.parent.iterdir()) == ["arm.json"]  # no temporary left


def test_bad_files_and_missing_joints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mbpo-arm calibrate"):
        Calibration.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"protocol": "feetech", "joints": {"a": {"id": 1}}}))
    with pytest.raises(ValueError, match="bad.json.*missing.*calibrate` again"):
        Calibration.load(bad)
    with pytest.raises(ValueError, match=r"no joints \['c'\]"):
        calibration().to_radians(np.zeros(1), ("c",))
    with pytest.raises(ValueError, match="direction"):
        JointCalibration(1, 2048, 0, 1000, 3000)


def test_walk_through_stops_at_an_encoder_wrap() -> None:
    """Scripted answers on a pipe; the readings turn each joint positive, then base_yaw's
    reading jumps by most of a turn (its range crosses 4095 -> 0)."""
    zero = np.full(2, 2048)
    readings = iter([zero, zero + [100, 0], zero + [0, -100], zero + [3000, 0]])
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"\n" * 5)
    os.close(write_fd)
    with os.fdopen(read_fd) as stdin, pytest.raises(RuntimeError, match="a crossed its encoder"):
        walk_through(lambda: next(readings), NAMES, (1, 2), "feetech", stdin, io.StringIO(),
                     "zero pose")


def test_walk_through_finds_directions_and_ranges() -> None:
    zero = np.full(2, 2048)
    readings = iter([zero, zero + [100, 0], zero + [0, -100], zero + [900, 300],
                     zero - [500, 400]] + [zero] * 1000)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"\n" * 3)
    stdin = os.fdopen(read_fd)
    out = io.StringIO()  # three Enters wait in the pipe (zero pose, two directions); the
    # fourth ends the range recording after 0.3 s of samples
    timer = threading.Timer(0.3, lambda: (os.write(write_fd, b"\n"), os.close(write_fd)))
    timer.start()
    cal = walk_through(lambda: next(readings), NAMES, (1, 2), "feetech", stdin, out, "zero")
    stdin.close()
    assert cal.joints["a"] == JointCalibration(1, 2048, 1, 2048 - 500, 2048 + 900)
    assert cal.joints["b"] == JointCalibration(2, 2048, -1, 2048 - 400, 2048 + 300)
    assert "Turn b (servo 2)" in out.getvalue()
