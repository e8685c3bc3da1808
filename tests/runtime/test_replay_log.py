"""The replay log: round trip, torn tails ignored and moved aside, another size refused, and
a SIGKILL mid-append leaves only complete records (more faults: test_faults_log.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.agent.runtime.replay_log import HEADER, ReplayLog, read_log, record_dtype

ROOT = Path(__file__).resolve().parents[2]
OBS, ACT = 19, 5


def append_n(log: ReplayLog, n: int) -> None:
    for _ in range(n):
        k = log.next_seq
        log.append(np.full(OBS, k, np.float32), np.full(ACT, -k, np.float32), float(k),
                   np.full(OBS, k + 1, np.float32), k % 7 == 6, k % 5 == 4)


def check_contents(path: Path, n: int) -> None:
    r = read_log(path, OBS, ACT)
    assert len(r) == n
    k = np.arange(n)
    np.testing.assert_array_equal(r.seq, k)
    np.testing.assert_array_equal(r.obs, np.repeat(k[:, None], OBS, 1).astype(np.float32))
    np.testing.assert_array_equal(r.action[:, 0], -k.astype(np.float32))
    np.testing.assert_array_equal(r.reward, k.astype(np.float32))
    np.testing.assert_array_equal(r.next_obs[:, 0], (k + 1).astype(np.float32))
    np.testing.assert_array_equal(r.terminated, k % 7 == 6)
    np.testing.assert_array_equal(r.truncated, k % 5 == 4)


def test_round_trip_and_ranges(tmp_path: Path) -> None:
    log = ReplayLog.open(tmp_path / "r.log", OBS, ACT, fsync_every_records=4)
    append_n(log, 30)
    log.close()
    check_contents(tmp_path / "r.log", 30)
    part = read_log(tmp_path / "r.log", OBS, ACT, start=10, stop=13)
    assert part.seq.tolist() == [10, 11, 12]
    assert ReplayLog.open(tmp_path / "r.log", OBS, ACT).next_seq == 30


def test_a_log_can_start_at_a_later_step(tmp_path: Path) -> None:
    log = ReplayLog.open(tmp_path / "r.log", OBS, ACT, first_seq=100)
    append_n(log, 3)
    log.close()
    assert read_log(tmp_path / "r.log", OBS, ACT).seq.tolist() == [100, 101, 102]
    assert read_log(tmp_path / "r.log", OBS, ACT, start=101).seq.tolist() == [101, 102]
    assert ReplayLog.open(tmp_path / "r.log", OBS, ACT).next_seq == 103


@pytest.mark.parametrize("damage", ["partial", "bad_crc"])
def test_torn_tail_is_ignored_then_moved_aside_before_appending(tmp_path: Path,
                                                                damage: str) -> None:
    path = tmp_path / "r.log"
    log = ReplayLog.open(path, OBS, ACT)
    append_n(log, 8)
    log.close()
    size = record_dtype(OBS, ACT).itemsize
    with open(path, "r+b") as f:
        if damage == "partial":  # a kill mid-write: half a record
            f.seek(0, os.SEEK_END)
            f.write(b"\x09" * (size // 2))
        else:  # the last record's bytes changed after its CRC was computed
            f.seek(HEADER.size + 7 * size + 12)
            f.write(b"\xff\xff")
    before = path.read_bytes()
    records = read_log(path, OBS, ACT)
    assert len(records) == (8 if damage == "partial" else 7) and records.torn_bytes > 0
    assert path.read_bytes() == before  # a reader never changes the file
    log = ReplayLog.open(path, OBS, ACT, checkpoint_step=9)  # the checkpoint holds the torn one
    assert log.next_seq == 9
    append_n(log, 3)
    log.close()
    assert (tmp_path / "r.log.torn").read_bytes() == before[HEADER.size + len(records) * size:]
    kept = read_log(path, OBS, ACT)
    assert kept.seq.tolist() == [*range(len(records)), 9, 10, 11] and kept.torn_bytes == 0


def test_a_log_of_another_size_is_refused(tmp_path: Path) -> None:
    log = ReplayLog.open(tmp_path / "r.log", OBS, ACT)
    append_n(log, 2)
    log.close()
    with pytest.raises(ValueError, match="obs_dim=19, act_dim=5.*act_dim=6"):
        ReplayLog.open(tmp_path / "r.log", OBS, 6)
    (tmp_path / "x.log").write_bytes(b"not a log at all")
    with pytest.raises(ValueError, match="not a replay log"):
        read_log(tmp_path / "x.log")


WRITER = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from mbpo_arm.agent.runtime.replay_log import ReplayLog
log = ReplayLog.open({path!r}, {obs}, {act}, fsync_every_records=1000)
print("ready", flush=True)
while True:
    k = log.next_seq
    log.append(np.full({obs}, k, np.float32), np.full({act}, -k, np.float32), float(k),
               np.full({obs}, k + 1, np.float32), k % 7 == 6, k % 5 == 4)
"""


@pytest.mark.slow
def test_sigkill_mid_append_leaves_complete_records(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    code = WRITER.format(root=str(ROOT), path=str(path), obs=OBS, act=ACT)
    for _ in range(3):  # kill at three different instants, appending after each
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n = len(read_log(path, OBS, ACT))
        assert n > 0
        check_contents(path, n)


def test_the_disk_is_touched_off_the_appending_thread(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends never wait on the disk: every ``os.write`` and the due ``fsync`` run in the
    log's writer thread (spies around the real calls record where), each record is handed to
    ``on_written`` after it is written, in order, and ``close`` syncs in the caller."""
    import threading

    callers: list[tuple[str, str]] = []
    real_fsync, real_write = os.fsync, os.write
    path = tmp_path / "replay.log"
    log = ReplayLog.open(path, OBS, ACT, fsync_every_records=10)
    handed: list[tuple[int, int]] = []  # (seq of the record, records in the file then)
    log.on_written = lambda raw: handed.append(
        (int(np.frombuffer(raw, log.dtype)["seq"][0]), len(read_log(path, OBS, ACT))))

    def spy(name: str, real: object) -> object:
        def call(*args: object) -> object:
            callers.append((name, threading.current_thread().name))
            return real(*args)  # type: ignore[operator]
        return call

    monkeypatch.setattr(os, "fsync", spy("fsync", real_fsync))
    monkeypatch.setattr(os, "write", spy("write", real_write))
    append_n(log, 35)
    log.flush()
    deadline = time.monotonic() + 5  # the due fsync follows the writes it covers
    while ("fsync", "replay-log-writer") not in callers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.written == log.next_seq == 35
    assert set(callers) == {("write", "replay-log-writer"),
                                    ("fsync", "replay-log-writer")}, callers
    assert [n for n, _ in callers].count("write") == 35
    assert handed == [(k, k + 1) for k in range(35)]  # on the disk before it is handed on
    log.close()
    assert callers[-1] == ("fsync", threading.current_thread().name)  # the final sync
    check_contents(path, 35)


def test_a_failed_write_is_reported_with_the_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the writer stops at the failed record; the next append and ``flush`` say
    which file and from which record on nothing is on the disk; earlier records are kept."""
    path = tmp_path / "replay.log"
    log = ReplayLog.open(path, OBS, ACT)
    append_n(log, 3)
    log.flush()
    real_write = os.write

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    append_n(log, 1)
    with pytest.raises(OSError, match=r"replay\.log: writing the replay log failed.*from 3 on"):
        log.flush()
    with pytest.raises(OSError, match="No space left"):
        append_n(log, 1)
    monkeypatch.setattr(os, "write", real_write)
    check_contents(path, 3)
