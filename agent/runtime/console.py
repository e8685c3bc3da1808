"""Status lines for the terminal, written off the actor's tick.

A write to stderr blocks when its reader is slow: a terminal over a slow link, a full pipe
(``ros2 launch`` reads a node's output through one), a file whose file system is committing
its journal (the learner's checkpoints commit with it). A ``print`` in the tick thread would
turn any of these into a missed deadline. The actor only appends the line to a deque (memory;
``deque`` appends are atomic, no lock the helper could hold); a helper thread polls it and
writes, blocking itself instead of the tick. The actor raises the helper to just below its own
priority (:func:`agent.runtime.priority.raise_thread`): a normal-priority thread holding the
GIL, preempted by the learner, would stall the tick.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import TextIO


class Console:
    """Lines to stderr from a thread of their own.

    Args:
        poll_s: how often the helper looks for new lines (a line waits at most this long).
        capacity: lines held while stderr is blocked; past it the oldest are dropped (and
            counted in :attr:`dropped`) rather than growing without bound.
        stream: where the lines go; ``None``: ``sys.stderr`` as it is at each write.
    """

    def __init__(self, poll_s: float = 0.05, capacity: int = 1000,
                 stream: TextIO | None = None) -> None:
        self.poll_s, self.stream = poll_s, stream
        self._lines: deque[str] = deque(maxlen=capacity)
        self.said, self.shown = 0, 0
        self._busy = self._closing = False
        self._thread = threading.Thread(target=self._loop, name="actor-console", daemon=True)
        self._thread.start()

    @property
    def tid(self) -> int | None:
        """The helper thread's kernel id (to raise its priority)."""
        return self._thread.native_id

    @property
    def dropped(self) -> int:
        """Lines lost because stderr stayed blocked past ``capacity`` lines."""
        return self.said - self.shown - len(self._lines) - int(self._busy)

    def say(self, line: str) -> None:
        """Queue ``line`` for stderr; never blocks."""
        self._lines.append(line)
        self.said += 1

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) until every queued line is written."""
        deadline = time.monotonic() + timeout_s
        while (self._lines or self._busy) and time.monotonic() < deadline:
            time.sleep(0.002)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued and stop the helper; idempotent."""
        self._closing = True
        self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        while True:
            closing = self._closing  # read first: lines said before close are all written
            while self._lines:
                self._busy = True
                line = self._lines.popleft()
                try:
                    print(line, file=self.stream or sys.stderr, flush=True)
                    self.shown += 1
                except (OSError, ValueError):  # stderr closed: the line is lost (dropped)
                    pass
                self._busy = False
            if closing:
                return
            time.sleep(self.poll_s)
