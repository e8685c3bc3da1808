"""The operator's gate before the next episode (``runtime.episode_gate``).

After an episode's reset the async actor holds position and polls a gate every tick until the
operator releases it (:class:`agent.runtime.actor.Actor`). A gate has ``what`` (what it waits
for, for the one line the actor prints), ``arm()`` (a wait begins), ``released()`` (polled
every tick; never blocks; ``True`` once per release) and ``close()``.

- ``key``: Enter in the terminal (:class:`SignalGate` fed by the process's one reader of
  stdin, :func:`hardware.estop.process_keys`, which the e-stop key shares);
- ``file``: a path whose appearance releases it (:class:`FileGate`; the file is deleted, so
  each episode needs a new one);
- ``topic``: ``std_msgs/Bool`` ``true`` on the ROS 2 backend's ``next_episode_topic``
  (:class:`SignalGate` fed by :attr:`hardware.ros2.Ros2Robot.on_next_episode`).

Key presses and topic messages count only once a wait has begun (an Enter typed during an
episode does not let the next one start unseen); a gate file that is already there when the
wait begins releases it (the file is an explicit, one-off permission).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mbpo_arm.hardware.estop import process_keys

GATE_KEYS = "\n\r"  # Enter (cbreak mode keeps the terminal's CR -> NL mapping; both count)


class SignalGate:
    """Released by :meth:`press`, from any thread (a key reader, a topic callback)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.source: str | None = None  # what released the last wait
        self._pressed = threading.Event()
        self._armed = False

    def arm(self) -> None:
        """A wait begins: earlier presses do not count."""
        self._pressed.clear()
        self._armed = True

    def press(self, source: str = "") -> None:
        """Release the current wait (ignored while none is armed)."""
        if self._armed:
            self.source = source or self.what
            self._pressed.set()

    def released(self) -> bool:
        """Whether the operator released the wait (once per wait)."""
        if not self._pressed.is_set():
            return False
        self._pressed.clear()
        self._armed = False
        return True

    def close(self) -> None:
        self._armed = False


class FileGate:
    """Released by the appearance of ``path``, which it then deletes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.what = f"the file {self.path} (touch it)"
        self.source: str | None = None

    def arm(self) -> None:
        """A wait begins (a file already there releases it at the first poll)."""

    def released(self) -> bool:
        """Whether the file exists; it is consumed (deleted) if so."""
        if not self.path.exists():
            return False
        self.path.unlink(missing_ok=True)
        self.source = f"file {self.path}"
        return True

    def close(self) -> None:
        pass


def key_gate() -> SignalGate:
    """Enter in this process's terminal releases the wait.

    Raises:
        RuntimeError: stdin is not a terminal (a pipe, a service, a launch file's process).
    """
    keys = process_keys()
    if keys is None:
        raise RuntimeError("runtime.episode_gate=key needs a terminal on stdin to read Enter "
                           "from; run it in a terminal, or use runtime.episode_gate=file "
                           "(with runtime.gate_file=<path>) or topic (backend=ros2)")
    gate = SignalGate("Enter in this terminal")
    keys.on_key(GATE_KEYS, lambda key: gate.press("key Enter"))
    return gate


def topic_gate(backend: Any) -> SignalGate:
    """``true`` on the ROS 2 arm's ``next_episode_topic`` releases the wait; ``backend`` is
    the control loop's backend (a ``Ros2Robot``; its callback runs on the loop's thread).

    Raises:
        RuntimeError: the backend has no next-episode topic (not the ros2 backend).
    """
    if not hasattr(backend, "on_next_episode"):
        raise RuntimeError("runtime.episode_gate=topic needs backend=ros2 (the topic is "
                           "backend.next_episode_topic); use key or file with this backend")
    topic = backend.config.next_episode_topic
    gate = SignalGate(f"true on {topic} (ros2 topic pub --once {topic} std_msgs/msg/Bool "
                      "'{data: true}')")
    backend.on_next_episode = gate.press
    return gate


def make_gate(kind: str | None, gate_file: str | None = None, backend: Any = None) -> Any:
    """The gate ``runtime.episode_gate`` names (``None`` for none); errors at start-up."""
    if kind is None:
        return None
    if kind == "key":
        return key_gate()
    if kind == "file":
        if not gate_file:
            raise RuntimeError("runtime.episode_gate=file needs runtime.gate_file=<path>")
        return FileGate(gate_file)
    if kind == "topic":
        return topic_gate(backend)
    raise ValueError(f"runtime.episode_gate={kind!r} is not allowed; choose key, file, topic")
