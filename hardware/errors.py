"""The one error a robot backend raises when the arm stops answering mid-run.

A bus that no longer answers (:class:`hardware.serial_bus.BusError`), a ROS 2 driver that
stopped publishing: the composition root catches :class:`RobotError`, checkpoints everything
collected before it, and exits with the error's one line. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations


class RobotError(RuntimeError):
    """The arm (its bus, its driver) failed; the message says what and how to fix it."""
