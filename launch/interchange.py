"""Datasets from and to other tools: rosbag2 recordings (``rosbags``, no ROS install needed)
and Minari datasets on disk.

rosbag2 import. A ros2_control arm records ``sensor_msgs/msg/JointState`` on the state topic
and ``std_msgs/msg/Float64MultiArray`` (the forward position controller's command, one value
per joint in ``joints`` order) on the command topic. Both are resampled on a grid at the
control rate, ``t_k = t_0 + k / control_hz`` from the first joint state to the last, each by
zero-order hold on the bag's receive timestamps:

- ``obs_k = [q, qdot]`` of the newest joint state at or before ``t_k``;
- the command of step ``k`` is the newest command before ``t_{k+1}`` (sent after reading
  ``obs_k``), and ``action_k = (command_k - command_{k-1}) / action_scale`` clipped to
  ``[-1, 1]``: the ``ArmReach`` action convention (joint-position deltas). Before the first
  command the measured position stands in, as the env's command starts at the measured pose.

A bag holds no reward: rewards are zero (the task's reward function or a learned one
supplies it later); the bag is one episode whose last transition is ``truncated``.
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_arm.agent.dataset import Dataset, DatasetError, DatasetMeta, from_arrays, spec

STATE_TOPIC = "/joint_states"
COMMAND_TOPIC = "/forward_position_controller/commands"


# ----------------------------------------------------------------------------- rosbag2
def _read_topics(path: Path, topics: tuple[str, str]) -> dict[str, list[tuple[int, Any]]]:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    out: dict[str, list[tuple[int, Any]]] = {t: [] for t in topics}
    try:
        with Reader(path) as reader:
            conns = [c for c in reader.connections if c.topic in topics]
            for conn, stamp, raw in reader.messages(connections=conns):
                out[conn.topic].append((stamp, typestore.deserialize_cdr(raw, conn.msgtype)))
    except Exception as err:  # rosbags raises its own error types for unreadable bags
        raise DatasetError(f"{path}: cannot be read as a rosbag2 recording "
                           f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    for topic in topics:
        if not out[topic]:
            raise DatasetError(f"{path}: no messages on {topic}; topics in the bag are "
                               f"{sorted(set(c.topic for c in _connections(path)))}")
    return out


def _connections(path: Path) -> list[Any]:
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        return list(reader.connections)


def _hold(stamps: np.ndarray, at: np.ndarray, strict: bool) -> np.ndarray:
    """Index of the newest stamp ``<= at`` (``< at`` when ``strict``), -1 where none."""
    return np.searchsorted(stamps, at, side="left" if strict else "right") - 1


def import_rosbag2(path: str | Path, joints: list[str], control_hz: float,
                   action_scale: float, state_topic: str = STATE_TOPIC,
                   command_topic: str = COMMAND_TOPIC, task: str = "ArmReach-v0",
                   robot: str = "ros2_control") -> Dataset:
    """A dataset of ``[q, qdot]`` observations and normalized command deltas from the bag
    at ``path`` (see the module docstring)."""
    path = Path(path)
    if control_hz <= 0 or action_scale <= 0:
        raise DatasetError(f"{path}: control_hz and action_scale must be > 0")
    msgs = _read_topics(path, (state_topic, command_topic))
    q, qd = _joint_arrays(path, msgs[state_topic], joints)
    s_t = np.array([s for s, _ in msgs[state_topic]], dtype=np.int64)
    c_t = np.array([s for s, _ in msgs[command_topic]], dtype=np.int64)
    cmd = np.array([np.asarray(m.data, dtype=np.float64) for _, m in msgs[command_topic]])
    if cmd.shape[1] != len(joints):
        raise DatasetError(f"{path}: {command_topic} has {cmd.shape[1]} values per message, "
                           f"expected one per joint of {joints}")
    period = round(1e9 / control_hz)
    ticks = np.arange(s_t[0], s_t[-1] + 1, period, dtype=np.int64)
    if len(ticks) < 2:
        raise DatasetError(f"{path}: the recording is shorter than two control periods")
    si = _hold(s_t, ticks, strict=False)  # state at t_k
    ci = _hold(c_t, ticks[1:], strict=True)  # command of step k: newest before t_{k+1}
    obs = np.concatenate([q[si], qd[si]], axis=1)
    command = cmd[ci]
    prev_i = _hold(c_t, ticks[:-1], strict=True)
    previous = np.where(prev_i[:, None] >= 0, cmd[np.maximum(prev_i, 0)], q[si[:-1]])
    raw_action = (command - previous) / action_scale
    n = len(ticks) - 1
    truncated = np.zeros(n, bool)
    truncated[-1] = True
    meta = DatasetMeta(robot=robot, task=task, control_hz=float(control_hz),
                       obs_spec=spec(2 * len(joints), [f"{j}.pos" for j in joints]
                                     + [f"{j}.vel" for j in joints]),
                       action_spec=spec(len(joints), list(joints), bounded=True),
                       source=f"rosbag2:{path}",
                       extra={"state_topic": state_topic, "command_topic": command_topic,
                              "action_scale": action_scale, "reward": "not recorded (zeros)",
                              "clipped_actions": float((np.abs(raw_action) > 1).mean())})
    return from_arrays(meta, obs=obs[:-1], action=np.clip(raw_action, -1, 1),
                       reward=np.zeros(n), next_obs=obs[1:], terminated=np.zeros(n, bool),
                       truncated=truncated)


def _joint_arrays(path: Path, states: list[tuple[int, Any]], joints: list[str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities ``[M, J]`` of ``joints`` from JointState messages, by name."""
    q = np.zeros((len(states), len(joints)))
    qd = np.zeros_like(q)
    for i, (_, msg) in enumerate(states):
        names = list(msg.name)
        missing = [j for j in joints if j not in names]
        if missing:
            raise DatasetError(f"{path}: joint state has no {missing}; it names {names}")
        order = [names.index(j) for j in joints]
        q[i] = np.asarray(msg.position)[order]
        if len(msg.velocity):
            qd[i] = np.asarray(msg.velocity)[order]
    return q, qd


# ------------------------------------------------------------------------------ Minari
@contextmanager
def _minari_root(root: str | Path | None):  # noqa: ANN202 (a context manager)
    """Point Minari at ``root`` (its ``MINARI_DATASETS_PATH``) for the ``with`` block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if root is not None:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def export_minari(dataset: Dataset, dataset_id: str, root: str | Path | None = None) -> Path:
    """Write the complete episodes of ``dataset`` as Minari dataset ``dataset_id`` (e.g.
    ``mbpo-arm/reach-medium-v0``) under ``root``; our metadata travels in its description."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    d, meta = dataset.data, dataset.meta
    episodes = [EpisodeBuffer(id=i, observations=np.concatenate([d["obs"][a:b],
                                                                 d["next_obs"][b - 1:b]]),
                              actions=d["action"][a:b], rewards=d["reward"][a:b],
                              terminations=d["terminated"][a:b],
                              truncations=d["truncated"][a:b])
                for i, (a, b) in enumerate(dataset.episode_bounds())]
    if not episodes:
        raise DatasetError(f"{meta.source}: no complete episode to export")
    with _minari_root(root), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # optional fields (author email, ...)
        out = minari.create_dataset_from_buffers(
            dataset_id, episodes,
            observation_space=gym.spaces.Box(-np.inf, np.inf, (meta.obs_dim,), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (meta.act_dim,), np.float32),
            algorithm_name=meta.source, author="mbpo-arm",
            description=json.dumps({k: v for k, v in asdict(meta).items() if k != "checksums"}))
        return Path(out.spec.data_path).parent


def import_minari(dataset_id: str, root: str | Path | None = None, task: str | None = None,
                  robot: str = "unknown", control_hz: float | None = None) -> Dataset:
    """A local Minari dataset as a dataset: flat Box observations; actions rescaled from the
    action space's bounds to ``[-1, 1]``. Metadata written by :func:`export_minari` is
    restored; otherwise ``task`` (default: the dataset's env id), ``robot``, ``control_hz``."""
    import minari

    with _minari_root(root):
        try:
            mds = minari.load_dataset(dataset_id)
        except Exception as err:  # minari raises several types for a missing dataset
            raise DatasetError(f"minari:{dataset_id}: cannot be loaded from "
                               f"{root or 'the Minari root'} ({str(err).splitlines()[0]})") \
                from None
        low, high = mds.action_space.low, mds.action_space.high
        unit = bool(np.all(low == -1.0) and np.all(high == 1.0))
        rows: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs",
                                                 "terminated", "truncated")}
        for ep in mds.iterate_episodes():
            o = np.asarray(ep.observations, dtype=np.float32)
            for k, v in (("obs", o[:-1]), ("next_obs", o[1:]),
                         ("action", ep.actions if unit
                          else 2 * (np.asarray(ep.actions) - low) / (high - low) - 1),
                         ("reward", ep.rewards), ("terminated", ep.terminations),
                         ("truncated", ep.truncations)):
                rows[k].append(np.asarray(v))
        description = str(mds.storage.metadata.get("description") or "")
        env_id = mds.spec.env_spec.id if mds.spec.env_spec is not None else None
    meta = _minari_meta(description, dataset_id, task or env_id or dataset_id, robot,
                        control_hz, rows["obs"][0].shape[1], rows["action"][0].shape[1])
    return from_arrays(meta, **{k: np.concatenate(v) for k, v in rows.items()})


def _minari_meta(description: str, dataset_id: str, task: str, robot: str,
                 control_hz: float | None, obs_dim: int, act_dim: int) -> DatasetMeta:
    try:
        saved = json.loads(description)
        meta = DatasetMeta(**saved)
        meta.source = f"minari:{dataset_id} ({meta.source})"
        return meta
    except (ValueError, TypeError):
        return DatasetMeta(robot=robot, task=task, control_hz=float(control_hz or 20.0),
                           obs_spec=spec(obs_dim), action_spec=spec(act_dim, bounded=True),
                           source=f"minari:{dataset_id}")
