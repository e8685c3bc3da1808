"""Versioned, double-buffered policy weights in ``multiprocessing.shared_memory``.

One writer (the learner) and any number of readers (the actor). Layout of the block, with
``N`` the number of float32 weights::

    header int64[8]: generation | n | version[2] | crc32[2] | published_ns[2]
    slot 0 float32[N] | slot 1 float32[N]

The active slot is ``generation % 2``. :meth:`WeightsPublisher.publish` writes the inactive
slot and its version, CRC and time stamp, then bumps ``generation`` with one aligned 8-byte
store, which flips the slot. A reader notes ``generation``, copies the active slot, and
accepts the copy only if ``generation`` is unchanged afterwards: the writer touches a slot
only after flipping away from it, so an unchanged generation means the copy was not being
overwritten (a seqlock over two buffers, Lameter 2005, "Effective synchronization on Linux
/NUMA systems"; the double buffer keeps the writer from ever waiting). The CRC32 of the slot
is checked as well, so even a memory-ordering surprise on a weakly ordered CPU cannot hand the
actor a torn vector. Readers never block: a failed read keeps the last good weights.

A writer killed mid-publish leaves the previous generation intact: nothing to repair.
"""

from __future__ import annotations

import time
import zlib
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import torch

_GEN, _N, _VER, _CRC, _STAMP = 0, 1, 2, 4, 6
_HEADER_WORDS = 8


def block_size(n: int) -> int:
    """Bytes of a block for ``n`` float32 weights."""
    return _HEADER_WORDS * 8 + 2 * n * 4


def flatten(state: dict[str, torch.Tensor]) -> np.ndarray:
    """A module's float state dict as one float32 vector ``[N]`` (keys in dict order)."""
    return torch.cat([v.detach().reshape(-1).float().cpu() for v in state.values()]).numpy()


def unflatten(vector: np.ndarray, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`: tensors shaped and typed as ``template``'s."""
    out, at = {}, 0
    flat = torch.from_numpy(np.ascontiguousarray(vector))
    for key, ref in template.items():
        out[key] = flat[at:at + ref.numel()].reshape(ref.shape).to(ref.dtype).clone()
        at += ref.numel()
    if at != len(vector):
        raise ValueError(f"weights vector has {len(vector)} values, the module needs {at}")
    return out


class _Block:
    def __init__(self, shm: shared_memory.SharedMemory, n: int) -> None:
        self.shm, self.n = shm, n
        self.header = np.ndarray((_HEADER_WORDS,), dtype=np.int64, buffer=shm.buf)
        self.slots = np.ndarray((2, n), dtype=np.float32, buffer=shm.buf,
                                offset=_HEADER_WORDS * 8)

    @property
    def name(self) -> str:
        return self.shm.name

    def close(self) -> None:
        """Drop the numpy views, then the mapping (the block itself stays)."""
        del self.header, self.slots
        self.shm.close()


def create_block(n: int) -> _Block:
    """A new zeroed block for ``n`` weights (the supervisor owns and later unlinks it)."""
    shm = shared_memory.SharedMemory(create=True, size=block_size(n))
    block = _Block(shm, n)
    block.header[:] = 0
    block.header[_N] = n
    block.header[_VER:_VER + 2] = -1  # no weights yet
    return block


def attach_block(name: str) -> _Block:
    """Map an existing block by name (learner and actor side)."""
    shm = shared_memory.SharedMemory(name=name)
    n = int(np.ndarray((_HEADER_WORDS,), dtype=np.int64, buffer=shm.buf)[_N])
    return _Block(shm, n)


class WeightsPublisher:
    """The single writer. ``publish`` never waits for readers."""

    def __init__(self, block: _Block) -> None:
        self.block = block

    def publish(self, vector: np.ndarray, version: int) -> None:
        """Publish ``vector`` ``[N]`` float32 as ``version`` (versions must not decrease)."""
        b = self.block
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (b.n,):
            raise ValueError(f"weights vector must be [{b.n}], got {list(vector.shape)}")
        gen = int(b.header[_GEN])
        slot = (gen + 1) % 2
        b.slots[slot] = vector
        b.header[_VER + slot] = version
        b.header[_CRC + slot] = zlib.crc32(vector.tobytes())
        b.header[_STAMP + slot] = time.monotonic_ns()
        b.header[_GEN] = gen + 1  # the flip: one aligned 8-byte store

    @property
    def version(self) -> int:
        """The newest published version (``-1``: none)."""
        h = self.block.header
        return int(h[_VER + int(h[_GEN]) % 2])


class WeightsReader:
    """The actor side: :meth:`poll` returns new weights or ``None``, never blocks."""

    def __init__(self, block: _Block, retries: int = 3) -> None:
        self.block, self.retries = block, retries
        self.version = -1  # version of the last accepted weights
        self.torn_reads = 0  # copies rejected (generation moved or CRC mismatch)

    def poll(self) -> tuple[np.ndarray, int, int] | None:
        """``(vector [N], version, published_ns)`` if a newer version is published and a
        consistent copy was made; else ``None`` (keep the weights you have)."""
        h, slots = self.block.header, self.block.slots
        for _ in range(self.retries):
            gen = int(h[_GEN])
            slot = gen % 2
            version = int(h[_VER + slot])
            if version <= self.version:
                return None
            crc, stamp = int(h[_CRC + slot]), int(h[_STAMP + slot])
            vector = slots[slot].copy()
            if int(h[_GEN]) == gen and zlib.crc32(vector.tobytes()) == crc:
                self.version = version
                return vector, version, stamp
            self.torn_reads += 1
        return None


def describe(block: _Block) -> dict[str, Any]:
    """The header as a dict (for logs and tests)."""
    h = block.header
    return {"generation": int(h[_GEN]), "n": int(h[_N]), "versions": h[_VER:_VER + 2].tolist()}
