"""Shared by the ROS 2 tests: fresh DDS domains and the twin driver in a thread."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mbpo_arm.hardware.ros2.config import Ros2Config

_domains = itertools.count()


def fresh_domain() -> int:
    """A DDS domain id no other test of this run uses (and, by the pid, unlikely another
    run's), so that tests never hear each other's traffic."""
    return 1 + (os.getpid() * 13 + next(_domains)) % 200


@contextmanager
def twin_driver_thread(config: Ros2Config, control_hz: float = 20.0) -> Iterator[object]:
    """The twin behind ``config``'s topics, ticking at ``control_hz`` in a thread (its own DDS
    participant: the arm's side, not the control loop's)."""
    from mbpo_arm.hardware.ros2.transport import CycloneTransport
    from mbpo_arm.sim.ros2_twin_driver import TwinDriver

    transport = CycloneTransport(config.domain_id)
    driver = TwinDriver(config, transport, control_hz)
    stop = threading.Event()

    def drive() -> None:
        while not stop.is_set():
            driver.tick()

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        yield driver
    finally:
        stop.set()
        thread.join()
        transport.close()
