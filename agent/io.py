"""Crash-safe file writes: a killed process leaves the old file or the new one, never a torn one.

Every writer goes through :func:`atomic_file`: write a temporary file in the target's own
directory, flush and ``fsync`` it, ``os.replace`` it onto the target (atomic on POSIX and
Windows when both names are on one filesystem), then ``fsync`` the directory so the rename
itself survives a power cut (the write-fsync-rename-fsync-dir recipe; see Pillai et al. 2014,
"All File Systems Are Not Created Equal", OSDI).

A process killed mid-write leaves an orphan ``.<name>.<pid>.<hex>.tmp`` beside the target; it
never replaces the target and :func:`remove_stale_temporaries` clears it.

:class:`RunLock` keeps a second process from writing a run directory that one already writes.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no flock; a run directory is not locked there
    fcntl = None

import numpy as np
from numpy.lib.npyio import NpzFile

LOCK_FILE = "run.lock"
TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")  # what atomic_file names


def fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory``; a no-op where directories cannot be opened
    (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` atomically once the ``with`` block ends.

    The temporary file is created with ``O_EXCL`` and mode ``0o666`` (less the umask), so the
    result gets ordinary permissions, unlike ``tempfile.mkstemp``'s ``0o600``. On an exception
    the temporary file is removed and the target is left untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` crash-safely."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` crash-safely."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez(path, **arrays)`` (uncompressed, no pickles), crash-safely.

    The name is used as given: no ``.npz`` is appended, unlike ``np.savez`` on a path.
    """
    with atomic_file(path) as f:
        np.savez(f, **arrays)


# zlib.error: a damaged deflate stream; KeyError / IndexError: a broken zip directory.
_CORRUPT_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, zlib.error, KeyError, IndexError)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file into memory (no pickles allowed).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, corrupted or not an ``.npz`` archive; the message
            names the file.
    """
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with data:
            return {name: data[name] for name in data.files}
    except _CORRUPT_ERRORS as err:
        raise ValueError(f"{path}: cannot be read as an .npz archive; the file is corrupted or "
                         f"truncated ({type(err).__name__}: {err})") from err


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``directory``; returns them.

    Only call this when no writer is running in ``directory``.
    """
    stale = sorted(p for p in Path(directory).iterdir() if _TMP_NAME.match(p.name) and p.is_file())
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


class RunLocked(RuntimeError):
    """Another process holds the run directory's lock; the message names its pid."""


class RunLock:
    """An exclusive lock on a run directory (``fcntl.flock`` on ``<run_dir>/run.lock``), held
    until :meth:`release` or this process ends, however it ends: the kernel drops a dead
    process's lock. The file holds the holder's pid, for the message of the next one.

    Children started with ``multiprocessing``'s spawn do not inherit it (their descriptors are
    closed), so the async learner writes the run under its actor's lock and dies with it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLocked` at once."""
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is in use by process {holder} (it holds "
                            f"{self.path}); wait for it to end or stop it, then start again"
                            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with the next holder)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
