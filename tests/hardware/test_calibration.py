"""Calibration maths and its file: ticks <-> radians, directions, ranges, crash-safe writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hardware.calibration import Calibration, JointCalibration

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
