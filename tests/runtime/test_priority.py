"""The actor's operating-system scheduling: SCHED_FIFO (or nice) for its thread only, not
inherited by what it starts, CPU pinning, and clear errors for bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.priority import (
    current_cpu,
    other_cpus,
    pin,
    raise_priority,
    raise_thread,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux scheduling")


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a fresh thread (scheduling calls with pid 0 act on the calling thread, so
    the test process's main thread is never changed); return its result or raise its error."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            out["error"] = err

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_fifo_applies_to_the_thread_and_is_undone() -> None:
    def body() -> tuple[str, int, int]:
        applied, undo = raise_priority("fifo")
        during = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
        undo()
        return applied, during, os.sched_getscheduler(0)

    applied, during, after = in_thread(body)
    if applied.startswith("fifo"):
        assert during == os.SCHED_FIFO
    else:  # no privilege here: a nice value or nothing, never an error
        assert applied.startswith(("nice", "normal")) and during == os.SCHED_OTHER
    assert after == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the main thread never changed


def test_processes_started_by_a_fifo_actor_run_normally() -> None:
    """The learner (and any helper process) must not inherit the real-time class."""
    def body() -> tuple[str, str]:
        applied, undo = raise_priority("fifo")
        try:
            child = subprocess.run([sys.executable, "-c",
                                    "import os; print(os.sched_getscheduler(0))"],
                                   capture_output=True, text=True, check=True)
        finally:
            undo()
        return applied, child.stdout.strip()

    applied, child_policy = in_thread(body)
    if not applied.startswith("fifo"):
        pytest.skip(f"no SCHED_FIFO privilege here ({applied})")
    assert int(child_policy) == os.SCHED_OTHER


def test_a_helper_thread_runs_one_level_below_the_actor() -> None:
    """The replay log's writer thread gets FIFO 49 under a FIFO-50 actor (so a helper holding
    the GIL is never preempted by the learner while the actor waits for it)."""
    ready, done = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def helper() -> None:
        ready.set()
        done.wait(10)
        seen["policy"] = os.sched_getscheduler(0)
        seen["priority"] = os.sched_getparam(0).sched_priority

    t = threading.Thread(target=helper)
    t.start()
    ready.wait(10)
    applied = in_thread(lambda: raise_priority("fifo")[0])
    raise_thread(t.native_id, applied)
    done.set()
    t.join()
    if not applied.startswith("fifo"):
        pytest.skip(f"no SCHED_FIFO privilege here ({applied})")
    assert seen == {"policy": os.SCHED_FIFO, "priority": 49}
    raise_thread(None, applied)  # an unknown thread: nothing to do, no error


def test_pin_restricts_and_restores_the_cpus() -> None:
    cpus = sorted(os.sched_getaffinity(0))

    def body() -> tuple[set[int], int, set[int]]:
        undo = pin([cpus[-1]])
        during, ran_on = os.sched_getaffinity(0), current_cpu()
        undo()
        return during, ran_on, os.sched_getaffinity(0)

    during, ran_on, after = in_thread(body)
    assert during == {cpus[-1]} and ran_on == cpus[-1] and after == set(cpus)
    assert other_cpus([cpus[0]]) == (cpus[1:] or None)
    assert other_cpus(None) is None


def test_bad_settings_fail_with_the_key_named() -> None:
    with pytest.raises(ValueError, match="not available"):
        pin([10_000])
    with pytest.raises(ValueError, match="runtime.priority='realtime'"):
        RuntimeConfig(mode="async", priority="realtime")
