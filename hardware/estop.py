"""Rule 8: the latched emergency stop and its triggers.

:class:`EStop` latches on :meth:`EStop.trigger` from any source and stays latched until an
explicit :meth:`EStop.reset`. Triggers provided here:

- a key in the terminal (:class:`KeyTrigger`: a thread reading stdin in cbreak mode, started
  only when stdin is a TTY; ``r`` resets a latched stop);
- a signal (:func:`install_signal`, e.g. ``kill -USR1 <pid>``);
- a file (:meth:`EStop.poll`: latched while the file exists; the shield polls every tick).

The ROS 2 backend adds a topic by calling ``estop.trigger("ros2 topic")``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class EStop:
    """A latched emergency stop, safe to trigger from any thread or a signal handler.

    Args:
        file: a path whose existence triggers the stop (checked by :meth:`poll`).
    """

    def __init__(self, file: str | Path | None = None) -> None:
        self.file = Path(file).expanduser() if file is not None else None
        self._latched = False
        self.source: str | None = None
        self.latched_at: float | None = None  # time.monotonic() of the trigger
        self.triggers = 0
        self._listeners: list[Callable[[str], None]] = []

    @property
    def latched(self) -> bool:
        """Whether the stop holds the arm."""
        return self._latched

    def trigger(self, source: str) -> None:
        """Latch the stop (idempotent; the first source is kept). Takes no lock, so that a
        signal handler can call it while another thread is inside."""
        self.triggers += 1
        if not self._latched:
            self.source, self.latched_at = source, time.monotonic()
            self._latched = True
            for listener in list(self._listeners):
                listener(source)

    def reset(self) -> None:
        """Clear the stop. Raises RuntimeError while the trigger file still exists."""
        if self.file is not None and self.file.exists():
            raise RuntimeError(f"e-stop: remove {self.file} before resetting")
        self._latched, self.source, self.latched_at = False, None, None

    def poll(self) -> bool:
        """Trigger if the stop file exists; returns :attr:`latched`."""
        if self.file is not None and not self._latched and self.file.exists():
            self.trigger(f"file {self.file}")
        return self._latched

    def on_trigger(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(source)`` when the stop latches (e.g. to print a line)."""
        self._listeners.append(listener)


# -------------------------------------------------------------------------- the signal
_SIGNAL_STOPS: list[EStop] = []
_PREVIOUS: dict[int, Any] = {}


def install_signal(estop: EStop, name: str = "SIGUSR1") -> bool:
    """``kill -<name> <pid>`` triggers ``estop`` (every e-stop registered for that signal in
    this process). Only the main thread may install handlers: elsewhere returns False."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signum = int(getattr(signal, name))
    _SIGNAL_STOPS.append(estop)
    if signum not in _PREVIOUS:
        _PREVIOUS[signum] = signal.signal(signum, _on_signal)
    return True


def uninstall_signal(estop: EStop) -> None:
    """Forget ``estop``; the previous handler comes back once none is left."""
    if estop in _SIGNAL_STOPS:
        _SIGNAL_STOPS.remove(estop)
    if not _SIGNAL_STOPS and threading.current_thread() is threading.main_thread():
        for signum, previous in _PREVIOUS.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        _PREVIOUS.clear()


def _on_signal(signum: int, frame: Any) -> None:
    del frame
    for estop in list(_SIGNAL_STOPS):
        estop.trigger(f"signal {signal.Signals(signum).name}")


# ----------------------------------------------------------------------------- the key
class KeyTrigger:
    """A thread that reads single keys from a terminal: ``key`` triggers ``estop``, ``r``
    resets it; other keys go to the callbacks of :meth:`on_key` (the process has one reader
    of its terminal: :func:`process_keys`).

    The terminal is put in cbreak mode (keys arrive without Enter, output is unchanged) and
    restored by :meth:`stop`. Nothing starts when ``stream`` is not a TTY (a pipe, a file, a
    process without a terminal). ``estop=None``: a reader for :meth:`on_key` only.
    """

    def __init__(self, estop: EStop | None, key: str | None = "e",
                 stream: IO[str] | None = None) -> None:
        self.estop, self.key = estop, key
        self.stream = stream if stream is not None else sys.stdin
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved: Any = None

    @property
    def running(self) -> bool:
        """Whether the reading thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def on_key(self, keys: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(key)`` (on the reader's thread) for each of ``keys`` typed."""
        for key in keys:
            self._callbacks.setdefault(key, []).append(callback)

    def start(self) -> bool:
        """Start reading; False (nothing started) when the stream is not a TTY."""
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return False
        if not os.isatty(fd):
            return False
        import termios
        import tty

        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._thread = threading.Thread(target=self._run, args=(fd,), name="estop-key",
                                        daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop reading and restore the terminal."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None

    def _run(self, fd: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chars = os.read(fd, 32).decode(errors="ignore")
            except OSError:
                return
            for ch in chars:
                if self.estop is not None and ch == self.key:
                    self.estop.trigger(f"key {self.key!r}")
                elif self.estop is not None and ch == "r" and self.estop.latched:
                    try:
                        self.estop.reset()
                    except RuntimeError as err:
                        print(err, file=sys.stderr, flush=True)
                for callback in list(self._callbacks.get(ch, ())):
                    callback(ch)


# ------------------------------------------------------------------ the process's stop
_PROCESS: EStop | None = None
_KEYS: KeyTrigger | None = None  # the process's reader of its terminal, once one runs


def process_keys() -> KeyTrigger | None:
    """The process's one reader of stdin's keys: the e-stop's when it runs, else a new one
    (started, restored at exit). ``None`` when stdin is not a TTY."""
    if _KEYS is not None and _KEYS.running:
        return _KEYS
    reader = KeyTrigger(None, None)
    return reader if _start_keys(reader) else None


def _start_keys(reader: KeyTrigger) -> bool:
    """Start ``reader`` as the process's reader of its terminal (stopped at exit, which
    restores the terminal); False when stdin is not a TTY."""
    global _KEYS
    if not reader.start():
        return False
    import atexit

    atexit.register(reader.stop)
    _KEYS = reader
    return True


def process_estop(key: str | None = "e", signal_name: str | None = "SIGUSR1",
                  file: str | None = None) -> EStop:
    """The one e-stop of this process, shared by all its shielded robots (one button stops
    every arm the process drives). Its triggers start on the first call; later calls return
    it as it is."""
    global _PROCESS
    if _PROCESS is not None:
        return _PROCESS
    estop = _PROCESS = EStop(file)
    estop.on_trigger(lambda source: print(
        f"E-STOP latched ({source}): holding position until reset"
        + (" (press r)" if key else ""), file=sys.stderr, flush=True))
    if signal_name is not None:
        install_signal(estop, signal_name)
    if key is not None and _start_keys(KeyTrigger(estop, key)):
        print(f"e-stop: press {key!r} to stop the arm, r to reset", file=sys.stderr,
              flush=True)
    return estop
