"""The actor's status lines: written in order by the console's thread, never by the tick."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TextIO

import pytest

from mbpo_arm.agent.runtime.console import Console

BIG = "x" * 200_000  # more than a pipe holds: the helper blocks writing it until it is read


@pytest.fixture
def pipe() -> Iterator[tuple[int, TextIO]]:
    """A real pipe that nobody reads until the test does: its read end and a stream on its
    write end."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w")
    yield read_fd, stream
    stream.close()
    os.close(read_fd)


def blocked_console(stream: TextIO, capacity: int = 1000) -> Console:
    """A console whose helper is stuck writing ``BIG`` to the unread pipe."""
    console = Console(poll_s=0.001, capacity=capacity, stream=stream)
    console.say(BIG)
    while not console._busy:
        time.sleep(0.001)
    return console


def read_until(fd: int, last: str) -> list[str]:
    data = b""
    while not data.endswith(f"{last}\n".encode()):
        data += os.read(fd, 1 << 16)
    return data.decode().splitlines()


def test_lines_are_written_in_order_while_a_blocked_stream_holds_only_the_helper(
        pipe: tuple[int, TextIO]) -> None:
    console = blocked_console(pipe[1])
    try:
        for i in range(100):
            console.say(f"line {i}")  # returns at once although stderr is blocked
        assert console.said == 101 and console.shown == 0 and console.dropped == 0
        lines = read_until(pipe[0], "line 99")
        console.flush()
        assert console.shown == 101
        assert lines[0] == BIG and lines[1:] == [f"line {i}" for i in range(100)]
    finally:
        console.close()


def test_a_full_console_drops_the_oldest_lines_and_counts_them(
        pipe: tuple[int, TextIO]) -> None:
    console = blocked_console(pipe[1], capacity=10)
    try:
        for i in range(25):
            console.say(f"line {i}")
        assert console.dropped == 15  # 10 held, the blocked one in flight
        lines = read_until(pipe[0], "line 24")
        assert lines[1:] == [f"line {i}" for i in range(15, 25)]
    finally:
        console.close()
