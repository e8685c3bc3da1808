"""A ring-buffer replay of real transitions in numpy, saved crash-safely to ``.npz``.

``terminated`` and ``truncated`` are stored apart (SB3 ``ReplayBuffer`` with
``handle_timeout_termination``; cleanrl's ``final_observation`` fix): only ``terminated``
stops the critic's bootstrap.

Episode boundaries stay true across interruptions: a transition added on its own is the
robot's next step; when the newest one ended no episode and the new one does not start where
it ended (a kill, a stop or an evaluation on the one robot came between, and a new episode
began), the newest is marked ``truncated``: its episode was cut, it reached no terminal state
(:func:`~mbpo_arm.agent.dataset.episode_cut`, the rule the replay log's readers
apply too). Batches (datasets, model rollouts) are stored as given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mbpo_arm.agent.dataset import FIELDS, Dataset, episode_cut
from mbpo_arm.agent.io import atomic_save_npz, load_npz
from mbpo_arm.agent.types import TransitionBatch

FORMAT_VERSION = 1
_FLOAT_FIELDS = ("obs", "action", "reward", "next_obs")
_FLAG_FIELDS = ("terminated", "truncated")
_COUNTERS = ("capacity", "ptr", "size", "total", "version")


class ReplayBuffer:
    """The newest ``capacity`` transitions, oldest overwritten first.

    Storage (``C`` = capacity): ``obs``, ``next_obs`` ``[C, obs_dim]`` float32; ``action``
    ``[C, act_dim]`` float32; ``reward`` ``[C]`` float32; ``terminated``, ``truncated`` ``[C]``
    bool. Rows ``[0, len)`` are filled; once full, ``ptr`` marks the oldest row.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        for name, value in (("capacity", capacity), ("obs_dim", obs_dim), ("act_dim", act_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"ReplayBuffer {name} must be an integer >= 1, got {value!r}")
        self._capacity, self.obs_dim, self.act_dim = int(capacity), int(obs_dim), int(act_dim)
        self._shapes = {"obs": (self.obs_dim,), "action": (self.act_dim,), "reward": (),
                        "next_obs": (self.obs_dim,), "terminated": (), "truncated": ()}
        self._data = {f: np.zeros((self._capacity, *self._shapes[f]),
                                  dtype=bool if f in _FLAG_FIELDS else np.float32)
                      for f in FIELDS}
        self._ptr = self._size = self._total = 0

    # ------------------------------------------------------------------------------ counters
    @property
    def capacity(self) -> int:
        """The most transitions kept."""
        return self._capacity

    @property
    def total_added(self) -> int:
        """Transitions ever added, including those since overwritten."""
        return self._total

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (f"ReplayBuffer(size={self._size}, capacity={self._capacity}, "
                f"obs_dim={self.obs_dim}, act_dim={self.act_dim}, total_added={self._total})")

    # ----------------------------------------------------------------------------------- add
    @classmethod
    def from_dataset(cls, dataset: Dataset, capacity: int | None = None) -> ReplayBuffer:
        """The transitions of ``dataset`` in a buffer (capacity: at least ``len(dataset)``)."""
        buffer = cls(max(capacity or 0, len(dataset), 1), dataset.meta.obs_dim,
                     dataset.meta.act_dim)
        if len(dataset):
            buffer.add(*(dataset.data[k] for k in FIELDS))
        return buffer

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float | np.ndarray,
            next_obs: np.ndarray, terminated: bool | np.ndarray,
            truncated: bool | np.ndarray) -> None:
        """Add one transition (``obs`` ``[obs_dim]``, scalars for the rest) or a batch of ``N``
        (``obs`` ``[N, obs_dim]``, ``action`` ``[N, act_dim]``, ``reward`` ``[N]``, ...).

        ``N`` may exceed the free space, or the capacity: the ring wraps and the newest
        ``capacity`` transitions are kept, in order. Nothing is stored unless every field is
        valid.

        Raises:
            ValueError: a field has the wrong shape (the message names the field and the
                expected shape), non-finite values, or flags other than 0/1.
        """
        obs = np.asarray(obs)
        if obs.ndim not in (1, 2):
            raise ValueError(f"obs must be [obs_dim]=[{self.obs_dim}] or "
                             f"[N, obs_dim]=[N, {self.obs_dim}], got shape {obs.shape}")
        lead = () if obs.ndim == 1 else (obs.shape[0],)
        fields = dict(zip(FIELDS, (obs, action, reward, next_obs, terminated, truncated),
                          strict=True))
        arrays = {f: self._validated(f, v, lead) for f, v in fields.items()}
        if not lead:
            self._mark_cut(arrays["obs"])
            arrays = {f: a[None] for f, a in arrays.items()}
        self._write(arrays)

    def _validated(self, field: str, value: object, lead: tuple[int, ...]) -> np.ndarray:
        """``value`` as the storage dtype, shape ``[*lead, *field_shape]``, checked."""
        expected = (*lead, *self._shapes[field])
        value = np.asarray(value)
        if value.shape != expected:
            shown = ", ".join(["N"] * len(lead) + [str(d) for d in self._shapes[field]])
            raise ValueError(f"{field} must have shape [{shown}] = {list(expected)}, "
                             f"got {list(value.shape)}")
        if field in _FLAG_FIELDS:
            if value.dtype != bool and not np.isin(value, (0, 1)).all():
                raise ValueError(f"{field} must be 0/1 or bool, got values "
                                 f"{np.unique(value)[:5].tolist()}")
            return value.astype(bool)
        # Cast first: a finite float64 beyond float32's range would be stored as inf.
        with np.errstate(over="ignore", invalid="ignore"):
            value = value.astype(np.float32)
        if not np.isfinite(value).all():
            bad = np.argwhere(~np.isfinite(value))[0].tolist()
            raise ValueError(f"{field} has non-finite values (first at index {bad}); a NaN or "
                             "inf in replay silently poisons every later update")
        return value

    def _mark_cut(self, obs: np.ndarray) -> None:
        """Before one transition starting at ``obs`` is added: mark the newest ``truncated``
        when the new one does not continue its episode (see the module docstring)."""
        if not self._size:
            return
        last = (self._ptr - 1) % self._capacity
        done = self._data["terminated"][last] | self._data["truncated"][last]
        if episode_cut(self._data["next_obs"][last], done, obs):
            self._data["truncated"][last] = True

    def truncate_last(self) -> None:
        """Mark the newest transition ``truncated``: its episode was cut off (e.g. the one
        robot was needed for an evaluation), which is no terminal state."""
        if self._size:
            self._data["truncated"][(self._ptr - 1) % self._capacity] = True

    def _write(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy ``N`` validated rows in at ``ptr``, wrapping; only the last ``C`` are kept."""
        n = len(arrays["obs"])
        self._total += n
        if n > self._capacity:  # the first n - C would be overwritten within this call
            self._ptr = (self._ptr + n - self._capacity) % self._capacity
            arrays = {f: a[-self._capacity:] for f, a in arrays.items()}
            n = self._capacity
        first = min(n, self._capacity - self._ptr)
        for f, a in arrays.items():
            self._data[f][self._ptr:self._ptr + first] = a[:first]
            self._data[f][:n - first] = a[first:]
        self._ptr = (self._ptr + n) % self._capacity
        self._size = min(self._size + n, self._capacity)

    # -------------------------------------------------------------------------------- read
    def sample(self, batch_size: int, rng: np.random.Generator,
               device: str | torch.device = "cpu") -> TransitionBatch:
        """``batch_size`` transitions drawn uniformly with replacement using ``rng``.

        Returns a :class:`TransitionBatch` on ``device``, flags as float32 ``[B]``.
        """
        if self._size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer; add transitions first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        idx = rng.integers(0, self._size, size=batch_size)
        return TransitionBatch(**{
            f: torch.from_numpy(self._data[f][idx].astype(np.float32, copy=False)).to(device)
            for f in FIELDS})

    def all(self) -> dict[str, np.ndarray]:
        """Copies of the stored transitions in insertion order, oldest first.

        Keys are :data:`agent.types.FIELDS`; every array is float32 (flags as 0.0/1.0), with
        leading dimension ``len(self)``, as in :class:`TransitionBatch`.
        """
        order = self._insertion_order()
        return {f: self._data[f][order].astype(np.float32, copy=False) for f in FIELDS}

    def _insertion_order(self) -> np.ndarray:
        if self._size < self._capacity:
            return np.arange(self._size)
        return (self._ptr + np.arange(self._capacity)) % self._capacity

    # ------------------------------------------------------------------------------ on disk
    def save(self, path: str | Path) -> None:
        """Write the filled rows (in storage order, so sampling resumes identically) and the
        counters to ``path`` crash-safely (see :mod:`agent.io`)."""
        counters = {"capacity": self._capacity, "ptr": self._ptr, "size": self._size,
                    "total": self._total, "version": FORMAT_VERSION}
        atomic_save_npz(path, **{f: self._data[f][:self._size] for f in FIELDS},
                        **{k: np.asarray(v, dtype=np.int64) for k, v in counters.items()})

    @classmethod
    def load(cls, path: str | Path, obs_dim: int | None = None,
             act_dim: int | None = None) -> ReplayBuffer:
        """Read a buffer written by :meth:`save`.

        ``obs_dim`` / ``act_dim``, when given, must match the file.

        Raises:
            ValueError: the file is corrupted or truncated, misses arrays, has inconsistent
                shapes or counters, non-finite values, or dimensions other than those asked.
        """
        data = load_npz(path)
        missing = [k for k in (*FIELDS, *_COUNTERS) if k not in data]
        if missing:
            raise ValueError(f"{path}: not a ReplayBuffer file, missing arrays {missing}")
        c = {k: int(data[k]) for k in _COUNTERS}
        if c["version"] != FORMAT_VERSION:
            raise ValueError(f"{path}: format version {c['version']}, expected {FORMAT_VERSION}")
        obs, action = data["obs"], data["action"]
        if obs.ndim != 2 or action.ndim != 2:
            raise ValueError(f"{path}: obs and action must be 2-D, got shapes "
                             f"{list(obs.shape)} and {list(action.shape)}")
        for name, want, got in (("obs_dim", obs_dim, obs.shape[1]),
                                ("act_dim", act_dim, action.shape[1])):
            if want is not None and want != got:
                raise ValueError(f"{path}: {name} is {got} in the file, expected {want}")
        buffer = cls(c["capacity"], obs.shape[1], action.shape[1])
        if not (0 <= c["size"] <= c["capacity"] and 0 <= c["ptr"] < c["capacity"]
                and c["total"] >= c["size"]
                and (c["size"] == c["capacity"] or c["ptr"] == c["size"] % c["capacity"])):
            raise ValueError(f"{path}: inconsistent counters {c}")
        try:
            arrays = {f: buffer._validated(f, data[f], (c["size"],)) for f in FIELDS}
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        for f, a in arrays.items():
            buffer._data[f][:c["size"]] = a
        buffer._ptr, buffer._size, buffer._total = c["ptr"], c["size"], c["total"]
        return buffer
