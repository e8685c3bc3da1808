"""The control loop: one thread owns the arm.

Modelled on ros2_control's controller manager: a backend (the twin, a serial servo bus, a
ROS 2 arm) only reads and writes; :class:`ControlLoop` owns, on the one thread that calls it,
everything else:

- the clock: one ``control_hz`` for every backend; on a wall clock (hardware, a realtime twin)
  it sleeps, then spins, to each tick's deadline and measures the lateness; on simulated time
  it steps the twin's physics one period instead;
- the shield, a pure filter over (state, proposal) -> command (:class:`hardware.shield.Shield`);
- the watchdog as a deadline check of that same thread: state older than the shield's
  ``state_timeout_periods`` holds position (and, with ``on_timeout: release``, releases torque
  after ``release_after_s``); a loop that stalls entirely is caught by the hardware's own
  watchdog where it has one (the Dynamixel Bus Watchdog) and by :class:`StallMonitor`, which
  reads only the loop's heartbeat and never touches the bus or the transport;
- the e-stop (latched: every tick sends the hold);
- the one reset move, always through the shield, at the limits file's ``home_speed``
  (:meth:`ControlLoop.reset`); only a simulated arm may be placed instead.

No other thread ever calls a backend.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mbpo_arm.hardware.robot import Backend, JointLimits, RobotState, Simulated, Torque
from mbpo_arm.hardware.shield import Shield

SPIN_S = 1e-3  # the last stretch before a deadline is spun, not slept: sleep wakes up late
SETTLE_S, SETTLE_SPEED = 1.0, 0.05  # a reset waits up to 1 s for joints slower than 0.05 rad/s


def require(backend: object, capability: type, why: str) -> None:
    """Fail at start-up, naming the capability, when ``backend`` lacks it."""
    if not isinstance(backend, capability):
        raise TypeError(f"{type(backend).__name__} does not implement {capability.__name__} "
                        f"({', '.join(n for n in capability.__dict__ if not n.startswith('_'))})"
                        f", which {why} needs")


# ------------------------------------------------------------------------------ the clock
class Pace:
    """Tick ``k`` is due at ``anchor + k * period``; :meth:`wait` sleeps, then spins, to it and
    records the lateness. More than a period late drops the backlog (re-anchors) instead of
    bursting, and counts the ticks that never happened."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.anchor: float | None = None
        self.k = 0
        self.lateness: list[float] = []  # s, one per paced tick
        self.skipped = 0

    def restart(self) -> None:
        """A new schedule from the next tick (after a reset or a pause)."""
        self.anchor = None

    def wait(self) -> None:
        now = time.perf_counter()
        if self.anchor is None:
            self.anchor, self.k = now, 0
            return
        self.k += 1
        deadline = self.anchor + self.k * self.period
        if deadline - now > SPIN_S:
            time.sleep(deadline - now - SPIN_S)
        while (now := time.perf_counter()) < deadline:
            pass
        late = now - deadline
        self.lateness.append(late)
        if late > self.period:
            self.skipped += int(late // self.period)
            self.anchor, self.k = now, 0


@dataclass(frozen=True)
class Tick:
    """One control period: the ``[J]`` command ``sent``, the ``state`` read after it, and the
    shield rules that changed the proposal (``reasons``)."""

    sent: np.ndarray
    state: RobotState
    reasons: tuple[str, ...] = ()
    yielded: tuple[str, ...] = ()


# ------------------------------------------------------------------------------- the loop
class ControlLoop:
    """The one owner of ``backend``; see the module docstring.

    Args:
        backend: a :class:`Backend`.
        shield: the safety shield; ``None`` only for a simulated arm (``shield.enabled=false``).
        control_hz: the rate of every tick.
        realtime: pace a simulated arm by the wall clock too (a hardware arm always is).
        place_resets: a simulated arm is placed at its reset pose instead of moved there.

    Attributes:
        between: called after every tick of a reset move (whoever owns the loop runs there what
            it runs between its own ticks: the async actor polls weights, the supervisor
            watches its learner).
        heartbeat: ``time.monotonic()`` of the latest tick (read by :class:`StallMonitor`).
        reset_timeouts: reset moves stopped by their wall-clock bound.
    """

    def __init__(self, backend: Backend, shield: Shield | None, control_hz: float,
                 realtime: bool = False, place_resets: bool = False) -> None:
        require(backend, Backend, "the control loop")
        self.simulated = isinstance(backend, Simulated)
        if place_resets and not self.simulated:
            raise ValueError("shield.slow_reset=false would move a hardware arm without the "
                             "shield; only the twin may be placed at its reset pose")
        if shield is None and not self.simulated:
            raise ValueError("a hardware arm runs only behind the shield")
        self.backend, self.shield = backend, shield
        self.period = 1.0 / float(control_hz)
        self.place_resets = place_resets
        self.pace = Pace(self.period) if realtime or not self.simulated else None
        self._clock: Callable[[], float] = backend.clock if self.simulated else time.monotonic
        self.between: Callable[[], None] | None = None
        self.heartbeat = time.monotonic()
        self.reset_timeouts = 0
        self.monitor: StallMonitor | None = None  # started by connect(), stopped by close()
        self.ticks = 0
        self.state: RobotState | None = None
        self.command: np.ndarray | None = None
        self.last = Tick(np.zeros(0), RobotState(np.zeros(0), np.zeros(0), 0.0))

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.backend.joint_names

    @property
    def limits(self) -> JointLimits:
        return self.backend.limits

    def now(self) -> float:
        """Now on the clock of the state stamps."""
        return self._clock()

    def connect(self) -> RobotState:
        """Connect the backend and start the command stream at its present pose."""
        self.backend.connect()
        self.state = self.backend.read()
        self.command = np.asarray(self.state.position, dtype=np.float64).copy()
        if self.shield is not None:
            self.shield.restart(self.state, self.now())
        if self.monitor is not None and not self.monitor.running:
            self.monitor.start()
        return self.state

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()
        self.backend.close()

    # ------------------------------------------------------------------------ the tick
    def tick(self, proposal: np.ndarray) -> Tick:
        """One period: the shield's command for ``[J]`` ``proposal`` is written, the clock
        advances (sleep to the deadline, or the twin's physics), the state is read."""
        if self.state is None:
            self.connect()
        if self.now() - self.state.stamp > 1.5 * self.period:  # a pause: judge a fresh state
            self.state = self.backend.read()
            if self.pace is not None:
                self.pace.restart()
        reasons: tuple[str, ...] = ()
        yielded: tuple[str, ...] = ()
        command = np.asarray(proposal, dtype=np.float64)
        if self.shield is not None:
            result = self.shield.filter(command, self.state, self.now())
            command, reasons, yielded = result.command, result.reasons, result.yielded
        sent = np.asarray(self.backend.write(command), dtype=np.float64)
        self._advance()
        self.state = self.backend.read()
        self.command = sent
        self.ticks += 1
        self.heartbeat = time.monotonic()
        if self.shield is not None:
            self._maybe_release()
        self.last = Tick(sent, self.state, reasons, yielded)
        return self.last

    def hold(self) -> Tick:
        """One period holding the last command: no new motion, the command stream goes on."""
        if self.command is None:
            self.connect()
        return self.tick(self.command)

    def _advance(self) -> None:
        if self.simulated:
            self.backend.step()
        if self.pace is not None:
            self.pace.wait()

    def _maybe_release(self) -> None:
        """Rule 7 with ``on_timeout: release``: torque off after ``release_after_s`` of
        holding for stale state; the next reset enables it again."""
        shield = self.shield
        wd = shield.watchdog
        if (wd.on_timeout != "release" or shield.released or shield.holding != "watchdog"
                or shield.hold_since is None):
            return
        if self.now() - shield.hold_since >= wd.release_after_s:
            if isinstance(self.backend, Torque):
                self.backend.release_torque()
            shield.released = True  # held (rule 7) until the next reset

    # ------------------------------------------------------------------------ the reset
    def reset(self, target: np.ndarray, timeout_s: float | None = None) -> RobotState:
        """Bring the arm to ``[J]`` ``target``: placed there (a simulated arm with
        ``place_resets``), else moved through the shield at ``home_speed`` (all joints arrive
        together), then up to ``SETTLE_S`` for joints to come to rest. A latched e-stop holds
        the arm where it is. Bounded in ticks and in wall-clock seconds (``timeout_s``;
        default 1.5 times the ticks' duration plus 1 s)."""
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (len(self.joint_names),):
            raise ValueError(f"reset position has shape {target.shape}, expected "
                             f"({len(self.joint_names)},) for joints {list(self.joint_names)}")
        if self.state is None:
            self.connect()
        shield = self.shield
        if shield is not None and shield.estop.poll():
            return self.hold().state
        if shield is not None and shield.released and isinstance(self.backend, Torque):
            self.backend.enable_torque()
        if self.place_resets:
            self.state = self.backend.place(self.limits.clip(target))
            self.command = np.asarray(self.state.position, dtype=np.float64).copy()
            if shield is not None:
                shield.restart(self.state, self.now())
            return self.state
        return self._move(target, timeout_s)

    def _move(self, target: np.ndarray, timeout_s: float | None) -> RobotState:
        shield = self.shield
        if shield is not None:
            shield.restart(self.state, self.now())
            speed, lo, hi = shield.config.home_speed, shield.lower, shield.upper
            command = shield.history.command.copy()
        else:  # the unshielded twin, placed resets off: the joint limits and a slow speed
            speed, lo, hi = 0.5, self.limits.lower, self.limits.upper
            command = np.asarray(self.state.position, dtype=np.float64).copy()
        target = np.clip(target, lo, hi)
        step = speed * self.period
        ticks = 2 * math.ceil(float(np.max(np.abs(target - command))) / step) \
            + math.ceil(SETTLE_S / self.period) + 10
        limit = timeout_s if timeout_s is not None else 1.5 * ticks * self.period + 1.0
        deadline = time.monotonic() + limit
        if self.pace is not None:
            self.pace.restart()
        for _ in range(ticks):
            delta = target - command
            biggest = float(np.max(np.abs(delta)))
            proposal = target if biggest <= step else command + delta * (step / biggest)
            command = self.tick(proposal).sent
            if self.between is not None:
                self.between()
            if shield is not None and shield.estop.latched:
                break
            if (np.array_equal(command, target)
                    and np.max(np.abs(self.state.velocity)) < SETTLE_SPEED):
                break
            if time.monotonic() > deadline:
                self.reset_timeouts += 1
                print(f"control loop: the reset move stopped at its time bound, "
                      f"{np.abs(self.state.position - target).max():.3f} rad from the reset "
                      "pose; the episode starts there", file=sys.stderr, flush=True)
                break
        if self.pace is not None:
            self.pace.restart()  # the episode's ticks start a new schedule
        return self.state

    # ------------------------------------------------------------------------ figures
    def stats(self) -> dict[str, float | int | None]:
        """Ticks, skipped ticks, reset timeouts, stalls (with a monitor) and the p50/p99/max
        lateness (ms)."""
        late = np.asarray(self.pace.lateness if self.pace is not None else [], dtype=np.float64)
        out: dict[str, float | int | None] = {
            "loop_ticks": self.ticks, "loop_skipped": self.pace.skipped if self.pace else 0,
            "reset_timeouts": self.reset_timeouts}
        if self.monitor is not None:
            out |= {"loop_stalls": self.monitor.stalls,
                    "loop_longest_stall_s": self.monitor.longest_s}
        for name, q in (("p50", 50), ("p99", 99), ("max", 100)):
            out[f"loop_lateness_{name}_ms"] = float(np.percentile(late, q) * 1e3) \
                if late.size else None
        return out


class StallMonitor:
    """Watches a :class:`ControlLoop`'s heartbeat from a thread: a loop with no tick for
    ``stall_s`` (a hung policy, a long pause of the process, learner updates between the
    ticks of a synchronous run) is counted and said on stderr, at most one line per
    ``report_every_s``. It never touches the bus or the transport: the hardware's own watchdog
    (the Dynamixel Bus Watchdog) stops the servos of a stalled loop, a position servo keeps its
    last goal meanwhile, and the loop's first tick after the stall judges a fresh state (a
    stale one holds: rule 7)."""

    def __init__(self, loop: ControlLoop, stall_s: float, report_every_s: float = 10.0) -> None:
        self.loop, self.stall_s, self.report_every_s = loop, stall_s, report_every_s
        self.stalls, self.longest_s = 0, 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._stop.clear()
        self.loop.heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="stall-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def _run(self) -> None:
        began: float | None = None
        said, unsaid = -math.inf, 0  # when the last line was printed; stalls since then
        while not self._stop.wait(min(self.stall_s / 2, 0.1)):
            beat = self.loop.heartbeat
            quiet = time.monotonic() - beat
            if began is None and quiet > self.stall_s:
                began, self.stalls, unsaid = beat, self.stalls + 1, unsaid + 1
                if time.monotonic() - said >= self.report_every_s:
                    more = f" ({unsaid} stalls since the last line)" if unsaid > 1 else ""
                    print(f"control loop: no tick for {quiet:.2f} s{more}; the servos hold "
                          f"their last goal (longest stall so far {self.longest_s:.2f} s)",
                          file=sys.stderr, flush=True)
                    said, unsaid = time.monotonic(), 0
            elif began is not None and beat > began:
                self.longest_s = max(self.longest_s, beat - began)
                began = None
