"""How a run is executed: the synchronous loop of :mod:`agent.train`, an actor at a fixed
rate with a learner in a background process (:mod:`agent.runtime.supervisor`), or the same
actor with the learner (and any twins) as Ray actors (:mod:`launch.ray_runtime`)."""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("sync", "async", "ray")
PACING = ("robot", "actor")
ON_DEATH = ("act", "hold")
RESETS = ("env",)
GATES = ("key", "file", "topic")
PRIORITIES = ("fifo", "nice", "normal")  # agent.runtime.priority


@dataclass
class RayConfig:
    """``runtime.ray``: where the learner and the twins run (``runtime=ray``)."""

    address: str | None = None  # null: start a local Ray instance; auto or host:port: join one
    namespace: str = "mbpo-arm"  # Ray namespace of the run's named learner
    learner_name: str = "mbpo-learner"  # a second mbpo-arm process with this name joins it
    source: str = "robot"  # this process's name as a source of transitions (one per arm)
    # The arms feeding one learner, each an mbpo-arm process with its source (empty: any
    # source). Listed: the learner refuses other names, and ends when every listed arm that
    # joined has finished (not when the one that created it has).
    robots: list[str] = field(default_factory=list)
    learner_dir: str | None = None  # the learner's run directory on its node; null: run_dir
    learner_num_cpus: float = 1.0  # what Ray reserves for the learner (it places it by these)
    learner_num_gpus: float = 0.0  # 1: a node with a GPU (then set device=cuda)
    learner_resources: dict[str, float] = field(default_factory=dict)  # custom, e.g. {gpu_box: 1}
    twins: int = 0  # Ray actors stepping a twin unpaced with the latest weights
    twin_num_cpus: float = 1.0
    twin_resources: dict[str, float] = field(default_factory=dict)
    twin_noise: float = 0.1  # Gaussian action noise of twin i: twin_noise * (i + 1) / twins
    batch_records: int = 500  # most transitions per shipped batch
    ship_every_s: float = 0.1  # a helper thread ships the log's new records this often
    call_timeout_s: float = 1.0  # one call to the learner; later: counted lost, tried again
    lost_after_s: float = 2.0  # no answer this long: the learner counts as gone (on_death)
    weights_every_s: float = 0.2  # how often the weights thread asks for newer weights
    # Where the policy is evaluated every trainer.eval_every env steps. learner: in the
    # learner process (costs learner time); twin: on an evaluation actor placed like the twins
    # (twin_num_cpus, twin_resources), its rows in eval.jsonl of the learner's run directory.
    evaluate_on: str = "learner"

    def __post_init__(self) -> None:
        for name in ("learner_num_cpus", "learner_num_gpus", "twin_num_cpus", "twin_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"runtime.ray.{name} must be >= 0, got {getattr(self, name)}")
        if self.twins < 0:
            raise ValueError(f"runtime.ray.twins must be >= 0, got {self.twins}")
        for name in (self.source, *self.robots):
            if not name or name.startswith("twin") and name[4:].isdigit():
                raise ValueError(f"runtime.ray: {name!r} cannot name an arm (empty, or a twin's "
                                 "name twin<i>): pick another runtime.ray.source / robots")
        if self.robots and self.source not in self.robots:
            raise ValueError(f"runtime.ray.source={self.source} is not in runtime.ray.robots="
                             f"{list(self.robots)}: add it, or set source to one of them")
        if self.evaluate_on not in ("learner", "twin"):
            raise ValueError(f"runtime.ray.evaluate_on={self.evaluate_on!r} is not allowed; "
                             "choose learner or twin")
        for name in ("batch_records", "ship_every_s", "call_timeout_s", "lost_after_s",
                     "weights_every_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"runtime.ray.{name} must be > 0, got {getattr(self, name)}")


@dataclass
class RuntimeConfig:
    """The ``runtime`` group (``configs/runtime/``); only ``mode=async`` reads the rest."""

    mode: str = "sync"  # sync: agent.train's loop; async: fixed-rate actor + learner process;
    #   ray: the same actor, the learner (and runtime.ray.twins) as Ray actors
    control_hz: float = 20.0  # the control rate of every backend (the one key), sync or async
    pacing: str = "robot"  # async: robot: the control loop waits for each tick (the twin in
    #   real time; hardware always); actor: the twin unpaced, the actor waits
    spin_s: float = 0.001  # pacing=actor: sleep until this long before the deadline, then spin
    miss_tolerance: float = 0.1  # a tick later than this fraction of a period misses it
    fsync_every_records: int = 50  # fsync the replay log after this many appends ...
    fsync_every_s: float = 1.0  # ... or this many seconds, whichever comes first
    queue_size: int = 10_000  # transitions in flight to the learner; full: the log has them
    target_utd: float | None = None  # SAC updates per env step; null: agent.sac.utd
    publish_every_updates: int = 50  # publish policy weights after this many updates ...
    publish_every_s: float = 0.5  # ... or this many seconds, whichever comes first
    checkpoint_every_s: float = 60.0  # learner checkpoints this often (and every trainer's N)
    log_every_s: float = 5.0  # learner progress events in metrics.jsonl
    on_learner_death: str = "act"  # act: keep the last weights; hold: zero actions (hold)
    restart_delay_s: float = 1.0  # wait before restarting a dead learner
    max_restarts: int = 100  # then keep acting without a learner
    reset: str = "env"  # episode end: env (the env's reset)
    episode_gate: str | None = None  # after each episode's reset, hold position until the
    #   operator releases: key (Enter in the terminal), file (gate_file appears), topic (true
    #   on the ros2 backend's next_episode_topic); null: no wait. mode=async only
    gate_file: str | None = None  # episode_gate=file: this path releases it (then deleted)
    priority: str = "fifo"  # actor thread: fifo (SCHED_FIFO 50), nice (-10) or normal; falls
    #   back to what the system allows (agent/runtime/priority.py)
    actor_cpus: list[int] | None = None  # pin the actor to these CPUs; null: no pinning
    learner_cpus: list[int] | None = None  # pin the learner; null: the CPUs the actor leaves
    gc_every_ticks: int = 20  # gc.collect(0) between ticks this often, when there is slack
    stop_timeout_s: float = 120.0  # how long shutdown waits for the learner's last checkpoint
    ray: RayConfig = field(default_factory=RayConfig)  # runtime=ray only

    def __post_init__(self) -> None:
        choices = (("mode", MODES), ("pacing", PACING), ("on_learner_death", ON_DEATH),
                   ("priority", PRIORITIES), ("reset", RESETS))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"runtime.{name}={getattr(self, name)!r} is not allowed; "
                                 f"choose one of {', '.join(allowed)}")
        positive = ("control_hz", "fsync_every_records", "fsync_every_s", "queue_size",
                    "publish_every_updates", "publish_every_s", "checkpoint_every_s",
                    "log_every_s", "gc_every_ticks", "stop_timeout_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"runtime.{name} must be > 0, got {getattr(self, name)}")
        for name in ("spin_s", "miss_tolerance", "restart_delay_s", "max_restarts"):
            if getattr(self, name) < 0:
                raise ValueError(f"runtime.{name} must be >= 0, got {getattr(self, name)}")
        if self.target_utd is not None and not self.target_utd > 0:
            raise ValueError(f"runtime.target_utd must be > 0 or null, got {self.target_utd}")
        self._check_gate()
        if self.spin_s >= 1.0 / self.control_hz:
            raise ValueError(f"runtime.spin_s={self.spin_s} is not shorter than the period "
                             f"1/{self.control_hz} s")

    def _check_gate(self) -> None:
        if self.episode_gate is not None and self.episode_gate not in GATES:
            raise ValueError(f"runtime.episode_gate={self.episode_gate!r} is not allowed; "
                             f"choose one of {', '.join(GATES)} or null")
        if self.episode_gate is not None and self.mode == "sync":
            raise ValueError(f"runtime.episode_gate={self.episode_gate} needs runtime=async "
                             "or ray (the fixed-rate actor holds position while it waits); "
                             "runtime=sync has no gate")
        if self.episode_gate == "file" and not self.gate_file:
            raise ValueError("runtime.episode_gate=file needs runtime.gate_file=<path>")

    @property
    def period(self) -> float:
        """Seconds per tick."""
        return 1.0 / self.control_hz
