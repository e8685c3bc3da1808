"""``runtime=async`` is one process tree: ``kill -9`` of the actor takes its learner and the
resource tracker with it, nothing writes the run after, an immediate resume goes on and
``checkpoints/latest`` never moves back; a second process on a run in use fails at start-up
naming the pid that holds it; a learner whose training diverges ends the run in one line.
Real processes, real signals, real files."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from mbpo_arm.agent.checkpoint import latest_checkpoint, load_checkpoint, step_of
from mbpo_arm.agent.io import LOCK_FILE
from tests.runtime.async_helpers import (
    HZ,
    QUICK,
    check_nothing_lost,
    finish,
    logged,
    start,
    wait_for,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def children(pid: int) -> dict[int, str]:
    """The live children of ``pid``: their command lines by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if entry.name.isdigit() and int(stat[1]) == pid and stat[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().decode()
        except (OSError, IndexError):
            continue
    return found


def dead(pid: int) -> bool:
    """Gone, or a zombie (an orphan's parent here may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def written(run: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of the metrics and of everything under ``checkpoints/``."""
    paths = [run / "metrics.jsonl", *sorted((run / "checkpoints").rglob("*"))]
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


def lock_holder(run: Path) -> str:
    path = run / LOCK_FILE
    return path.read_text().strip() if path.exists() else ""


@pytest.mark.slow
def test_sigkill_of_the_actor_ends_the_tree_and_resume_goes_on(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(*QUICK, "trainer.total_steps=100000", f"run_dir={run}")
    try:
        wait_for(lambda: lock_holder(run) == str(proc.pid))
        second = start(f"resume={run}")  # while the first one runs
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2
        assert err.strip() == (f"mbpo-arm: error: {run} is in use by process {proc.pid} (it "
                               f"holds {run / LOCK_FILE}); wait for it to end or stop it, "
                               "then start again")
        wait_for(lambda: latest_checkpoint(run) is not None)
        tree = children(proc.pid)
        learner = int((run / "learner.pid").read_text())
        assert learner in tree and any("resource_tracker" in c for c in tree.values()), tree
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        wait_for(lambda: all(dead(pid) for pid in tree), timeout=2.0)
        assert time.monotonic() - t0 < 2.0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # not read to its end: a learner left alive would hold it open
        proc.stderr.close()
    before = written(run)
    time.sleep(1.5)
    assert written(run) == before, "something wrote the run after its actor was killed"
    pointer = run / "checkpoints" / "latest"
    steps = [step_of(pointer.read_text())]
    total = logged(run) + HZ
    resumed = start(f"resume={run}", f"trainer.total_steps={total}")
    try:
        while resumed.poll() is None:
            steps.append(step_of(pointer.read_text()))
            time.sleep(0.05)
        stats = finish(resumed, run)
    finally:
        resumed.kill()
    assert steps == sorted(steps), f"checkpoints/latest moved back: {steps}"
    check_nothing_lost(run, total, stats, learned=False)
    assert os.path.exists(run / LOCK_FILE)


@pytest.mark.slow
def test_a_diverging_learner_ends_the_run_in_one_line_without_a_restart(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(*QUICK, "trainer.total_steps=100000", "agent.sac.critic_lr=1e30",
                 "agent.sac.actor_lr=1e30", f"run_dir={run}")
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("mbpo-arm: error: training diverged at env step "), line
    assert line.endswith(("continues from it)", "no checkpoint was saved")), line
    stats = json.loads((run / "runtime_stats.json").read_text())
    assert stats["learner_restarts"] == 0 and stats["learner_error"] in line
    for ckpt in (run / "checkpoints").glob("step_*"):
        load_checkpoint(ckpt)  # whole and finite
