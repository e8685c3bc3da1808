"""``runtime=async``: the learner killed mid-run comes back; the actor keeps its rate and
no transition is lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.agent.io import load_npz
from mbpo_arm.agent.runtime.replay_log import read_log
from tests.runtime.async_helpers import (
    HZ,
    QUICK,
    check_nothing_lost,
    finish,
    logged,
    start,
    wait_for,
)


@pytest.mark.slow
def test_learner_killed_mid_run_comes_back_and_nothing_is_lost(tmp_path: Path) -> None:
    run, total = tmp_path / "run", 12 * HZ
    # shield.slow_reset=false: a reset through the shield takes robot time in which no
    # transition is logged, and this test measures the logging rate
    proc = start(*QUICK, f"trainer.total_steps={total}", f"run_dir={run}",
                 "runtime.on_learner_death=hold", "shield.slow_reset=false")
    try:
        wait_for(lambda: logged(run) >= 3 * HZ)
        first_pid = int((run / "learner.pid").read_text())
        os.kill(first_pid, signal.SIGKILL)
        n0, t0 = logged(run), time.monotonic()
        time.sleep(2.0)
        rate = (logged(run) - n0) / (time.monotonic() - t0)
        assert rate > 0.5 * HZ, f"the actor slowed to {rate:.1f} Hz without its learner"
        wait_for(lambda: int((run / "learner.pid").read_text()) != first_pid, timeout=20)
        stats = finish(proc, run)
    finally:
        proc.kill()
    assert stats["learner_deaths"] >= 1 and stats["learner_restarts"] >= 1
    assert stats["versions_applied"] >= 2
    # The actor runs SCHED_FIFO where the system allows: the learner's death and restart
    # (a process spawned from the actor's thread, torch imports on the other core) never
    # cost it a tick. Checked from the kill (``n0`` records were logged then, so the kill came
    # at tick ``n0`` or later) to two seconds after the restart. A virtual machine can stall
    # even an idle real-time thread at any moment (bench/runtime_jitter.py's probe measured
    # up to 38 ms, twice in 16 minutes): one tick up to two periods late is such a stall. Work
    # done on the actor's thread (a blocking spawn, a join, a lock the learner held) would
    # cost a run of ticks or one tick far later than that.
    assert stats["scheduling"]["priority"].startswith(("fifo", "nice", "normal"))
    if stats["scheduling"]["priority"].startswith("fifo"):
        ticks = load_npz(run / "runtime_ticks.npz")
        lateness = ticks["lateness"]
        events = dict(stats["learner_events"][:2])
        window = slice(n0 - 1, events["restart"] + 2 * HZ)  # tick k is lateness[k - 1]
        near = np.flatnonzero(lateness[window] > 1.0 / HZ) + n0
        worst = float(lateness[window].max())
        assert len(near) <= 1 and worst <= 2.0 / HZ, (near.tolist(), worst,
                                                       stats["learner_events"])
    check_nothing_lost(run, total, stats)
    actions = read_log(run / "replay.log", 19, 5).action
    held = (actions[3 * HZ:] == 0).all(axis=1)
    assert held.any(), "the actor did not hold position while its learner was dead"
    assert not held[-HZ:].all(), "the actor kept holding after the learner came back"
