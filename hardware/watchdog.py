"""Rule 7 when the whole control loop stalls: a thread that holds, then releases torque.

:meth:`hardware.shield.ShieldedRobot.advance` already holds when the loop keeps ticking but no
command comes. When the loop itself stops (a hung policy, a long pause of the process),
nothing calls ``advance``; this thread then checks the command stream every control period on
the wall clock and sends the hold (and, with ``on_timeout: release``, calls the backend's
``release_torque()`` after ``release_after_s``). It only makes sense for backends stamped with
``time.monotonic()`` (hardware): the twin's simulated clock stops with the loop.
"""

from __future__ import annotations

import threading
from typing import Any


class WatchdogThread:
    """Runs ``robot.guard()`` every ``robot.control_period`` seconds until :meth:`stop`.

    Args:
        robot: a :class:`hardware.shield.ShieldedRobot` (its ``guard`` takes its lock).
    """

    def __init__(self, robot: Any) -> None:
        self.robot = robot
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start watching (again after :meth:`stop`)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shield-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def _run(self) -> None:
        period = float(self.robot.control_period)
        while not self._stop.wait(period):
            try:
                self.robot.guard()
            except Exception as err:  # a dead bus: keep the error, keep watching
                self.errors.append(err)
