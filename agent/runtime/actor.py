"""The fixed-rate actor: one env step per tick, the transition to the log, then to the learner.

A tick: choose the action for the latest observation (random before ``learning_starts``, the
policy on the CPU after, zeros while holding), ``env.step`` it (one tick of the env's control
loop: shield -> write -> wait for the wall-clock tick -> read), append the
transition with the *executed* action to the :class:`~agent.runtime.replay_log.ReplayLog`
(memory only: the log's writer thread writes it, then puts it on the learner's queue with
``put_nowait``, so the learner never sees what the log lacks; when the queue is full or the
learner gone, the log still has it and the learner reads it from there). Between ticks: poll
for new weights, and collect young garbage while there is slack. A reset move through the
shield (~1-2 s) is ticks too: between them the actor polls weights and runs the supervisor's
watch (the composition root hands :meth:`Actor.between_reset_ticks` to the control loop).

A run that stopped mid-episode (a kill, a stop) starts a new episode when it resumes: the
log's readers and the replay buffer mark the last transition before it ``truncated``, so no
transition joins the two (see :mod:`~agent.runtime.replay_log`).

With an episode gate (``runtime.episode_gate``; :mod:`hardware.gate` builds it) the reset at
an episode's end is followed by a wait: every tick holds position (``env.unwrapped.hold()``:
the last command again, so the command stream never stops), logs no transition, and polls the
gate; weights and the supervisor's watch run between these ticks as between any others. One
line on stderr says what the actor waits for; the next episode starts when it is released.

With a planner (``agent.act.planner=cem``) the actor plans on its own copy of the ensemble,
which reaches it with the policy through the weights double buffer
(:func:`~agent.planning.acting_state`); a plan that would overrun ``agent.act.budget_ms``
(at most 80% of the control period) is abandoned and the tick acts with the policy's action
(for ``agent=pets``, the last plan's next step), counted as ``plan_fallbacks``. Until the
first fitted ensemble arrives the policy acts (``agent=pets``: random actions).

Measured per tick: period, lateness against the schedule (jitter), missed deadlines, policy
version lag, queue depth, weight latency (publish to use), transitions per second.
"""

from __future__ import annotations

import gc
import queue as queue_mod
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mbpo_arm.agent.logger import shield_line
from mbpo_arm.agent.planning import CEMPlanner, acting_state, load_acting_state
from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.console import Console
from mbpo_arm.agent.runtime.priority import current_cpu, pin, raise_priority, raise_thread
from mbpo_arm.agent.runtime.replay_log import ReplayLog
from mbpo_arm.agent.runtime.weights import WeightsReader, unflatten
from mbpo_arm.agent.sac import SAC

PLAN_SHARE = 0.8  # of the control period a plan may take at most


class Schedule:
    """Tick ``k`` is due at ``anchor + k * period``; measures lateness and, for
    ``pacing=actor``, waits for the deadline.

    Waiting sleeps until ``spin_s`` before the deadline and spins on ``perf_counter`` for the
    rest: ``time.sleep`` alone overshoots by the scheduler's wake-up latency (50 us to several
    ms under load; Linux timer slack is 50 us), a spin of ~1 ms absorbs it at the cost of
    that much CPU. More than one period late drops the backlog (re-anchors) instead of
    bursting, as the twin's ``_wait_for_tick`` does.

    With ``pacing=robot`` the robot's clock sets the phase, and the first tick after a reset
    (the anchor) comes a little after it (a cold first step); an early tick moves the anchor
    back to it, so lateness is measured against the earliest phase seen, never negative.
    """

    def __init__(self, period: float, spin_s: float, miss_tolerance: float) -> None:
        self.period, self.spin_s, self.tolerance = period, spin_s, miss_tolerance * period
        self.anchor: float | None = None
        self.k, self.last = 0, 0.0
        self.periods: list[float] = []
        self.lateness: list[float] = []
        self.missed_at: list[float] = []  # when each tick later than the tolerance came
        self.missed_cpu: list[int] = []  # and on which CPU (-1: unknown)
        self.skipped = 0  # ticks that never happened: a tick came more than a period late

    @property
    def missed(self) -> int:
        """Ticks later than the tolerance (missed deadlines)."""
        return len(self.missed_at)

    def missed_lateness(self) -> list[float]:
        """The lateness of each missed tick ``[missed]`` (s), in order."""
        return [late for late in self.lateness if late > self.tolerance]

    def restart(self) -> None:
        """Forget the anchor (after a reset the robot starts a new schedule)."""
        self.anchor = None

    def next_deadline(self) -> float | None:
        return None if self.anchor is None else self.anchor + (self.k + 1) * self.period

    def wait(self) -> None:
        """Sleep, then spin, until the next deadline (first call: now)."""
        deadline = self.next_deadline()
        if deadline is None:
            return
        remaining = deadline - time.perf_counter()
        if remaining > self.spin_s:
            time.sleep(remaining - self.spin_s)
        while time.perf_counter() < deadline:
            pass

    def mark(self, t: float) -> None:
        """Record that a tick happened at ``t`` (``perf_counter`` seconds)."""
        if self.anchor is None:
            self.anchor, self.k, self.last = t, 0, t
            return
        self.k += 1
        late = t - (self.anchor + self.k * self.period)
        if late < 0:  # an early tick: the robot's phase is earlier than the anchor
            self.anchor, late = self.anchor + late, 0.0
        self.periods.append(t - self.last)
        self.lateness.append(late)
        if late > self.tolerance:
            self.missed_at.append(t)
            self.missed_cpu.append(current_cpu())
        self.last = t
        if late > self.period:
            self.skipped += int(late // self.period)
            self.anchor, self.k = t, 0


class Actor:
    """The actor's state and its tick; the supervisor owns the loop around it.

    Args:
        env: the task env (its robot paces ``step`` when ``runtime.pacing == "robot"``).
        policy: a CPU :class:`~agent.sac.SAC`; only its actor network is used.
        log: the run's replay log; its ``next_seq`` is this actor's step count.
        runtime: the runtime settings; ``learning_starts``: random actions before this many steps.
        reader: new weights from the learner; ``control``: the shared control block.
        seed: seeds the first reset and the random actions.
        gate: what releases the wait after an episode's reset (``None``: no wait).
        planner: CEM-MPC over the actor's own ensemble, which the weights refresh (``None``:
            the policy acts).
    """

    def __init__(self, env: gym.Env, policy: SAC, log: ReplayLog, runtime: RuntimeConfig,
                 reader: WeightsReader, control: Any, learning_starts: int, seed: int,
                 gate: Any = None, planner: CEMPlanner | None = None) -> None:
        if gate is not None and not hasattr(env.unwrapped, "hold"):
            raise ValueError(f"runtime.episode_gate={runtime.episode_gate} needs a robot task "
                             "(ArmReach-*) that can hold position between episodes; "
                             f"{type(env.unwrapped).__name__} cannot")
        self.env, self.policy, self.log, self.runtime = env, policy, log, runtime
        self.gate = gate  # what releases the wait after an episode's reset (None: no wait)
        self.waiting = False  # between episodes, holding until the gate releases
        self.reader, self.control, self.learning_starts = reader, control, learning_starts
        self.queue: Any = None  # set by the supervisor; replaced when the learner restarts
        self.hold = False  # zero actions (holding position) instead of the policy
        self.rng = np.random.default_rng([seed, log.next_seq])
        self.seed = seed + log.next_seq
        self.schedule = Schedule(runtime.period, runtime.spin_s, runtime.miss_tolerance)
        self.planner = planner
        self.ensemble = planner.ensemble if planner is not None else None
        self.elites: list[int] = []  # the published ensemble's; empty until its first fit
        self.plan_fallbacks = 0  # ticks whose plan overran agent.act.budget_ms
        self._template = {k: v.clone()
                          for k, v in acting_state(policy, self.ensemble).items()}
        log.on_written = self._written
        self.obs: np.ndarray | None = None
        self.episodes, self.ticks, self.dropped = 0, 0, 0
        self.gate_waits, self.gated_ticks, self.gated_s = 0, 0, 0.0
        self._wait_began = 0.0
        self.version_lag: list[int] = []
        self.queue_depth: list[int] = []
        self.weight_latency: list[float] = []
        self.versions_applied = 0
        self.shield_counts: dict[str, int] = {}  # the safety shield's interventions per rule
        self.console = Console()  # status lines, written off the tick
        self._shield_shown = 0.0
        self._between: Callable[[], None] | None = None
        self._t_start = self._t_stop = 0.0
        self.scheduling: dict[str, Any] = {}  # priority and CPUs applied at start
        self.extra_stats: Callable[[], dict[str, Any]] = dict  # the env's control loop's
        self._restore_scheduling: Callable[[], Any] = lambda: None

    @property
    def steps(self) -> int:
        """Transitions this run has (in the log), this process's and earlier ones."""
        return self.log.next_seq

    def start(self, between: Callable[[], None] | None = None) -> None:
        """Start-up: one thread for torch, the reset hook, the first (seeded) reset, the GC
        frozen. ``between()`` (the supervisor's watch) also runs between a slow reset's
        ticks."""
        torch.set_num_threads(1)
        applied, lower = raise_priority(self.runtime.priority)
        for helper in (self.log.writer_tid, self.console.tid):  # just below the actor
            raise_thread(helper, applied)
        unpin = pin(self.runtime.actor_cpus)
        self._restore_scheduling = lambda: (lower(), unpin())
        self.scheduling = {"priority": applied, "actor_cpus": self.runtime.actor_cpus}
        self._between = between
        self.poll_weights()
        if self.log.open_episode:  # the run stopped mid-episode; readers mark it cut there
            self.console.say(f"actor: the run stopped mid-episode at transition "
                             f"{self.log.check.end - 1}; that episode counts as cut there "
                             "(truncated) and a new one starts")
        self._reset(seed=self.seed)
        gc.collect()
        gc.freeze()  # start-up objects leave the generations the collector scans
        gc.disable()  # collections run between ticks, in slack (see between_ticks)
        self._t_start = time.perf_counter()

    def stop(self) -> None:
        """Holding position: no new command is sent (position servos keep the last target;
        the twin does not move without ``advance``); the log is synced."""
        self._t_stop = time.perf_counter()
        if self.gate is not None:
            self.gate.close()
        self.log.sync()
        self.console.close()
        self._restore_scheduling()
        gc.unfreeze()
        gc.enable()

    # ------------------------------------------------------------------------ the tick
    def tick(self) -> None:
        """One control period: act, step (paced), log, hand over; or, while waiting for the
        episode gate, hold position."""
        if self.waiting:
            self._gated_tick()
            return
        action = self.choose_action(self.obs)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        if self.runtime.pacing == "actor":
            self.schedule.wait()
        self.schedule.mark(time.perf_counter())
        if info.get("shield"):
            self._count_shield(info["shield"])
        executed = np.asarray(info.get("executed_action", action), dtype=np.float32)
        self.log.append(self.obs, executed, float(reward), next_obs, bool(terminated),
                        bool(truncated))  # written, then handed over, by the log's thread
        self.ticks += 1
        if terminated or truncated:
            self.episodes += 1
            self._reset()
            if self.gate is not None:
                self._begin_wait()
        else:
            self.obs = next_obs

    def choose_action(self, obs: np.ndarray) -> np.ndarray:
        """Zeros while holding, uniform before ``learning_starts``, else the planner once
        the ensemble is fitted, else the policy (``agent=pets``: uniform)."""
        shape = self.env.action_space.shape
        if self.hold:
            return np.zeros(shape, dtype=np.float32)
        planner = self.planner
        if self.log.next_seq >= self.learning_starts and planner is not None and self.elites:
            return self.plan(obs)
        if self.log.next_seq < self.learning_starts or (planner and planner.policy is None):
            return self.rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        return self.policy.act(obs)

    def plan(self, obs: np.ndarray) -> np.ndarray:
        """The planner's action within its budget; over it, the policy's (for ``agent=pets``
        the last plan's next step), counted. The budget is ``agent.act.budget_ms``, at most
        :data:`PLAN_SHARE` of the control period (the rest is the step's, the log's and the
        weights poll's)."""
        planner = self.planner
        budget_s = min(planner.cfg.budget_ms / 1e3, PLAN_SHARE * self.runtime.period)
        action = planner.plan(obs, self.elites, budget_s=budget_s)
        if action is not None:
            return action
        self.plan_fallbacks += 1
        return planner.fallback_action() if planner.policy is None else self.policy.act(obs)

    def between_ticks(self) -> None:
        """Weights, metrics and, with slack left, a young-generation GC pass."""
        self.poll_weights()
        self.version_lag.append(int(self.control[ctl.UPDATES]) - max(self.reader.version, 0))
        self.queue_depth.append(self._queue_depth())
        deadline = self.schedule.next_deadline()
        if (self.ticks % self.runtime.gc_every_ticks == 0 and deadline is not None
                and deadline - time.perf_counter() > 0.25 * self.runtime.period):
            gc.collect(0)

    def between_reset_ticks(self) -> None:
        """Between the ticks of a slow reset: new weights and the supervisor's watch (no
        metrics, no GC: the reset's ticks are not the actor's)."""
        self.poll_weights()
        if self._between is not None:
            self._between()

    def poll_weights(self) -> bool:
        """Load newer published weights if there are any; never blocks."""
        got = self.reader.poll()
        if got is None:
            return False
        vector, _, stamp = got
        self.elites = load_acting_state(self.policy, self.ensemble,
                                        unflatten(vector, self._template))
        self.weight_latency.append((time.monotonic_ns() - stamp) / 1e9)
        self.versions_applied += 1
        return True

    def _count_shield(self, reasons: tuple[str, ...]) -> None:
        """Count the shield's interventions; a live status line at most once a second."""
        for rule in reasons:
            self.shield_counts[rule] = self.shield_counts.get(rule, 0) + 1
        now = time.monotonic()
        if now - self._shield_shown >= 1.0:
            self._shield_shown = now
            self.console.say(f"actor step {self.steps} | {shield_line(self.shield_counts)}")

    def _written(self, raw: bytes) -> None:
        """In the log's writer thread, once a record is in the log: count it for the
        learner (which reads the log up to ``ACTOR_STEPS``) and queue it for the learner."""
        self.control[ctl.ACTOR_STEPS] = self.log.written
        self._hand_over(raw)

    def _hand_over(self, raw: bytes) -> None:
        q = self.queue
        if q is None:
            self.dropped += 1
            return
        try:
            q.put_nowait(raw)
        except (queue_mod.Full, ValueError, OSError):  # full, or closed after a restart
            self.dropped += 1

    def _queue_depth(self) -> int:
        try:
            return int(self.queue.qsize()) if self.queue is not None else 0
        except (NotImplementedError, OSError, ValueError):  # macOS has no sem_getvalue
            return -1

    def _reset(self, seed: int | None = None) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.schedule.restart()
        if self.planner is not None:
            self.planner.reset()  # no warm start across episodes

    def _begin_wait(self) -> None:
        self.gate.arm()
        self.waiting, self._wait_began = True, time.monotonic()
        self.console.say(f"actor: episode {self.episodes} done, arm at its reset pose; holding "
                         f"until {self.gate.what} starts episode {self.episodes + 1}")

    def _gated_tick(self) -> None:
        """Hold position for one (paced) tick, then poll the gate; no transition."""
        self.obs = self.env.unwrapped.hold()
        if self.runtime.pacing == "actor":
            self.schedule.wait()
        self.schedule.mark(time.perf_counter())
        self.gated_ticks += 1
        if self.gate.released():
            waited = time.monotonic() - self._wait_began
            self.waiting, self.gate_waits = False, self.gate_waits + 1
            self.gated_s += waited
            self.console.say(f"actor: released by {self.gate.source} after {waited:.1f} s; "
                             f"episode {self.episodes + 1} starts")

    # ------------------------------------------------------------------------ figures
    def summary(self) -> dict[str, Any]:
        """Tick, jitter, weights and queue figures of this process (seconds)."""
        elapsed = max((self._t_stop or time.perf_counter()) - self._t_start, 1e-9)
        s = self.schedule
        return {"ticks": self.ticks, "actor_steps": self.steps, "episodes": self.episodes,
                "transitions_per_s": self.ticks / elapsed, "missed_deadlines": s.missed,
                "scheduling": self.scheduling,
                "skipped_ticks": s.skipped,
                "period": percentiles(s.periods),
                "abs_jitter": percentiles(np.abs(s.lateness)),
                "weight_latency": percentiles(self.weight_latency),
                "version_lag": percentiles(self.version_lag),
                "queue_depth": percentiles(self.queue_depth), "queue_dropped": self.dropped,
                "versions_applied": self.versions_applied,
                "torn_weight_reads": self.reader.torn_reads, "target_period": s.period,
                "shield": dict(self.shield_counts),
                "reset_timeouts": self.extra_stats().get("reset_timeouts", 0),
                "gate_waits": self.gate_waits, "gated_ticks": self.gated_ticks,
                "gated_s": self.gated_s, **self.planning_figures()}

    def planning_figures(self) -> dict[str, Any]:
        """Plan time per action (ms p50/p99), plans, overruns and the ticks that fell back
        to the policy; empty without a planner."""
        if self.planner is None:
            return {}
        return {**self.planner.figures(), "plan_fallbacks": self.plan_fallbacks}

    def series(self) -> dict[str, np.ndarray]:
        """This process's raw per-tick series (seconds): ``period`` and ``lateness``
        ``[ticks + gated ticks - resets]``, ``missed_at`` ``[missed deadlines]`` (``perf_counter``
        s, one clock for every process of the machine), ``missed_late`` (their lateness) and
        ``missed_cpu`` (the CPU each ran on), ``weight_latency`` ``[versions applied]``,
        ``version_lag`` and ``queue_depth`` ``[ticks + gated ticks]``."""
        return {"period": np.asarray(self.schedule.periods, dtype=np.float64),
                "lateness": np.asarray(self.schedule.lateness, dtype=np.float64),
                "missed_at": np.asarray(self.schedule.missed_at, dtype=np.float64),
                "missed_late": np.asarray(self.schedule.missed_lateness(), dtype=np.float64),
                "missed_cpu": np.asarray(self.schedule.missed_cpu, dtype=np.int64),
                "weight_latency": np.asarray(self.weight_latency, dtype=np.float64),
                "version_lag": np.asarray(self.version_lag, dtype=np.int64),
                "queue_depth": np.asarray(self.queue_depth, dtype=np.int64)}


def percentiles(values: Any) -> dict[str, float | None]:
    """p50, p99, max and mean of ``values`` (``None`` each when there are none)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p99": None, "max": None, "mean": None}
    p50, p99 = np.percentile(a, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(a.max()), "mean": float(a.mean())}


def run_actor(actor: Actor, should_stop: Callable[[], bool],
              between: Callable[[], None]) -> None:
    """Tick until ``should_stop()``; ``between()`` (the supervisor's watch) runs after each
    tick, after the actor's own :meth:`Actor.between_ticks`."""
    while not should_stop():
        actor.tick()
        actor.between_ticks()
        between()
