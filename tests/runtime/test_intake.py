"""The intake: re-sends skipped, holes counted, the merged log and its ledger read back, a
reopen that continues, SIGKILL at random instants of three concurrent senders (every source's
committed seqs exactly once), and a torn or flipped ledger."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.agent.runtime.intake import LEDGER_NAME, ROW, Intake
from mbpo_arm.agent.runtime.replay_log import (
    HEADER,
    LogDamageError,
    LogRecords,
    read_log,
    record_dtype,
)

ROOT = Path(__file__).resolve().parents[2]
OBS, ACT = 4, 2
SOURCES = ("arm0", "arm1", "twin")
SIZE = record_dtype(OBS, ACT).itemsize


def make_records(source: int, seqs: np.ndarray | list[int]) -> LogRecords:
    """Source ``source``'s transitions ``seqs``, deterministic: every value is
    ``source * 1000 + seq`` (negated for the action; ``+ 1`` for next_obs)."""
    seq = np.asarray(seqs, np.uint64)
    v = (source * 1000 + seq.astype(np.int64)).astype(np.float32)
    return LogRecords(seq, np.repeat(v[:, None], OBS, 1), np.repeat(-v[:, None], ACT, 1), v,
                      np.repeat(v[:, None] + 1, OBS, 1), seq % 11 == 10, seq % 13 == 12)


def check_merged(intake: Intake) -> None:
    """The merged log holds ``next_seq`` records, seq 0.. contiguous, each equal to the source
    record its span names (``truncated`` may be added where the next record is another's)."""
    r = read_log(intake.path, OBS, ACT)
    np.testing.assert_array_equal(r.seq, np.arange(intake.next_seq))
    assert r.torn_bytes == 0 and not len(r.missing)
    for start, count, name, source_start in intake.spans():
        want = make_records(SOURCES.index(name), np.arange(source_start, source_start + count))
        got = slice(start, start + count)
        for key in ("obs", "action", "reward", "next_obs", "terminated"):
            np.testing.assert_array_equal(getattr(r, key)[got], getattr(want, key))
        assert (r.truncated[got] | ~want.truncated).all()
        assert intake.source_of(start + count - 1) == (name, source_start + count - 1)


def committed_seqs(intake: Intake) -> dict[str, list[int]]:
    """Every committed source seq per source, via ``source_of`` of each merged record."""
    out: dict[str, list[int]] = {name: [] for name in intake.sources()}
    for k in range(intake.next_seq):
        name, seq = intake.source_of(k)
        out[name].append(seq)
    return out


def test_resends_are_skipped_and_holes_counted(tmp_path: Path) -> None:
    intake = Intake.open(tmp_path / "intake", OBS, ACT)
    acked, raws = intake.append("arm0", make_records(0, range(10)))
    assert acked == 10 and len(raws) == 10
    acked, raws = intake.append("arm0", make_records(0, range(5, 15)))  # overlaps
    assert acked == 15
    np.testing.assert_array_equal(np.frombuffer(b"".join(raws), record_dtype(OBS, ACT))["seq"],
                                  np.arange(10, 15))
    ledger = (tmp_path / "intake" / LEDGER_NAME).stat().st_size
    assert intake.append("arm0", make_records(0, range(15))) == (15, [])  # a whole re-send
    assert intake.append("arm0", make_records(0, [])) == (15, [])
    assert (tmp_path / "intake" / LEDGER_NAME).stat().st_size == ledger  # nothing written
    assert intake.append("arm1", make_records(1, range(5)))[0] == 5
    assert intake.append("arm1", make_records(1, [3, 4, 5, 6, 9, 10, 11]))[0] == 12  # a hole
    assert intake.append("twin", make_records(2, [3, 4]))[0] == 5  # a hole at the start
    for bad in ([16, 15], [15, 15]):
        with pytest.raises(ValueError, match=re.escape(f"'arm0': seqs past 15 must increase, "
                                                       f"got {bad}")):
            intake.append("arm0", make_records(0, bad))
    with pytest.raises(ValueError, match=r"records.obs has shape \(1, 3\)"):
        intake.append("arm0", replace(make_records(0, [15]), obs=np.zeros((1, 3), np.float32)))
    assert intake.sources() == {"arm0": 15, "arm1": 12, "twin": 5}
    assert intake.gaps == {"arm0": 0, "arm1": 2, "twin": 3}
    assert intake.spans() == [(0, 10, "arm0", 0), (10, 5, "arm0", 10), (15, 5, "arm1", 0),
                              (20, 2, "arm1", 5), (22, 3, "arm1", 9), (25, 2, "twin", 3)]
    assert intake.next_seq == 27 and intake.acked("nobody") == 0
    assert intake.source_of(0) == ("arm0", 0) and intake.source_of(22) == ("arm1", 9)
    with pytest.raises(IndexError, match="not committed"):
        intake.source_of(27)
    check_merged(intake)
    intake.close()
    intake.close()  # idempotent
    merged = intake.path.read_bytes()  # the bytes handed on are the merged log's
    assert merged[HEADER.size + 10 * SIZE:HEADER.size + 15 * SIZE] == b"".join(raws)


def test_a_reopened_intake_continues(tmp_path: Path) -> None:
    with Intake.open(tmp_path, OBS, ACT) as intake:
        intake.append("arm0", make_records(0, range(7)))
        intake.append("twin", make_records(2, [0, 1, 4]))
    with Intake.open(tmp_path, OBS, ACT) as intake:
        assert intake.next_seq == 10 and intake.sources() == {"arm0": 7, "twin": 5}
        assert intake.gaps == {"arm0": 0, "twin": 2}
        assert intake.append("arm0", make_records(0, range(5, 9)))[0] == 9
        assert intake.append("arm1", make_records(1, range(3)))[0] == 3
        assert intake.next_seq == 15
        check_merged(intake)
    with Intake.open(tmp_path, OBS, ACT) as intake:
        assert committed_seqs(intake) == {"arm0": list(range(9)), "twin": [0, 1, 4],
                                          "arm1": [0, 1, 2]}
        check_merged(intake)
    with pytest.raises(ValueError, match="obs_dim"):
        Intake.open(tmp_path, OBS + 1, ACT)
    assert (tmp_path / "replay.log").stat().st_size == HEADER.size + 15 * SIZE  # left uncut


def send_loop(intake: Intake, source: int, rng: np.random.Generator, batches: int) -> None:
    """A sender: batches of 1-39 records from its ``acked`` less a re-sent overlap of 0-5."""
    name = SOURCES[source]
    for _ in range(batches):
        start = max(0, intake.acked(name) - int(rng.integers(0, 6)))
        intake.append(name, make_records(source, np.arange(start, start + rng.integers(1, 40))))


def check_exactly_once(intake: Intake) -> None:
    for name, seqs in committed_seqs(intake).items():
        assert seqs == list(range(intake.acked(name))), name  # in order, once each, no holes
    check_merged(intake)


def test_concurrent_senders(tmp_path: Path) -> None:
    with Intake.open(tmp_path, OBS, ACT) as intake:
        threads = [threading.Thread(target=send_loop,
                                    args=(intake, i, np.random.default_rng(i), 40))
                   for i in range(len(SOURCES))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check_exactly_once(intake)
        assert sum(intake.sources().values()) == intake.next_seq > 0


SENDERS = """
import sys, threading, numpy as np
sys.path.insert(0, {root!r})
from mbpo_arm.agent.runtime.intake import Intake
from tests.runtime.test_intake import OBS, ACT, SOURCES, send_loop
intake = Intake.open({path!r}, OBS, ACT)
print("ready", flush=True)
for i in range(len(SOURCES)):
    threading.Thread(target=send_loop, args=(intake, i, np.random.default_rng({seed} + i),
                                             10**9)).start()
"""


def test_sigkill_at_random_instants_commits_each_seq_once(tmp_path: Path) -> None:
    rng, totals, cut = np.random.default_rng(0), [0], 0
    for round_ in range(8):
        code = SENDERS.format(root=str(ROOT), path=str(tmp_path), seed=10 * round_)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.02, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        log_bytes = (tmp_path / "replay.log").stat().st_size
        with Intake.open(tmp_path, OBS, ACT) as intake:
            cut += log_bytes > HEADER.size + intake.next_seq * SIZE  # killed mid-commit
            assert (tmp_path / "replay.log").stat().st_size == HEADER.size + intake.next_seq * SIZE
            assert (tmp_path / LEDGER_NAME).stat().st_size % ROW.size == 0
            check_exactly_once(intake)
            totals.append(intake.next_seq)
    assert (np.diff(totals) > 0).sum() >= 4, totals  # the kills landed mid-run
    assert cut >= 1, totals  # and some mid-commit: records past the last row were cut
    print(f"committed after each kill: {totals[1:]}; {cut} kills cut uncommitted records")


def three_batches(directory: Path) -> None:
    with Intake.open(directory, OBS, ACT) as intake:
        for k in range(3):
            intake.append("arm0", make_records(0, range(5 * k, 5 * k + 5)))
        intake.append("arm1", make_records(1, range(4)))


def test_a_torn_last_row_is_dropped_a_flipped_middle_row_refused(tmp_path: Path) -> None:
    ledger = tmp_path / LEDGER_NAME
    three_batches(tmp_path)
    os.truncate(ledger, 4 * ROW.size - 9)  # the last commit torn mid-row
    with Intake.open(tmp_path, OBS, ACT) as intake:
        assert intake.next_seq == 15 and intake.sources() == {"arm0": 15, "arm1": 0}
        assert ledger.stat().st_size == 3 * ROW.size
        assert (tmp_path / "replay.log").stat().st_size == HEADER.size + 15 * SIZE
        assert intake.append("arm1", make_records(1, range(4)))[0] == 4  # re-sent
        check_exactly_once(intake)
    raw = bytearray(ledger.read_bytes())
    raw[-ROW.size + 10] ^= 0x01  # the last row flipped: an interrupted commit too
    ledger.write_bytes(bytes(raw))
    with Intake.open(tmp_path, OBS, ACT) as intake:
        assert intake.next_seq == 15
    raw = bytearray(ledger.read_bytes())
    raw[ROW.size + 3] ^= 0x40  # a middle row: damage
    ledger.write_bytes(bytes(raw))
    before = (tmp_path / "replay.log").read_bytes()
    with pytest.raises(LogDamageError, match=r"sources\.ledger: row 1 of 3 fails its CRC"):
        Intake.open(tmp_path, OBS, ACT)
    assert (tmp_path / "replay.log").read_bytes() == before  # nothing cut
    assert ledger.read_bytes() == bytes(raw)


def test_a_merged_log_shorter_than_its_ledger_is_refused(tmp_path: Path) -> None:
    three_batches(tmp_path)
    os.truncate(tmp_path / "replay.log", HEADER.size + 10 * SIZE)
    with pytest.raises(LogDamageError, match=r"replay\.log: holds fewer records than the 19"):
        Intake.open(tmp_path, OBS, ACT)


def test_a_crash_before_the_first_commit_leaves_an_empty_intake(tmp_path: Path) -> None:
    (tmp_path / "replay.log").write_bytes(b"MBPOLOG1\x04\x00")  # the header, cut short
    (tmp_path / "sources.json").write_text('["arm1"]')  # a source named, its row not written
    with Intake.open(tmp_path, OBS, ACT) as intake:
        assert intake.next_seq == 0 and intake.sources() == {"arm1": 0}
        assert intake.append("arm1", make_records(1, range(3)))[0] == 3
        assert intake.spans() == [(0, 3, "arm1", 0)]
        check_merged(intake)
