"""The learner's intake: several sources' transitions merged into one replay log.

Each source (an arm, a simulated twin) numbers its transitions 0, 1, 2, ... (its own log's
``seq``) and ships them in batches, re-sending after a failure, so batches repeat and overlap.
The learner reads one log, ``<directory>/replay.log``, in the
:mod:`~mbpo_arm.agent.runtime.replay_log` format with seq 0, 1, 2, ... contiguous, so its
code does not change. Beside it, which source each merged record came from:

* ``sources.json``: the sources' names, a JSON list (index: ``source_id``), rewritten
  atomically when a source first appears, before its first ledger row.
* ``sources.ledger``: one row per committed run of records (:data:`ROW`, little-endian)::

      merged_start u64 | count u32 | source_id u32 | source_start u64 | crc32 u32 (of the rest)

Commit protocol (write-ahead). :meth:`Intake.append` appends a batch's new records to the
merged log and ``fsync`` s it, then appends the batch's row to the ledger and ``fsync`` s it:
the row is the commit, so a ``kill -9`` or a power cut at any instant leaves a committed batch
or nothing. Records past the last row were never acknowledged: :meth:`Intake.open` cuts them
off and the senders, re-sending from :meth:`Intake.acked`, send them again. A torn or
CRC-failing last row is a commit a crash interrupted, cut too; a bad row with intact rows
after it is damage and stops the open. Only those cuts at the ends ever change a file; nothing
committed is rewritten. A reader of the merged log takes records below the committed end only
(the bytes :meth:`Intake.append` returns come after the commit): a crash may cut the ones past
it, and their merged seqs are reused. A batch with a hole (the source's own log lost seqs) is
one row per contiguous run of source seqs, each synced in turn; the hole counts in ``gaps``.

:func:`~mbpo_arm.agent.runtime.replay_log.read_log` returns a span's last record
``truncated`` when it ended no episode and the next merged record (another source's) does not
continue it: the merged log never joins two sources' episodes.
"""
from __future__ import annotations

import bisect
import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np

from mbpo_arm.agent.io import atomic_write_text, fsync_dir
from mbpo_arm.agent.runtime.replay_log import (
    HEADER,
    LogDamageError,
    LogRecords,
    ReplayLog,
    read_log,
    record_dtype,
)

LOG_NAME, LEDGER_NAME, SOURCES_NAME = "replay.log", "sources.ledger", "sources.json"
ROW = struct.Struct("<QIIQI")  # merged_start | count | source_id | source_start | crc32

Row = tuple[int, int, int, int]  # (merged_start, count, source_id, source_start)
_ASIDE = "or move the directory aside and start a new intake (the sources re-send from 0)"


def pack_row(row: Row) -> bytes:
    """One ledger row as bytes, CRC included."""
    head = ROW.pack(*row, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head))


def read_ledger(path: Path) -> list[Row]:
    """The committed rows of the ledger at ``path`` (none when it does not exist), without
    the torn or CRC-failing last row a crash mid-commit leaves; the file is only read.

    Raises:
        LogDamageError: a row other than the last fails its CRC.
    """
    data = path.read_bytes() if path.exists() else b""
    whole, rows = len(data) // ROW.size, []
    for i in range(whole):
        *row, crc = ROW.unpack_from(data, i * ROW.size)
        if zlib.crc32(data[i * ROW.size:(i + 1) * ROW.size - 4]) == crc:
            rows.append(tuple(row))
        elif i < whole - 1:
            raise LogDamageError(
                f"{path}: row {i} of {whole} fails its CRC and rows after it are intact "
                "(damage, not a crash mid-commit), so the merged records cannot be "
                f"attributed to their sources; restore {path.name} from a backup, {_ASIDE}")
    return rows


def _merged_log_size(path: Path, ledger: Path, committed: int, obs_dim: int,
                     act_dim: int) -> int:
    """The bytes of the merged log at ``path`` that its ``committed`` records fill (0 for a
    header a kill cut short: :meth:`ReplayLog.open` writes it anew)."""
    have = path.stat().st_size if path.exists() else 0
    if have >= HEADER.size:
        read_log(path, obs_dim, act_dim, 0, 0)  # another task's log: its ValueError
    want = HEADER.size + committed * record_dtype(obs_dim, act_dim).itemsize
    if have < want and committed:
        raise LogDamageError(
            f"{path}: holds fewer records than the {committed} that {ledger.name} commits "
            f"(the disk lost synced writes); restore the directory from a backup, {_ASIDE}")
    return want if have >= want else 0


def _cut(path: Path, size: int) -> None:
    """Truncate the file at ``path`` to ``size`` bytes, synced, when it is longer."""
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())


class Intake:
    """The learner's intake of several sources into one merged replay log (what the learner
    reads), with a ledger of which source each merged record came from.

    Use :meth:`open`. ``path``: the merged log; ``next_seq``: merged records committed so
    far; ``gaps``: per source, the seqs skipped over (its own log lost them). Thread-safe:
    one lock serialises every call.
    """

    def __init__(self, directory: Path, names: list[str], obs_dim: int, act_dim: int) -> None:
        self.directory, self.path = directory, directory / LOG_NAME
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.next_seq = 0
        self._names, self._ids = names, {n: i for i, n in enumerate(names)}
        self._acked = dict.fromkeys(names, 0)
        self.gaps: dict[str, int] = dict.fromkeys(names, 0)
        self._spans: list[tuple[int, int, str, int]] = []
        self._starts: list[int] = []  # the spans' merged_start, for bisection
        self._log: ReplayLog | None = None
        self._fd = -1
        self._lock = threading.Lock()
        self._failure: BaseException | None = None

    @classmethod
    def open(cls, directory: str | Path, obs_dim: int, act_dim: int) -> Intake:
        """Open (or create) the intake in ``directory``, recovering from a crash: a torn last
        ledger row and the merged records past the last committed row are cut off.

        Raises:
            LogDamageError: the ledger or the merged log is damaged (nothing committed is
                changed).
            ValueError: the merged log is not one, or holds another ``obs_dim`` / ``act_dim``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names_path, ledger = directory / SOURCES_NAME, directory / LEDGER_NAME
        names = json.loads(names_path.read_text()) if names_path.exists() else []
        intake, rows = cls(directory, names, obs_dim, act_dim), read_ledger(ledger)
        for i, row in enumerate(rows):
            intake._replay(ledger, i, row)
        size = _merged_log_size(intake.path, ledger, intake.next_seq, obs_dim, act_dim)
        _cut(ledger, len(rows) * ROW.size)  # the commit a crash interrupted
        _cut(intake.path, size)  # records never committed: their senders re-send them
        intake._log = ReplayLog.open(intake.path, obs_dim, act_dim)
        if intake._log.next_seq != intake.next_seq:
            intake._log.close()
            raise LogDamageError(f"{intake.path}: its records end at seq "
                                 f"{intake._log.next_seq}, {ledger.name} commits "
                                 f"{intake.next_seq} (not this intake's log); {_ASIDE[3:]}")
        intake._fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        fsync_dir(directory)
        return intake

    def _replay(self, ledger: Path, index: int, row: Row) -> None:
        """Take in row ``index`` read back from the ledger, checking it continues the rest."""
        merged_start, count, sid, source_start = row
        name = self._names[sid] if sid < len(self._names) else None
        if (merged_start != self.next_seq or not count or name is None
                or source_start < self._acked[name]):
            raise LogDamageError(
                f"{ledger}: row {index} {row} does not continue the rows before it (merged "
                f"seq {self.next_seq}, {len(self._names)} sources in {SOURCES_NAME}), so "
                f"something else wrote it; restore it from a backup, {_ASIDE}")
        self._note(row)

    def _note(self, row: Row) -> None:
        merged_start, count, sid, source_start = row
        name = self._names[sid]
        self.gaps[name] += source_start - self._acked[name]
        self._acked[name] = source_start + count
        self._spans.append((merged_start, count, name, source_start))
        self._starts.append(merged_start)
        self.next_seq = merged_start + count

    def acked(self, source: str) -> int:
        """The next seq expected from ``source`` (0 if unknown): every seq below it is
        committed (or counted in ``gaps``)."""
        with self._lock:
            return self._acked.get(source, 0)

    def sources(self) -> dict[str, int]:
        """``acked`` per known source."""
        with self._lock:
            return dict(self._acked)

    def spans(self) -> list[tuple[int, int, str, int]]:
        """``(merged_start, count, source, source_start)`` per committed row, in order."""
        with self._lock:
            return list(self._spans)

    def source_of(self, merged_seq: int) -> tuple[str, int]:
        """``(source, source seq)`` of committed merged record ``merged_seq``.

        Raises:
            IndexError: ``merged_seq`` is not committed.
        """
        with self._lock:
            i = bisect.bisect_right(self._starts, merged_seq) - 1
            if i < 0 or merged_seq >= self.next_seq:
                raise IndexError(f"merged seq {merged_seq} is not committed (the intake holds "
                                 f"0-{self.next_seq - 1})")
            start, _, name, source_start = self._spans[i]
            return name, source_start + merged_seq - start

    def append(self, source: str, records: LogRecords) -> tuple[int, list[bytes]]:
        """Commit ``records`` (a batch of ``source``'s log) past what is already committed:
        seqs below ``acked(source)`` are re-sends and skipped. Returns ``acked(source)`` after
        the commit and the merged record bytes appended, in order (for the learner's queue).

        Raises:
            ValueError: the new seqs are not increasing, or the records' shapes are wrong.
            OSError: a write failed; every later call raises too, until the intake is
                reopened (which cuts what was not committed).
        """
        with self._lock:
            if self._failure is not None:
                raise OSError(f"{self.directory}: an earlier commit failed ({self._failure}); "
                              "close and reopen the intake") from self._failure
            acked = self._acked.get(source, 0)
            seqs = records.seq.astype(np.int64)
            new = np.flatnonzero(seqs >= acked)
            if (np.diff(seqs[new]) <= 0).any():
                raise ValueError(f"source {source!r}: seqs past {acked} must increase, got "
                                 f"{seqs[new].tolist()[:20]}")
            self._check_shapes(source, records)
            if not len(new):
                return acked, []
            try:
                return self._commit(source, records, new)
            except BaseException as err:
                self._failure = err
                raise

    def _check_shapes(self, source: str, records: LogRecords) -> None:
        n, d, a = len(records.seq), self.obs_dim, self.act_dim
        want = {"obs": (n, d), "next_obs": (n, d), "action": (n, a), "reward": (n,),
                "terminated": (n,), "truncated": (n,)}
        for key, shape in want.items():
            if getattr(records, key).shape != shape:
                raise ValueError(f"source {source!r}: records.{key} has shape "
                                 f"{getattr(records, key).shape}, the intake needs {shape}")

    def _commit(self, source: str, records: LogRecords, new: np.ndarray) -> tuple[int, list[bytes]]:
        """Write-ahead: the records, synced; then one row per contiguous run, each synced."""
        if source not in self._ids:
            atomic_write_text(self.directory / SOURCES_NAME, json.dumps(self._names + [source]))
            self._ids[source] = len(self._names)
            self._names.append(source)
            self._acked[source] = self.gaps[source] = 0
        assert self._log is not None
        raws = [self._log.append(records.obs[i], records.action[i], float(records.reward[i]),
                                 records.next_obs[i], bool(records.terminated[i]),
                                 bool(records.truncated[i])) for i in new]
        self._log.sync()
        seqs, at = records.seq[new].astype(np.int64), self.next_seq
        for run in np.split(seqs, np.flatnonzero(np.diff(seqs) != 1) + 1):
            row = (at, len(run), self._ids[source], int(run[0]))
            os.write(self._fd, pack_row(row))  # 28 bytes: one write, whole or torn
            os.fsync(self._fd)
            self._note(row)
            at += len(run)
        return self._acked[source], raws

    def close(self) -> None:
        """Close the merged log (synced) and the ledger; idempotent."""
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Intake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
