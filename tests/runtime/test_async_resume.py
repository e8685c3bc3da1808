"""``runtime=async``: SIGTERM stops cleanly (exit 143, final checkpoint, the line to continue),
then ``resume=`` continues the step counts and loses no transition."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

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
def test_sigterm_then_resume_continues_the_counts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(*QUICK, "trainer.total_steps=100000", f"run_dir={run}")
    try:
        wait_for(lambda: logged(run) >= 4 * HZ)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM
        assert f"continue with: mbpo-arm train resume={run}" in out
        stats = json.loads((run / "runtime_stats.json").read_text())
    finally:
        proc.kill()
    n = stats["actor_steps"]
    assert stats["signal"] == "SIGTERM" and n >= 4 * HZ
    check_nothing_lost(run, n, stats, learned=False)
    proc = start(f"resume={run}", f"trainer.total_steps={n + 2 * HZ}")
    try:
        stats = finish(proc, run)
    finally:
        proc.kill()
    assert stats["ticks"] == 2 * HZ
    check_nothing_lost(run, n + 2 * HZ, stats, learned=False)
