"""The run's on-disk transition log: append-only, fixed-size records, each with a CRC32.

Layout of ``<run_dir>/replay.log``: a 24-byte header (``MBPOLOG1``, ``obs_dim`` and
``act_dim`` as little-endian uint32, ``first_seq`` as uint64), then records of
:func:`record_dtype` (``D`` = obs_dim, ``A`` = act_dim)::

    seq u64 | obs f32[D] | action f32[A] | reward f32 | next_obs f32[D]
    | terminated u8 | truncated u8 | pad u8[2] | crc32 u32 (over every byte before it)

``seq`` is the transition's index in the run (``first_seq``, ``first_seq + 1``, ...; a log
started when a run switches from the sync loop begins at its checkpoint's step), so record
``k`` lies at byte ``24 + (k - first_seq) * size`` and a reader fetches any range without
scanning.

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

A kill mid-``write`` leaves a torn tail (a partial record, or a full-length one whose CRC
fails): :func:`read_log` ignores it and :meth:`ReplayLog.open` cuts it off before appending
(the write-ahead-log recipe of databases, e.g. SQLite's WAL checksums).
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"MBPOLOG1"
HEADER = struct.Struct("<8sIIQ")


def record_dtype(obs_dim: int, act_dim: int) -> np.dtype:
    """The packed numpy dtype of one record (see the module docstring)."""
    return np.dtype([("seq", "<u8"), ("obs", "<f4", (obs_dim,)), ("action", "<f4", (act_dim,)),
                     ("reward", "<f4"), ("next_obs", "<f4", (obs_dim,)),
                     ("terminated", "u1"), ("truncated", "u1"), ("pad", "u1", (2,)),
                     ("crc", "<u4")])


@dataclass
class LogRecords:
    """Complete, valid records in order: ``seq`` ``[N]`` uint64, ``obs`` / ``next_obs``
    ``[N, D]``, ``action`` ``[N, A]``, ``reward`` ``[N]`` float32, ``terminated`` /
    ``truncated`` ``[N]`` bool; ``torn_bytes``: bytes after them that were ignored."""

    seq: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    torn_bytes: int = 0

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


def unpack_records(dtype: np.dtype, raw: bytes | memoryview, first_seq: int | None = None,
                   torn_bytes: int = 0) -> LogRecords:
    """Decode whole records from ``raw``; stop at the first bad CRC or out-of-order ``seq``
    (everything after it counts as torn)."""
    n = len(raw) // dtype.itemsize
    arr = np.frombuffer(raw, dtype=dtype, count=n)
    size, good = dtype.itemsize, 0
    expected = first_seq if first_seq is not None else (int(arr["seq"][0]) if n else 0)
    view = memoryview(raw)
    for i in range(n):
        body = view[i * size:(i + 1) * size - 4]
        if zlib.crc32(body) != int(arr["crc"][i]) or int(arr["seq"][i]) != expected + i:
            break
        good += 1
    arr = arr[:good]
    torn = torn_bytes + len(raw) - good * size
    return LogRecords(arr["seq"].copy(), arr["obs"].copy(), arr["action"].copy(),
                      arr["reward"].copy(), arr["next_obs"].copy(),
                      arr["terminated"].astype(bool), arr["truncated"].astype(bool), torn)


def _read_header(f: object, path: Path) -> tuple[int, int, int]:
    head = f.read(HEADER.size)  # type: ignore[attr-defined]
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


def read_log(path: str | Path, obs_dim: int | None = None, act_dim: int | None = None,
             start: int = 0, stop: int | None = None) -> LogRecords:
    """Records with ``start <= seq < stop`` (all by default) of the log at ``path``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a replay log, or one of another ``obs_dim`` / ``act_dim``.
    """
    path = Path(path)
    with open(path, "rb") as f:
        *dims, first = _read_header(f, path)
        _check_dims(path, (dims[0], dims[1]), obs_dim, act_dim)
        dtype = record_dtype(*dims)
        start = max(start, first)
        f.seek(HEADER.size + (start - first) * dtype.itemsize)
        count = -1 if stop is None else max(stop - start, 0) * dtype.itemsize
        raw = f.read(count)
    whole = len(raw) - len(raw) % dtype.itemsize
    return unpack_records(dtype, memoryview(raw)[:whole], start, len(raw) - whole)


def log_first_seq(path: str | Path) -> int:
    """The ``seq`` the log at ``path`` starts at."""
    with open(path, "rb") as f:
        return _read_header(f, Path(path))[2]


class ReplayLog:
    """The append side of the log; one writer per file (the actor).

    Use :meth:`open`, which creates the file or validates it and cuts a torn tail off.
    ``next_seq`` is the ``seq`` of the next append (the number of records appended);
    ``written`` counts those the kernel has (the rest wait in memory for the writer thread).
    ``on_written(raw)``, when set, runs in the writer thread after each record reaches the
    kernel: the actor hands records to the learner there, so the learner never sees a
    transition the log does not have.
    """

    def __init__(self, path: Path, fd: int, obs_dim: int, act_dim: int, next_seq: int,
                 fsync_every_records: int, fsync_every_s: float) -> None:
        self.path, self._fd = path, fd
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.dtype = record_dtype(obs_dim, act_dim)
        self.next_seq = self.written = next_seq
        self.fsync_every_records, self.fsync_every_s = fsync_every_records, fsync_every_s
        self.on_written: Callable[[bytes], None] | None = None
        self._pending: deque[bytes] = deque()  # appended, not yet written (deque ops are atomic)
        self._wake, self._closing = threading.Event(), False
        self._failure: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="replay-log-writer",
                                        daemon=True)
        self._writer.start()

    @classmethod
    def open(cls, path: str | Path, obs_dim: int, act_dim: int, fsync_every_records: int = 50,
             fsync_every_s: float = 1.0, first_seq: int = 0) -> ReplayLog:
        """Open ``path`` for appending; a missing file is created starting at ``first_seq``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            with open(path, "wb") as f:
                f.write(HEADER.pack(MAGIC, obs_dim, act_dim, first_seq))
                f.flush()
                os.fsync(f.fileno())
            next_seq = first_seq
        else:
            records = read_log(path, obs_dim, act_dim)
            first = log_first_seq(path)
            next_seq = first + len(records)
            if records.torn_bytes:  # cut the torn tail: later records must line up
                with open(path, "r+b") as f:
                    f.truncate(HEADER.size + len(records)
                               * record_dtype(obs_dim, act_dim).itemsize)
                    os.fsync(f.fileno())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        return cls(path, fd, obs_dim, act_dim, next_seq, fsync_every_records, fsync_every_s)

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
