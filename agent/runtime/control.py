"""The lock-free control block the supervisor, the actor and the learner share.

A ``multiprocessing`` ``RawArray`` of int64, each word written by one side only, so no lock
is needed and a process killed at any instant cannot leave one held (a killed holder of an
``Event``'s or a ``Queue``'s lock would hang the survivors).
"""

from __future__ import annotations

from multiprocessing.context import BaseContext
from typing import Any

ACTOR_STEPS = 0  # actor: transitions appended to the log (next seq)
STOP_AT = 1  # supervisor: >= 0 asks the learner to ingest this many, checkpoint and exit
LEARNER_STEPS = 2  # learner: transitions in its replay
UPDATES = 3  # learner: SAC updates so far
CHECKPOINT_STEP = 4  # learner: env steps of its newest checkpoint (-1: none)
HEARTBEAT_NS = 5  # learner: time.monotonic_ns() of its latest loop
PUBLISHED = 6  # learner: newest published weights version (-1: none)
READY = 7  # learner: 1 once restored and caught up from the log
REACHED = 8  # learner: env steps of the evaluation that reached trainer.stop_at (-1: none)
WORDS = 9


def make_control(ctx: BaseContext) -> Any:
    """A zeroed control block; ``STOP_AT``, ``CHECKPOINT_STEP``, ``PUBLISHED`` and ``REACHED``
    start at -1."""
    control = ctx.RawArray("q", WORDS)
    control[STOP_AT] = control[CHECKPOINT_STEP] = control[PUBLISHED] = control[REACHED] = -1
    return control
