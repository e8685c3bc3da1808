"""Crash-safe checkpoints of a run: networks, optimizers, buffers, RNG states, counters.

Layout under ``<run_dir>/checkpoints/``::

    step_00005000/state.pt      networks, optimizers, counters, RNG states (torch.save)
    step_00005000/<buffer>.npz  replay (and model) buffers
    latest                      name of the newest complete checkpoint

Each file is written to a temporary name and renamed; the ``latest`` pointer is switched only
after every file of a checkpoint is on disk, so a kill at any instant leaves the previous
checkpoint or the new one, complete. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from mbpo_arm.agent.io import atomic_file, atomic_write_text
from mbpo_arm.agent.replay import ReplayBuffer


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, crash-safely (argument order as ``torch.save``)."""
    with atomic_file(path) as f:
        torch.save(obj, f)


LATEST = "latest"


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any],
                    buffers: dict[str, ReplayBuffer], keep: int = 2) -> Path:
    """Write checkpoint ``step`` and point ``latest`` at it; returns its directory."""
    root = checkpoint_root(run_dir)
    path = root / f"step_{step:08d}"
    path.mkdir(parents=True, exist_ok=True)
    for name, buffer in buffers.items():
        buffer.save(path / f"{name}.npz")
    atomic_torch_save(state, path / "state.pt")
    atomic_write_text(root / LATEST, path.name)
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != path)
    for stale in old[: max(len(old) - (keep - 1), 0)]:
        shutil.rmtree(stale, ignore_errors=True)
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None`` if it has none."""
    pointer = checkpoint_root(run_dir) / LATEST
    if not pointer.exists():
        return None
    path = checkpoint_root(run_dir) / pointer.read_text().strip()
    if not (path / "state.pt").exists():
        raise FileNotFoundError(f"{pointer} names {path.name}, which has no state.pt; "
                                "the checkpoint directory was changed by hand")
    return path


def load_checkpoint(path: str | Path, buffer_names: tuple[str, ...] = ("replay",),
                    map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, Any], dict[str, ReplayBuffer]]:
    """Read ``state.pt`` and the named buffers of checkpoint directory ``path``."""
    path = Path(path)
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for torn or foreign files
        raise ValueError(f"{path / 'state.pt'}: cannot be read as a checkpoint ({err})") from err
    buffers = {n: ReplayBuffer.load(path / f"{n}.npz") for n in buffer_names
               if (path / f"{n}.npz").exists()}
    return state, buffers
