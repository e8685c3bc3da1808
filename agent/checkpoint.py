"""Crash-safe checkpoints that verify themselves: networks, optimizers, buffers, RNG states.

Layout under ``<run_dir>/checkpoints/``::

    step_00005000/state.pt        networks, optimizers, counters, RNG states (torch.save)
    step_00005000/<buffer>.npz    replay (and model) buffers
    step_00005000/manifest.json   the size and SHA-256 of every other file, written last
    latest                        name of the newest complete checkpoint
    damaged_step_00006000/        a damaged checkpoint set aside by ``resume.fallback=true``

Writing: every file goes into a temporary directory (``.step_N.<pid>.<hex>.tmp``), the
manifest last, and the directory is renamed to ``step_N``; a second save of the same step
moves the old directory aside first and :func:`latest_checkpoint` puts it back if a kill came
between the two renames. So a kill at any instant leaves the previous checkpoint or the new
one, complete. ``latest`` only moves forward: a save older than it is refused (another
process writing the run), and only :func:`set_aside_damaged` moves it back, on request.

Reading: :func:`load_checkpoint` checks each file it reads against the manifest and every
floating tensor of ``state.pt`` for NaN and infinity; damage raises :class:`DamagedCheckpoint`,
one line naming the checkpoint and the newest intact one. A non-finite state is never saved
(:class:`Diverged`). Retention keeps the newest ``keep`` checkpoints whose files are whole;
damaged ones newer than those are kept too, not counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mbpo_arm.agent.io import atomic_file, atomic_write_text, fsync_dir
from mbpo_arm.agent.replay import ReplayBuffer

LATEST = "latest"
MANIFEST = "manifest.json"
STATE = "state.pt"
SET_ASIDE = "damaged_"  # prefix of a damaged checkpoint moved out of the way
_PREFIX = "step_"


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message is one line."""


class DamagedCheckpoint(CheckpointError):
    """Checkpoint ``path`` is damaged (``reason``); ``intact``: the newest older checkpoint
    that verifies, ``None`` when there is none."""

    def __init__(self, path: Path, reason: str, intact: Path | None) -> None:
        self.path, self.reason, self.intact = Path(path), reason, intact
        where = (f"the newest intact checkpoint is {intact.name}" if intact else
                 "no older checkpoint is intact")
        super().__init__(f"checkpoint {self.path} is damaged ({reason}); {where}")


class Diverged(RuntimeError):
    """Training produced a non-finite loss or weight; nothing non-finite is saved."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, crash-safely (argument order as ``torch.save``)."""
    with atomic_file(path) as f:
        torch.save(obj, f)


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_of(path: str | Path) -> int:
    """The env step of checkpoint directory ``path`` (``step_00005000`` -> 5000)."""
    return int(Path(path).name.removeprefix(_PREFIX))


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint directories, newest first (damaged ones set aside excluded)."""
    found = [p for p in checkpoint_root(run_dir).glob(f"{_PREFIX}*")
             if p.is_dir() and p.name.removeprefix(_PREFIX).isdigit()]
    return sorted(found, key=step_of, reverse=True)


# ---------------------------------------------------------------------------------- checks
def nonfinite(obj: Any, name: str = "") -> str | None:
    """The dotted name of the first floating tensor in ``obj`` (nested dicts, lists)
    holding NaN or infinity; ``None`` when all are finite. Plain floats are figures, not
    weights (a loss not measured yet is NaN), and are not checked."""
    if isinstance(obj, torch.Tensor):
        finite = not obj.is_floating_point() or bool(torch.isfinite(obj).all())
        return None if finite else name or "tensor"
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = nonfinite(value, f"{name}.{key}" if name else str(key))
        if found:
            return found
    return None


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of ``tensors`` (floating) is finite, in one pass and one device
    sync: the screen run after every env step's updates (:func:`nonfinite` walks a state
    dict tensor by tensor, 0.8 ms per step on the reach policy; this is ~30 us)."""
    flat = [t.detach().reshape(-1) for t in tensors]
    return not flat or bool(torch.isfinite(torch.cat(flat)).all())


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, step: int) -> None:
    """Record the size and SHA-256 of every file of ``directory`` in its manifest."""
    files = {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)}
             for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    atomic_write_text(directory / MANIFEST, json.dumps({"step": step, "files": files}, indent=1))


def _manifest(directory: Path) -> dict[str, Any] | None:
    """The files of a checkpoint's manifest; ``None`` for a checkpoint without one (written
    before manifests); :class:`ValueError` for an unreadable one."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{MANIFEST} cannot be read ({type(err).__name__})") from None


def damage(directory: Path, names: list[str] | None = None, quick: bool = False) -> str | None:
    """What is wrong with the files ``names`` (default: all) of checkpoint ``directory`` as
    its manifest records them; ``None`` when they match. ``quick``: sizes only."""
    try:
        files = _manifest(directory)
    except ValueError as err:
        return str(err)
    if files is None:  # made before manifests: only what can be checked without one
        return None if (directory / STATE).is_file() else f"{STATE} is missing"
    for name in names if names is not None else list(files):
        path, entry = directory / name, files.get(name)
        if entry is None:
            return f"{name} is not in its {MANIFEST}"
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["size"]:
            return (f"{name} is {size} bytes, {entry['size']} when written"
                    f"{': truncated' if size < entry['size'] else ''}")
        if not quick and file_digest(path) != entry["sha256"]:
            return f"{name} does not match its SHA-256: it changed after it was written"
    return None


def verify(directory: Path) -> str | None:
    """Every file against the manifest, then ``state.pt`` loaded and finite; what is wrong,
    or ``None``."""
    reason = damage(directory)
    if reason is None:
        reason = _read_state(directory, "cpu")[1]
    return reason


def _read_state(directory: Path, map_location: str | torch.device
                ) -> tuple[dict[str, Any] | None, str | None]:
    try:
        state = torch.load(directory / STATE, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for torn or foreign files
        return None, f"{STATE} cannot be read: {type(err).__name__}: {str(err).splitlines()[0]}"
    bad = nonfinite(state)
    return (None, f"{STATE} holds non-finite values in {bad}") if bad else (state, None)


def newest_intact(run_dir: str | Path, below: int | None = None) -> Path | None:
    """The newest checkpoint (older than step ``below``, where given) that :func:`verify`
    accepts."""
    for path in checkpoints(run_dir):
        if (below is None or step_of(path) < below) and verify(path) is None:
            return path
    return None


# ------------------------------------------------------------------------------ writing
def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any],
                    buffers: dict[str, ReplayBuffer], keep: int = 2) -> Path:
    """Write checkpoint ``step`` and point ``latest`` at it; returns its directory.

    Raises:
        Diverged: ``state`` holds a NaN or infinity (nothing is written).
        CheckpointError: ``latest`` names a newer step (another process writes this run).
    """
    bad = nonfinite(state)
    if bad:
        raise Diverged(f"training diverged by env step {step}: {bad} is not finite")
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    newest = _latest_step(run_dir)
    if newest is not None and step < newest:
        raise CheckpointError(f"not saving step {step}: {root / LATEST} names step {newest} "
                              f"and only moves forward; is another process writing {run_dir}?")
    name = f"{_PREFIX}{step:08d}"
    tmp = root / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        for buffer_name, buffer in buffers.items():
            buffer.save(tmp / f"{buffer_name}.npz")
        atomic_torch_save(state, tmp / STATE)
        write_manifest(tmp, step)
        _install(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, name)
    prune(run_dir, keep)
    return root / name


def _latest_step(run_dir: str | Path) -> int | None:
    try:
        path = latest_checkpoint(run_dir)
    except FileNotFoundError:  # a pointer to nothing: the next save replaces it
        return None
    return step_of(path) if path is not None else None


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` to ``final``; an existing ``final`` (a second save of one
    step) is moved aside first and removed after."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prune(run_dir: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints whose files are whole (and any damaged one newer
    than them); remove the older ones and what killed writers left behind."""
    whole = 0
    for path in checkpoints(run_dir):
        if whole >= keep:
            shutil.rmtree(path, ignore_errors=True)
        elif damage(path, quick=True) is None:
            whole += 1
    for left in checkpoint_root(run_dir).glob(f".{_PREFIX}*"):
        pid = left.name.split(".")[2] if left.name.count(".") == 4 else ""
        if left.suffix in (".tmp", ".old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Process ``pid`` exists (this one included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_aside_damaged(err: DamagedCheckpoint) -> list[Path]:
    """``resume.fallback=true``: rename every checkpoint newer than ``err.intact`` to
    ``damaged_step_N`` (kept for inspection) and point ``latest`` at ``err.intact``, the one
    move back it makes; returns the new names."""
    if err.intact is None:
        raise err
    moved = []
    for path in checkpoints(err.path.parent.parent):
        if step_of(path) > step_of(err.intact):
            target = path.with_name(f"{SET_ASIDE}{path.name}")
            while target.exists():
                target = target.with_name(f"{target.name}_")
            os.rename(path, target)
            moved.append(target)
    atomic_write_text(err.intact.parent / LATEST, err.intact.name)
    return moved


# ------------------------------------------------------------------------------ reading
def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None`` if it has none (not verified:
    :func:`load_checkpoint` does that)."""
    pointer = checkpoint_root(run_dir) / LATEST
    if not pointer.exists():
        return None
    path = checkpoint_root(run_dir) / pointer.read_text().strip()
    if not path.is_dir():  # a kill between the two renames of a second save of one step
        for old in path.parent.glob(f".{path.name}.*.old"):
            pid = old.name.split(".")[2]
            if pid.isdigit() and not _alive(int(pid)):  # a live writer renames it itself
                with contextlib.suppress(OSError):
                    os.rename(old, path)
                    break
    if not (path / STATE).exists():
        raise FileNotFoundError(f"{pointer} names {path.name}, which has no {STATE}; "
                                "the checkpoint directory was changed by hand")
    return path


def verify_latest(run_dir: str | Path) -> Path | None:
    """The newest checkpoint, verified in full (every file, the state finite); ``None`` for
    none. Raises :class:`DamagedCheckpoint` (naming the newest intact one) when damaged."""
    try:
        path = latest_checkpoint(run_dir)
    except FileNotFoundError:
        root = checkpoint_root(run_dir)
        path, reason = root / (root / LATEST).read_text().strip(), f"{STATE} is missing"
    else:
        if path is None:
            return None
        reason = verify(path)
    if reason is None:
        return path
    below = step_of(path) if path.name.removeprefix(_PREFIX).isdigit() else None
    raise DamagedCheckpoint(path, reason, newest_intact(run_dir, below))


def load_checkpoint(path: str | Path, buffer_names: tuple[str, ...] = ("replay",),
                    map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, Any], dict[str, ReplayBuffer]]:
    """Read ``state.pt`` and the named buffers of checkpoint directory ``path``, each checked
    against the manifest, the state for non-finite values.

    Raises:
        DamagedCheckpoint: a file is missing, truncated, changed, unreadable or non-finite;
            the message names the newest intact checkpoint.
    """
    path = Path(path)
    try:
        listed = _manifest(path) or {}
    except ValueError:
        listed = {}
    files = [f"{n}.npz" for n in buffer_names if (path / f"{n}.npz").exists()
             or f"{n}.npz" in listed]
    reason = damage(path, [STATE, *files])
    state, buffers = None, {}
    if reason is None:
        state, reason = _read_state(path, map_location)
    if reason is None:
        try:
            buffers = {f.removesuffix(".npz"): ReplayBuffer.load(path / f) for f in files}
        except ValueError as err:
            reason = str(err).splitlines()[0].replace(f"{path}{os.sep}", "")
    if reason is not None:
        below = step_of(path) if path.name.removeprefix(_PREFIX).isdigit() else None
        raise DamagedCheckpoint(path, reason, newest_intact(path.parent.parent, below))
    return state, buffers
