"""Weights in shared memory: round trip, and a concurrent writer process never hands the
reader a torn vector; versions only grow."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
import torch

from mbpo_arm.agent.networks import Actor
from mbpo_arm.agent.runtime.weights import (
    WeightsPublisher,
    WeightsReader,
    attach_block,
    create_block,
    flatten,
    unflatten,
)

N = 300_000  # ~1.2 MB per slot: copies take long enough for the writer to race them


def test_flatten_round_trip_and_first_poll() -> None:
    actor = Actor(19, 5, (32, 32))
    vec = flatten(actor.state_dict())
    other = Actor(19, 5, (32, 32))
    other.load_state_dict(unflatten(vec, other.state_dict()))
    for a, b in zip(actor.state_dict().values(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    block = create_block(len(vec))
    try:
        reader = WeightsReader(block)
        assert reader.poll() is None  # nothing published yet
        WeightsPublisher(block).publish(vec, 3)
        got, version, stamp = reader.poll()
        np.testing.assert_array_equal(got, vec)
        assert version == 3 and stamp > 0 and reader.poll() is None
    finally:
        block.close()
        block.shm.unlink()


def _writer(name: str, seconds: float) -> None:
    block = attach_block(name)
    pub = WeightsPublisher(block)
    version, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        version += 1
        pub.publish(np.full(N, version % 2**24, np.float32), version)
    block.close()


@pytest.mark.slow
def test_concurrent_writer_never_yields_a_torn_vector() -> None:
    block = create_block(N)
    ctx = mp.get_context("spawn")
    writer = ctx.Process(target=_writer, args=(block.name, 3.0))
    try:
        writer.start()
        reader, versions = WeightsReader(block, retries=1), []
        while writer.is_alive() or not versions:
            got = reader.poll()
            if got is None:
                continue
            vector, version, _ = got
            assert vector[0] == vector[-1] == version % 2**24, "torn vector"
            assert (vector == vector[0]).all(), "torn vector"
            versions.append(version)
        writer.join()
        assert len(versions) > 10
        assert all(b > a for a, b in zip(versions, versions[1:], strict=False))
    finally:
        if writer.is_alive():
            writer.kill()
        block.close()
        block.shm.unlink()
