"""The run's on-disk transition log: append-only, fixed-size records, each with a CRC32.

Layout of ``<run_dir>/replay.log``: a 24-byte header (``MBPOLOG1``, ``obs_dim`` and
``act_dim`` as little-endian uint32, ``first_seq`` as uint64), then records of
:func:`record_dtype` (``D`` = obs_dim, ``A`` = act_dim)::

    seq u64 | obs f32[D] | action f32[A] | reward f32 | next_obs f32[D]
    | terminated u8 | truncated u8 | pad u8[2] | crc32 u32 (over every byte before it)

``seq`` is the transition's index in the run (``first_seq``, ``first_seq + 1``, ...; a log
started when a run switches from the sync loop begins at its checkpoint's step), so record
``k`` normally lies at byte ``24 + (k - first_seq) * size`` and a reader fetches a range
without scanning: it checks the record it finds there (or counted back from the last one).

Damage. A reader never changes the file. A record is valid when its CRC matches and its
``seq`` is above the previous valid one's; past a bad one the reader scans byte by byte for
the next valid ``seq`` + CRC (a write-ahead log's resynchronisation), so every intact record
is kept; :class:`LogRecords` says what is not there (``missing`` seqs, ``bad_bytes``, and
``torn_bytes`` after the last record: the write a kill or power cut interrupted). The writer,
:meth:`ReplayLog.open`, checks the log against the newest checkpoint: what the checkpoint
holds (``seq < checkpoint_step``) is only reported; a transition lost after it stops the
resume (:class:`LogDamageError`, one line) unless ``accept_log_damage``. A torn tail is moved
into ``replay.log.torn``, so appends start at a record boundary; nothing else is ever cut.

Episode boundaries. A record that ended no episode (neither flag) and whose successor in the
log does not start where it ended was cut by an interruption (a kill, a stop, then a resume
that starts a new episode): readers return it ``truncated``
(:func:`~mbpo_arm.agent.dataset.episode_cut`, the rule the replay buffer applies as well),
so no transition joins two episodes.

Durability. :meth:`ReplayLog.append` only packs the record and queues it in memory; the
log's writer thread writes it with one unbuffered ``os.write`` (usually within a millisecond),
then hands it on (``on_written``: to the learner), and calls ``fsync`` every
``fsync_every_records`` records or ``fsync_every_s`` seconds. Once a record is written, a kill
of the process (SIGKILL included) loses nothing; only a power cut or kernel crash can lose what
the kernel has not yet put on the disk. The actor's tick never touches the file system: an
append to a file can block for tens of milliseconds while the journal commits another
process's large writes (ext4's ``data=ordered`` commits the learner's checkpoints together
with the log's metadata), which stalled the actor's real-time thread when it wrote the log
itself. The price is a window of about a millisecond in which a SIGKILL can lose the newest,
not yet written record; a SIGTERM or SIGINT flushes it (:meth:`ReplayLog.close`).
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mbpo_arm.agent.dataset import episode_cut
from mbpo_arm.agent.io import atomic_write_bytes

MAGIC = b"MBPOLOG1"
HEADER = struct.Struct("<8sIIQ")
SEQ_SPAN = 1 << 40  # a valid record's seq lies at most this far past the previous one's
SCAN_CHUNK = 1 << 16  # bytes searched at a time for the next valid record
RUN_BLOCK = 4096  # records CRC-checked at a time
TORN_SUFFIX = ".torn"


class LogDamageError(ValueError):
    """Transitions after the newest checkpoint are damaged in the log: a resume would lose
    them. The message is one line that says how many and how to continue anyway."""


def record_dtype(obs_dim: int, act_dim: int) -> np.dtype:
    """The packed numpy dtype of one record (see the module docstring)."""
    return np.dtype([("seq", "<u8"), ("obs", "<f4", (obs_dim,)), ("action", "<f4", (act_dim,)),
                     ("reward", "<f4"), ("next_obs", "<f4", (obs_dim,)),
                     ("terminated", "u1"), ("truncated", "u1"), ("pad", "u1", (2,)),
                     ("crc", "<u4")])


def _no_seqs() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class LogRecords:
    """Valid records in order: ``seq`` ``[N]`` uint64, ``obs`` / ``next_obs`` ``[N, D]``,
    ``action`` ``[N, A]``, ``reward`` ``[N]`` float32, ``terminated`` / ``truncated`` ``[N]``
    bool. What was not readable: ``torn_bytes`` after the last record, ``missing`` (int64
    ``seq`` numbers absent between kept records) and ``bad_bytes`` between them."""

    seq: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    torn_bytes: int = 0
    missing: np.ndarray = field(default_factory=_no_seqs)
    bad_bytes: int = 0

    def __len__(self) -> int:
        return len(self.seq)


def pack_record(dtype: np.dtype, seq: int, obs: np.ndarray, action: np.ndarray,
                reward: float, next_obs: np.ndarray, terminated: bool,
                truncated: bool) -> bytes:
    """One record as bytes, CRC included (also what the actor sends the learner)."""
    rec = np.zeros((), dtype=dtype)
    rec["seq"], rec["obs"], rec["action"], rec["reward"] = seq, obs, action, reward
    rec["next_obs"], rec["terminated"], rec["truncated"] = next_obs, terminated, truncated
    raw = bytearray(rec.tobytes())
    raw[-4:] = struct.pack("<I", zlib.crc32(raw[:-4]))
    return bytes(raw)


# ------------------------------------------------------------------------------ scanning
def _valid_seq(view: memoryview, pos: int, size: int, after: int) -> int | None:
    """The ``seq`` of the record at byte ``pos`` when it is valid (its CRC matches, its seq
    in ``(after, after + SEQ_SPAN]``), else ``None``."""
    seq = int.from_bytes(view[pos:pos + 8], "little")
    if not after < seq <= after + SEQ_SPAN:
        return None
    crc = int.from_bytes(view[pos + size - 4:pos + size], "little")
    return seq if zlib.crc32(view[pos:pos + size - 4]) == crc else None


def _resync(view: memoryview, pos: int, size: int, after: int) -> int | None:
    """The offset of the first valid record at or after byte ``pos`` (any alignment), or
    ``None``: every offset's 8 bytes read as a seq, the plausible ones CRC-checked."""
    while pos + size <= len(view):
        count = min(SCAN_CHUNK, len(view) - size - pos + 1)
        seqs = np.ndarray((count,), "<u8", buffer=view, offset=pos, strides=(1,))
        for c in np.flatnonzero((seqs > after) & (seqs <= after + SEQ_SPAN)):
            if _valid_seq(view, pos + int(c), size, after) is not None:
                return pos + int(c)
        pos += count
    return None


def _run_of_valid(view: memoryview, size: int, after: int,
                  stop: int | None) -> tuple[int, int]:
    """How many records from byte 0 are valid with consecutive seqs below ``stop``, and the
    first one's seq (``(0, 0)``: none)."""
    n = len(view) // size
    seq0 = _valid_seq(view, 0, size, after) if n else None
    if seq0 is None or (stop is not None and seq0 >= stop):
        return 0, 0
    n = n if stop is None else min(n, stop - seq0)
    seqs = np.ndarray((n,), "<u8", buffer=view, offset=0, strides=(size,))
    crcs = np.ndarray((n,), "<u4", buffer=view, offset=size - 4, strides=(size,))
    for lo in range(0, n, RUN_BLOCK):  # block by block: damage ends the run early
        hi = min(lo + RUN_BLOCK, n)
        computed = np.fromiter((zlib.crc32(view[i * size:(i + 1) * size - 4])
                                for i in range(lo, hi)), np.uint32, hi - lo)
        ok = (computed == crcs[lo:hi]) & (seqs[lo:hi] == np.arange(seq0 + lo, seq0 + hi,
                                                                   dtype=np.uint64))
        if not ok.all():
            return lo + int(np.argmin(ok)), seq0
    return n, seq0


@dataclass
class _Scan:
    offsets: list[int] = field(default_factory=list)  # of the valid records, in ``view``
    seqs: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    bad_bytes: int = 0
    end: int = 0  # where scanning stopped: after the last valid record, or at ``successor``
    successor: int | None = None  # offset of the first valid record with seq >= stop


def _scan(view: memoryview, size: int, after: int, stop: int | None = None,
          base: int | None = None) -> _Scan:
    """Every valid record of ``view`` from byte 0 with ``after < seq < stop``, resynchronising
    past bad bytes; seqs from ``base`` (default ``after + 1``) on that are absent count as
    missing."""
    found, pos = _Scan(), 0
    expect = after + 1 if base is None else base
    while pos + size <= len(view):
        run, seq0 = _run_of_valid(view[pos:], size, after, stop)
        if run:  # consecutive valid records, checked in bulk
            found.missing.extend(range(max(after + 1, expect), seq0))
            found.offsets.extend(range(pos, pos + run * size, size))
            found.seqs.extend(range(seq0, seq0 + run))
            after, pos = seq0 + run - 1, pos + run * size
            continue
        if _valid_seq(view, pos, size, after) is not None:  # valid, so at or past stop
            found.missing.extend(range(max(after + 1, expect), stop))
            found.successor = pos
            break
        nxt = _resync(view, pos + 1, size, after)
        if nxt is None:
            break  # no valid record after pos: the tail
        found.bad_bytes += nxt - pos
        pos = nxt
    found.end = pos
    return found


def _records(view: memoryview, dtype: np.dtype, found: _Scan, first: int, torn_bytes: int,
             missing: list[int]) -> LogRecords:
    """The records ``found`` lists from index ``first`` on, as arrays; a record followed in
    ``view`` by one that does not continue its episode comes back ``truncated``."""
    size, offsets = dtype.itemsize, found.offsets[first:]
    if offsets and offsets[-1] - offsets[0] == (len(offsets) - 1) * size:  # contiguous
        arr = np.frombuffer(view, dtype, count=len(offsets), offset=offsets[0])
    else:
        arr = np.frombuffer(b"".join(view[o:o + size] for o in offsets), dtype)
    terminated, truncated = arr["terminated"].astype(bool), arr["truncated"].astype(bool)
    following = arr["obs"][1:]
    if found.successor is not None and len(arr):
        succ = np.frombuffer(view, dtype, count=1, offset=found.successor)
        following = np.concatenate([following, succ["obs"]])
    if len(following):
        n = len(following)
        truncated[:n] |= episode_cut(arr["next_obs"][:n], terminated[:n] | truncated[:n],
                                     following)
    return LogRecords(arr["seq"].copy(), arr["obs"].copy(), arr["action"].copy(),
                      arr["reward"].copy(), arr["next_obs"].copy(), terminated, truncated,
                      torn_bytes, np.asarray(missing, np.int64), found.bad_bytes)


def unpack_records(dtype: np.dtype, raw: bytes | memoryview, first_seq: int | None = None,
                   torn_bytes: int = 0) -> LogRecords:
    """Decode the valid records of ``raw`` (one or more records: the learner's queue
    messages); ``first_seq``: the lowest seq expected (``None``: any)."""
    view = memoryview(raw)
    found = _scan(view, dtype.itemsize, -1 if first_seq is None else first_seq - 1)
    return _records(view, dtype, found, 0, torn_bytes + len(view) - found.end, found.missing)


# ------------------------------------------------------------------------------- reading
def _read_header(f: BinaryIO, path: Path) -> tuple[int, int, int]:
    head = f.read(HEADER.size)
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise ValueError(f"{path}: not a replay log (no {MAGIC.decode()} header)")
    _, obs_dim, act_dim, first_seq = HEADER.unpack(head)
    return obs_dim, act_dim, first_seq


def _check_dims(path: Path, found: tuple[int, int], obs_dim: int | None,
                act_dim: int | None) -> None:
    for name, got, want in (("obs_dim", found[0], obs_dim), ("act_dim", found[1], act_dim)):
        if want is not None and got != want:
            raise ValueError(f"{path}: the log holds transitions with obs_dim={found[0]}, "
                             f"act_dim={found[1]}; this run has {name}={want} (a log of "
                             "another task or backend)")


def _seq_at(f: BinaryIO, pos: int, size: int, length: int) -> int | None:
    """The seq of a valid record at file offset ``pos``, else ``None``."""
    if pos < HEADER.size or pos + size > length:
        return None
    f.seek(pos)
    return _valid_seq(memoryview(f.read(size)), 0, size, -1)


def _anchor(f: BinaryIO, length: int, size: int, first: int, start: int) -> int | None:
    """The file offset of record ``start`` where no gap precedes it: its slot counted from
    the header, or counted back from the last whole slot; the end of the last record when the
    log ends before ``start``; ``None`` when neither slot holds it (damage: the caller
    scans)."""
    nominal = HEADER.size + (start - first) * size
    if _seq_at(f, nominal, size, length) == start:
        return nominal
    last = HEADER.size + ((length - HEADER.size) // size - 1) * size
    seq = _seq_at(f, last, size, length)
    if seq is not None and seq < start:
        return last + size  # nothing at or after start (at most a torn tail)
    if seq is not None:
        guess = last - (seq - start) * size
        if _seq_at(f, guess, size, length) == start:
            return guess
    return None


def read_log(path: str | Path, obs_dim: int | None = None, act_dim: int | None = None,
             start: int = 0, stop: int | None = None) -> LogRecords:
    """The valid records with ``start <= seq < stop`` (all by default) of the log at ``path``;
    the file is only read.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a replay log, or one of another ``obs_dim`` / ``act_dim``.
    """
    path = Path(path)
    with open(path, "rb") as f:
        *dims, first = _read_header(f, path)
        _check_dims(path, (dims[0], dims[1]), obs_dim, act_dim)
        dtype = record_dtype(*dims)
        size, length = dtype.itemsize, os.fstat(f.fileno()).st_size
        if stop is not None and stop <= start:
            return unpack_records(dtype, b"")
        pos = _anchor(f, length, size, first, start)
        after = start - 1 if pos is not None else -1  # the header's first_seq has no CRC
        pos = HEADER.size if pos is None else pos  # damage before start: scan it all
        f.seek(pos)
        want = -1 if stop is None or after < start - 1 else (stop - start + 1) * size
        raw = f.read(want)
        found = _scan(memoryview(raw), size, after, stop, first)
        if found.successor is None and pos + len(raw) < length:  # damage in range: read on
            raw += f.read()
            found = _scan(memoryview(raw), size, after, stop, first)
    skip = next((i for i, s in enumerate(found.seqs) if s >= start), len(found.seqs))
    torn = len(raw) - found.end if found.successor is None else 0
    return _records(memoryview(raw), dtype, found, skip, torn,
                    [s for s in found.missing if s >= start])


def log_first_seq(path: str | Path) -> int:
    """The ``seq`` the log at ``path`` starts at."""
    with open(path, "rb") as f:
        return _read_header(f, Path(path))[2]


# ------------------------------------------------------------------- opening for appends
def _spans(seqs: list[int], most: int = 4) -> str:
    """``seq 650`` / ``seqs 650-652, 700`` (the first ``most`` runs, then how many more)."""
    runs: list[list[int]] = []
    for s in seqs:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most])
    more = f" and {len(runs) - most} more runs" if len(runs) > most else ""
    return f"seq{'s' if len(seqs) > 1 else ''} {shown}{more}"


def _records_word(n: int) -> str:
    return f"{n} record{'s' if n != 1 else ''}"


def move_torn_tail(path: str | Path, offset: int) -> Path:
    """The writer's repair before it appends: the bytes of ``path`` from ``offset`` on go into
    ``<log>.torn`` beside it (``<log>.<k>.torn`` when that holds other bytes), synced, then
    the log is cut at ``offset``, a record boundary. Returns the ``.torn`` file."""
    path = Path(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        tail, k = f.read(), 1
        while True:
            dest = path.with_name(f"{path.name}{'' if k == 1 else f'.{k}'}{TORN_SUFFIX}")
            if not dest.exists() or dest.read_bytes() == tail:
                break
            k += 1
        if not dest.exists():
            atomic_write_bytes(dest, tail)
        f.truncate(offset)
        os.fsync(f.fileno())
    return dest


@dataclass
class LogCheck:
    """What an existing log holds, against the newest checkpoint (``checkpoint_step``: it holds
    the transitions ``seq < checkpoint_step``); see :func:`check_log`."""

    path: Path
    checkpoint_step: int
    kept: int  # valid records
    kept_after: int  # ... with seq >= checkpoint_step
    end: int  # one past the last valid record's seq (first_seq when there is none)
    missing: list[int]  # seqs absent between valid records
    torn_bytes: int  # after the last valid record
    torn_seqs: list[int]  # the seqs the torn tail presumably held
    last_open: bool  # the last valid record ended no episode

    @property
    def lost(self) -> list[int]:
        """Transitions the log lacks that the checkpoint does not hold either."""
        return sorted(s for s in self.missing + self.torn_seqs if s >= self.checkpoint_step)

    @property
    def covered(self) -> list[int]:
        """Transitions the log lacks that the checkpoint holds."""
        return sorted(s for s in self.missing + self.torn_seqs if s < self.checkpoint_step)

    def refusal(self) -> str:
        """The one line that stops a resume over lost transitions."""
        lost, step = self.lost, self.checkpoint_step
        where = f"after the newest checkpoint (step {step})" if step else "(no checkpoint yet)"
        return (f"{self.path}: {_records_word(len(lost))} {where} "
                f"{'is' if len(lost) == 1 else 'are'} damaged "
                f"({_spans(lost)}) and would be lost; {_records_word(self.kept_after)} after "
                "it are intact; to continue with them anyway, resume with "
                "resume.accept_log_damage=true")

    def notices(self, moved: Path | None, accepted: bool) -> list[str]:
        """One line per thing found: damage the checkpoint holds, damage accepted, a torn
        tail moved aside, a log that ends before the checkpoint."""
        lines, step, ahead = [], self.checkpoint_step, self.end + len(self.torn_seqs)
        if self.covered:
            n = len(self.covered)
            lines.append(f"{self.path}: {_records_word(n)} missing or damaged "
                         f"({_spans(self.covered)}); the newest checkpoint (step {step}) "
                         f"holds {'it' if n == 1 else 'them'}; the log is kept as it is")
        if accepted and self.lost:
            lines.append(f"{self.path}: resume.accept_log_damage=true: "
                         f"{_records_word(len(self.lost))} lost ({_spans(self.lost)}); "
                         f"the {_records_word(self.kept)} intact are kept")
        if moved is not None:
            lines.append(f"{self.path}: a torn tail of {self.torn_bytes} bytes after seq "
                         f"{self.end - 1} moved to {moved.name}; appending at a record "
                         "boundary")
        if step > ahead:
            lines.append(f"{self.path}: ends at transition {ahead}, the newest checkpoint at "
                         f"step {step}: the {step - ahead} transitions between are only in "
                         f"the checkpoint; appending from {step}")
        return lines


def check_log(path: str | Path, obs_dim: int, act_dim: int,
              checkpoint_step: int = 0) -> LogCheck:
    """Read the log at ``path`` (never changing it) and compare it with the newest
    checkpoint's step."""
    r = read_log(path, obs_dim, act_dim)
    end = int(r.seq[-1]) + 1 if len(r) else log_first_seq(path)
    size = record_dtype(obs_dim, act_dim).itemsize
    torn = list(range(end, end + -(-r.torn_bytes // size)))
    last_open = bool(len(r) and not (r.terminated[-1] or r.truncated[-1]))
    return LogCheck(Path(path), checkpoint_step, len(r), int((r.seq >= checkpoint_step).sum()),
                    end, r.missing.tolist(), r.torn_bytes, torn, last_open)


class ReplayLog:
    """The append side of the log; one writer per file (the actor).

    Use :meth:`open`, which creates the file, or checks it and moves a torn tail aside.
    ``next_seq`` is the ``seq`` of the next append (the run's transitions so far);
    ``written`` counts those the kernel has (the rest wait in memory for the writer thread).
    ``on_written(raw)``, when set, runs in the writer thread after each record reaches the
    kernel: the actor hands records to the learner there, so the learner never sees a
    transition the log does not have. ``check``: what :meth:`open` found in an existing log
    (``None`` for a new one).
    """

    def __init__(self, path: Path, fd: int, obs_dim: int, act_dim: int, next_seq: int,
                 fsync_every_records: int, fsync_every_s: float) -> None:
        self.path, self._fd = path, fd
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.dtype = record_dtype(obs_dim, act_dim)
        self.next_seq = self.written = next_seq
        self.fsync_every_records, self.fsync_every_s = fsync_every_records, fsync_every_s
        self.on_written: Callable[[bytes], None] | None = None
        self.check: LogCheck | None = None
        self._pending: deque[bytes] = deque()  # appended, not yet written (deque ops are atomic)
        self._wake, self._closing = threading.Event(), False
        self._failure: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="replay-log-writer",
                                        daemon=True)
        self._writer.start()

    @classmethod
    def open(cls, path: str | Path, obs_dim: int, act_dim: int, fsync_every_records: int = 50,
             fsync_every_s: float = 1.0, first_seq: int = 0, checkpoint_step: int = 0,
             accept_log_damage: bool = False) -> ReplayLog:
        """Open ``path`` for appending; a missing file is created starting at ``first_seq``.

        An existing log is checked against ``checkpoint_step`` (the newest checkpoint's step;
        0: none) and kept as it is; its damage is reported on stderr, one line each. A torn
        tail is moved into a ``.torn`` file beside it; the next append's seq is the larger of
        the log's end and ``checkpoint_step``.

        Raises:
            LogDamageError: transitions at or after ``checkpoint_step`` are damaged or torn
                and ``accept_log_damage`` is false (nothing was changed).
            ValueError: not a replay log, or one of another ``obs_dim`` / ``act_dim``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        check = None
        if not path.exists() or path.stat().st_size == 0:
            with open(path, "wb") as f:
                f.write(HEADER.pack(MAGIC, obs_dim, act_dim, first_seq))
                f.flush()
                os.fsync(f.fileno())
            next_seq = first_seq
        else:
            check = check_log(path, obs_dim, act_dim, checkpoint_step)
            if check.lost and not accept_log_damage:
                raise LogDamageError(check.refusal())
            moved = None
            if check.torn_bytes:
                moved = move_torn_tail(path, path.stat().st_size - check.torn_bytes)
            for line in check.notices(moved, accept_log_damage):
                print(line, file=sys.stderr, flush=True)
            next_seq = max(check.end, checkpoint_step)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        log = cls(path, fd, obs_dim, act_dim, next_seq, fsync_every_records, fsync_every_s)
        log.check = check
        return log

    @property
    def open_episode(self) -> bool:
        """The log's newest record at :meth:`open` ended no episode: the next append, the
        first of a new episode, marks it cut (``truncated``, see the module docstring)."""
        return self.check is not None and self.check.last_open

    @property
    def writer_tid(self) -> int | None:
        """The writer thread's kernel id (to give it a real-time priority too)."""
        return self._writer.native_id

    def append(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
               terminated: bool, truncated: bool) -> bytes:
        """Queue one transition as record ``next_seq`` for the writer thread and return its
        bytes; touches only memory (see the module docstring).

        Raises:
            OSError: an earlier write failed (disk full, file system gone); nothing after the
                failed record was written.
        """
        self._raise_failure()
        raw = pack_record(self.dtype, self.next_seq, obs, action, reward, next_obs, terminated,
                          truncated)
        self._pending.append(raw)
        self.next_seq += 1
        self._wake.set()
        return raw

    def _write_loop(self) -> None:
        """Write pending records in order (one unbuffered ``os.write`` each), hand each to
        ``on_written``, and ``fsync`` every ``fsync_every_records`` or ``fsync_every_s``."""
        unsynced, last_sync = 0, time.monotonic()
        try:
            while True:
                self._wake.wait(timeout=self.fsync_every_s)
                self._wake.clear()
                while self._pending:
                    view = memoryview(self._pending[0])
                    while view:  # a regular file takes it in one write; loop for a short one
                        view = view[os.write(self._fd, view):]
                    raw = self._pending.popleft()
                    self.written += 1
                    unsynced += 1
                    if self.on_written is not None:
                        self.on_written(raw)
                if unsynced and (unsynced >= self.fsync_every_records
                                 or time.monotonic() - last_sync >= self.fsync_every_s):
                    os.fsync(self._fd)
                    unsynced, last_sync = 0, time.monotonic()
                if self._closing:
                    return
        except BaseException as err:  # noqa: BLE001 - reported by append / flush
            self._failure = err

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until the writer thread has written every appended record.

        Raises:
            OSError: a write failed, or the disk took longer than ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while self.written < self.next_seq and self._failure is None:
            if time.monotonic() > deadline:
                raise OSError(f"{self.path}: {self.next_seq - self.written} records still "
                              f"unwritten after {timeout_s:.0f} s (is the disk hanging?)")
            self._wake.set()
            time.sleep(0.0005)
        self._raise_failure()

    def _raise_failure(self) -> None:
        """Report the writer thread's failure, if it had one, naming the file and the first
        record that is not on the disk."""
        if self._failure is not None:
            raise OSError(f"{self.path}: writing the replay log failed: {self._failure}; "
                          f"records from {self.written} on are not on disk") from self._failure

    def sync(self) -> None:
        """Write what is pending, then ``fsync`` in the caller: everything appended survives
        a power cut."""
        self.flush()
        os.fsync(self._fd)

    def close(self) -> None:
        """Write what is pending, stop the writer thread, sync and close; idempotent."""
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                self._closing = True
                self._wake.set()
                self._writer.join()
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
