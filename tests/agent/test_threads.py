"""threads=auto: torch follows the cores other processes leave idle."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from mbpo_arm.agent.threads import ThreadGovernor, ThreadPolicy, machine_busy_seconds, usable_cpus


class FakeMachine:
    """A machine whose other processes use ``others`` cores (a load this test picks, which
    no real machine produces on demand at every level)."""

    def __init__(self) -> None:
        self.t, self.busy, self.others = 0.0, 0.0, 0.0
        self.set_to: list[int] = []

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.busy += self.others * seconds

    def governor(self, limit: int) -> ThreadGovernor:
        return ThreadGovernor(limit, period_s=1.0, busy=lambda: self.busy, own=lambda: 0.0,
                              clock=lambda: self.t, set_threads=self.set_to.append)


def test_the_count_follows_the_idle_cores_within_the_limit(monkeypatch) -> None:
    monkeypatch.setattr("mbpo_arm.agent.threads.usable_cpus", lambda: 4)
    machine = FakeMachine()
    gov = machine.governor(limit=3)
    machine.advance(1.0)
    assert gov._measure() == 4 and gov.poll() is None  # too soon to measure again
    for others, expected in ((0.0, 3), (1.0, 3), (2.2, 2), (3.0, 1), (6.0, 1), (0.4, 3)):
        machine.others = others
        machine.advance(1.0)
        gov.poll()
        assert gov.threads == expected, (others, gov.threads)
    assert machine.set_to == [3, 2, 1, 3]  # set only when it moves


def test_without_proc_stat_it_stays_at_one_thread(tmp_path) -> None:
    gov = ThreadGovernor(2, period_s=0.0, busy=lambda: machine_busy_seconds(
        str(tmp_path / "missing")), set_threads=lambda n: None)
    assert gov.start(window_s=0.0) == 1


def test_proc_stat_counts_this_process_busy() -> None:
    before = machine_busy_seconds()
    if before is None:
        pytest.skip("no /proc/stat on this OS")
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass
    assert machine_busy_seconds() - before >= 0.2


@pytest.mark.skipif(machine_busy_seconds() is None or usable_cpus() < 2,
                    reason="needs /proc/stat and 2 CPUs")
def test_a_real_cpu_hog_takes_a_thread_away() -> None:
    """A second process spinning on one core: two cores, one left, one torch thread."""
    threads = torch.get_num_threads()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the hog is running
        gov = ThreadGovernor(usable_cpus(), period_s=0.5)
        gov.start(window_s=0.6)
        assert gov.threads <= usable_cpus() - 1
        assert torch.get_num_threads() == gov.threads
    finally:
        hog.kill()
        hog.wait()
        torch.set_num_threads(threads)


def test_the_policy_describes_what_it_set() -> None:
    assert ThreadPolicy("1", 2).describe(None) == "1 torch thread"
    threads = torch.get_num_threads()
    try:
        assert ThreadPolicy("3", 2).apply() is None and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert "up to 2, following the idle cores" in ThreadPolicy("auto", 2).describe(None)
