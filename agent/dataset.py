"""Offline datasets: episodes of transitions with metadata, one crash-safe ``.npz`` file each.

A dataset is what a robot's logs become before MOPO pretraining (Yu et al. 2020) or before
seeding an online run's replay. Layout of ``<name>.npz`` (``N`` transitions, ``D`` = obs_dim,
``A`` = act_dim)::

    obs, next_obs  [N, D] float32     action  [N, A] float32 (normalized to [-1, 1])
    reward         [N]    float32     terminated, truncated  [N] bool
    meta           [K]    uint8       UTF-8 JSON of DatasetMeta (checksums included)

Transitions are stored in time order; an episode ends at a transition that is ``terminated``
or ``truncated``. Each array's CRC32 is kept in the metadata, so a flipped byte that the zip
container does not catch is still found on load. Loading validates everything and fails with a
one-line :class:`DatasetError` naming the file and the mismatch.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mbpo_arm.agent.io import atomic_save_npz, load_npz

if TYPE_CHECKING:
    from mbpo_arm.agent.replay import ReplayBuffer

# The fields of a transition, in storage order (replay, datasets, the replay log).
FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


FORMAT = "mbpo-arm-dataset"
FORMAT_VERSION = 1


class DatasetError(ValueError):
    """A dataset that cannot be used: unreadable, inconsistent, or not for this task."""


@dataclass
class DatasetMeta:
    """What a dataset was recorded on and how.

    ``obs_spec`` / ``action_spec``: ``{"shape": [D], "names": [...] or None}``; the action
    spec also carries ``low`` / ``high`` (the normalized bounds, ``[-1, 1]`` here).
    """

    robot: str  # the robot or backend it came from, e.g. "mujoco-twin", "so101"
    task: str  # gymnasium id of the task, e.g. "ArmReach-v0"
    control_hz: float  # control rate the transitions are at (1 / control_period)
    obs_spec: dict[str, Any]
    action_spec: dict[str, Any]
    source: str  # how it was made: "collect:medium", "run:<dir>", "rosbag2:<path>", ...
    episodes: int = 0  # complete episodes (filled in on save)
    transitions: int = 0  # filled in on save
    created: float = field(default_factory=time.time)  # unix time
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. behaviour-policy figures
    format: str = FORMAT
    version: int = FORMAT_VERSION
    checksums: dict[str, int] = field(default_factory=dict)  # CRC32 per array (on save)

    @property
    def obs_dim(self) -> int:
        return int(self.obs_spec["shape"][0])

    @property
    def act_dim(self) -> int:
        return int(self.action_spec["shape"][0])


def spec(dim: int, names: list[str] | None = None, bounded: bool = False) -> dict[str, Any]:
    """An ``obs_spec`` / ``action_spec`` entry of ``dim`` values (bounded: ``[-1, 1]``)."""
    out: dict[str, Any] = {"shape": [int(dim)], "names": list(names) if names else None}
    if bounded:
        out.update(low=-1.0, high=1.0)
    return out


@dataclass
class Dataset:
    """Transitions ``data`` (keys :data:`agent.types.FIELDS`, shapes as in the module
    docstring) and their :class:`DatasetMeta`."""

    data: dict[str, np.ndarray]
    meta: DatasetMeta

    def __len__(self) -> int:
        return int(self.data["obs"].shape[0])

    def episode_bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` row ranges of the complete episodes, in order."""
        ends = np.flatnonzero(self.data["terminated"] | self.data["truncated"])
        starts = np.r_[0, ends[:-1] + 1]
        return [(int(s), int(e) + 1) for s, e in zip(starts, ends, strict=True)]


def from_arrays(meta: DatasetMeta, **arrays: Any) -> Dataset:
    """A :class:`Dataset` from arrays under :data:`FIELDS`, cast to the stored dtypes."""
    data = {k: np.asarray(arrays[k], dtype=bool if k in ("terminated", "truncated")
                          else np.float32) for k in FIELDS}
    return Dataset(data, meta)


def from_replay(buffer: ReplayBuffer, meta: DatasetMeta) -> Dataset:
    """A run's replay (oldest first) as a dataset."""
    data = buffer.all()
    return from_arrays(meta, **{k: (data[k] > 0) if k in ("terminated", "truncated")
                                else data[k] for k in FIELDS})


def save_dataset(path: str | Path, dataset: Dataset) -> Path:
    """Validate and write ``dataset`` to ``path`` crash-safely (temp file, then rename)."""
    path = Path(path)
    _check_arrays(dataset.data, dataset.meta, path)
    meta = dataset.meta
    meta.transitions = len(dataset)
    meta.episodes = len(dataset.episode_bounds())
    meta.checksums = {k: _crc(dataset.data[k]) for k in FIELDS}
    blob = np.frombuffer(json.dumps(asdict(meta)).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(path, **dataset.data, meta=blob)
    return path


def load_dataset(path: str | Path, obs_dim: int | None = None, act_dim: int | None = None,
                 task: str | None = None) -> Dataset:
    """Read and validate a dataset; ``obs_dim`` / ``act_dim`` / ``task``, when given, must
    match its spec.

    Raises:
        DatasetError: missing, truncated or corrupted file, bad metadata, arrays that do not
            match the metadata or each other, or a spec other than the one asked for.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset file; make one with `mbpo-arm collect` or "
                           "`mbpo-arm dataset import`")
    try:
        raw = load_npz(path)
    except ValueError as err:
        raise DatasetError(str(err).splitlines()[0]) from None
    if "meta" not in raw:
        raise DatasetError(f"{path}: not an mbpo-arm dataset (no 'meta' array)")
    meta = _parse_meta(raw["meta"], path)
    missing = [k for k in FIELDS if k not in raw]
    if missing:
        raise DatasetError(f"{path}: missing arrays {missing}")
    data = {k: raw[k] for k in FIELDS}
    for k in FIELDS:
        if k in meta.checksums and _crc(data[k]) != meta.checksums[k]:
            raise DatasetError(f"{path}: array '{k}' fails its CRC32 check; the file is "
                               "corrupted, make or copy it again")
    _check_arrays(data, meta, path)
    check_spec(Dataset(data, meta), path, obs_dim, act_dim, task)
    return Dataset(data, meta)


def check_spec(dataset: Dataset, path: str | Path, obs_dim: int | None = None,
               act_dim: int | None = None, task: str | None = None) -> None:
    """Raise :class:`DatasetError` if ``dataset`` is not for ``task`` with these sizes."""
    meta = dataset.meta
    if task is not None and meta.task != task:
        raise DatasetError(f"{path}: dataset is for task {meta.task!r}, this run is {task!r}")
    for name, want, got in (("obs_dim", obs_dim, meta.obs_dim),
                            ("act_dim", act_dim, meta.act_dim)):
        if want is not None and want != got:
            raise DatasetError(f"{path}: dataset has {name}={got} ({meta.task} on "
                               f"{meta.robot}), this task's env has {name}={want}")


def _parse_meta(blob: np.ndarray, path: Path) -> DatasetMeta:
    try:
        fields = json.loads(blob.astype(np.uint8).tobytes().decode("utf-8"))
        meta = DatasetMeta(**fields)
    except (ValueError, TypeError) as err:
        raise DatasetError(f"{path}: unreadable metadata ({type(err).__name__}: "
                           f"{str(err).splitlines()[0]})") from None
    if meta.format != FORMAT or meta.version != FORMAT_VERSION:
        raise DatasetError(f"{path}: format {meta.format!r} version {meta.version}, expected "
                           f"{FORMAT!r} version {FORMAT_VERSION}")
    for name in ("obs_spec", "action_spec"):
        shape = getattr(meta, name).get("shape") if isinstance(getattr(meta, name), dict) else None
        if not (isinstance(shape, list) and len(shape) == 1 and int(shape[0]) >= 1):
            raise DatasetError(f"{path}: metadata {name} must have shape [dim], got {shape}")
    if not meta.control_hz > 0:
        raise DatasetError(f"{path}: metadata control_hz must be > 0, got {meta.control_hz}")
    return meta


def _check_arrays(data: dict[str, np.ndarray], meta: DatasetMeta, path: Path) -> None:
    """Shapes against the spec, one length for all, finite values, boolean flags."""
    n = len(data["obs"])
    want = {"obs": (n, meta.obs_dim), "next_obs": (n, meta.obs_dim),
            "action": (n, meta.act_dim), "reward": (n,), "terminated": (n,), "truncated": (n,)}
    for k, shape in want.items():
        if tuple(data[k].shape) != shape:
            raise DatasetError(f"{path}: array '{k}' has shape {list(data[k].shape)}, the "
                               f"spec ({meta.task}: obs_dim={meta.obs_dim}, "
                               f"act_dim={meta.act_dim}) needs {list(shape)}")
        if k in ("terminated", "truncated"):
            if data[k].dtype != bool:
                raise DatasetError(f"{path}: array '{k}' must be bool, got {data[k].dtype}")
        elif not np.isfinite(data[k]).all():
            raise DatasetError(f"{path}: array '{k}' has non-finite values")
    if n and np.abs(data["action"]).max() > 1.0 + 1e-5:
        raise DatasetError(f"{path}: actions must be normalized to [-1, 1], found "
                           f"|a| = {float(np.abs(data['action']).max()):.3g}")


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).tobytes())


def describe(dataset: Dataset) -> dict[str, Any]:
    """A summary for ``mbpo-arm dataset info``."""
    meta = dataset.meta
    ends = dataset.episode_bounds()
    return {"task": meta.task, "robot": meta.robot, "control_hz": meta.control_hz,
            "source": meta.source, "transitions": len(dataset), "episodes": len(ends),
            "obs_dim": meta.obs_dim, "act_dim": meta.act_dim,
            "mean_reward": float(dataset.data["reward"].mean()) if len(dataset) else None,
            **{k: v for k, v in meta.extra.items() if not isinstance(v, list | dict)}}


def episode_cut(next_obs: np.ndarray, done: np.ndarray, following_obs: np.ndarray) -> np.ndarray:
    """Which transitions an interruption cut off, ``[N]`` bool (one bool for ``[D]`` arrays):
    those that ended no episode (``done`` ``[N]`` false: neither terminated nor truncated) and
    whose successor does not start where they ended (``following_obs`` ``[N, D]`` differs from
    ``next_obs`` ``[N, D]``). Read as continuing, such a transition would join two episodes."""
    moved = (np.asarray(next_obs) != np.asarray(following_obs)).any(axis=-1)
    return ~np.asarray(done, dtype=bool) & moved
