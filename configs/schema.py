"""Typed schemas of the config tree: the only source of defaults, checked at start-up.

Each part's dataclass lives beside the code it configures, in a light ``config`` module
(:mod:`mbpo_arm.agent.config`, :mod:`mbpo_arm.sim.config`, ...) that imports no torch, mujoco,
gymnasium or driver; this module composes them into the run's schema, registers them with
Hydra's ConfigStore (the YAML files under this folder are presets that change values, never
restate them) and turns any problem into a one-line :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field, fields, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mbpo_arm.agent.config import (
    PRECISIONS,
    EnsembleConfig,
    FinetuneConfig,
    LoggerConfig,
    MBPOConfig,
    MOPOConfig,
    PlannerConfig,
    SACConfig,
    TrainerConfig,
)
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.envs.config import TaskConfig
from mbpo_arm.hardware.config import LIMITS_DIR, SerialConfig, ShieldSettings, limits_path
from mbpo_arm.hardware.ros2.config import Ros2Config
from mbpo_arm.sim.config import TwinConfig

CONFIG_DIR = Path(str(files("mbpo_arm.configs")))

# The schema of each option of the polymorphic backend group.
BACKEND_SCHEMAS: dict[str, type] = {"mujoco": TwinConfig, "serial": SerialConfig,
                                     "ros2": Ros2Config}
ALGOS = ("sac", "mbpo", "pets")


class ConfigError(ValueError):
    """A bad config key or value; the message is one line naming the key."""


@dataclass
class AgentConfig:
    """The learning algorithm and its parts."""

    algo: str = "sac"  # sac (model-free), mbpo (model-based) or pets (planning only)
    sac: SACConfig = field(default_factory=SACConfig)  # the policy optimizer
    model: EnsembleConfig = field(default_factory=EnsembleConfig)  # the dynamics ensemble (mbpo)
    mbpo: MBPOConfig = field(default_factory=MBPOConfig)  # the model-based schedule (mbpo)
    mopo: MOPOConfig = field(default_factory=MOPOConfig)  # offline pretraining (mbpo-arm pretrain)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # used with init_from
    act: PlannerConfig = field(default_factory=PlannerConfig)  # how it acts: policy or planner

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"agent.algo={self.algo!r} is not allowed; choose one of {ALGOS}")
        if self.algo == "pets" and self.act.planner is None:  # PETS acts only by planning
            self.act = replace(self.act, planner="cem")
        if self.algo == "sac" and self.act.planner is not None:
            raise ValueError("agent.act.planner needs a model: use agent=mbpo (or a preset of "
                             "it) or agent=pets")
        if self.mbpo.model_learning_starts is None:  # the first policy acts on a model
            self.mbpo = replace(self.mbpo, model_learning_starts=self.sac.learning_starts)


@dataclass
class ResumeOptions:
    """What ``resume=<run_dir>`` may do about damage it finds; on the command line as
    ``resume.fallback=true`` and ``resume.accept_log_damage=true``, with ``resume=``."""

    # a damaged newest checkpoint: set it aside and continue from the newest intact one
    fallback: bool = False
    # a damaged replay log (runtime=async): continue without its damaged records
    accept_log_damage: bool = False


@dataclass
class RunConfig:
    """One run: the backend, the task, the agent, the schedule, the logging."""

    backend_name: str = "mujoco"  # the backend group's choice (--backend)
    backend: Any = None  # the backend's settings: one of BACKEND_SCHEMAS
    task: TaskConfig = field(default_factory=TaskConfig)  # the task and its settings
    agent: AgentConfig = field(default_factory=AgentConfig)  # the learning algorithm
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # the run's schedule
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # where metrics go
    seed: int = 0  # seeds the env, the replay sampling and the networks
    device: str = "cpu"  # torch device for learning: cpu, cuda, cuda:1, mps
    run_dir: str | None = None  # where results go; null: runs/<task>-<agent>-<time>-s<seed>
    resume: str | None = None  # a run directory to continue from its last checkpoint
    # what a resume may do about damage (resume.fallback, resume.accept_log_damage)
    resume_options: ResumeOptions = field(default_factory=ResumeOptions)
    init_from: str | None = None  # a run (e.g. from `mbpo-arm pretrain`) to start from
    # torch threads of the sync trainer and of each learner: a number, or auto (the cores
    # other processes leave idle, re-checked every 5 s, at most the CPUs the actor leaves).
    # One by default: on a shared machine more threads fight for the cores (500 SAC updates:
    # 15 s with 1 thread, 224 s with 2 beside one other job), and one is bit-reproducible.
    threads: str = "1"
    # number format of the learner (SAC updates, ensemble fit, model rollouts): fp32, bf16 or
    # auto (bf16 where the device runs it natively: a CPU with AMX-BF16 or AVX512-BF16, a
    # CUDA GPU with bf16; else fp32). With bf16 only the forward passes are autocast; losses,
    # targets, normalizers, parameters and Adam states stay fp32. fp32 by default until the
    # learning curves of bf16 are measured against fp32's.
    precision: str = "fp32"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # sync loop, or async actor
    shield: ShieldSettings = field(default_factory=ShieldSettings)  # the safety shield


# The groups of the tree whose default option is the schema itself (no YAML file).
SCHEMA_OPTIONS: dict[str, dict[str, type]] = {
    "backend": BACKEND_SCHEMAS, "task": {"reach": TaskConfig}, "agent": {"sac": AgentConfig},
    "logger": {"default": LoggerConfig}, "runtime": {"sync": RuntimeConfig}}
PARTS: dict[str, type] = {"task": TaskConfig, "agent": AgentConfig, "trainer": TrainerConfig,
                          "logger": LoggerConfig, "runtime": RuntimeConfig,
                          "shield": ShieldSettings, "resume_options": ResumeOptions}
TOP_KEYS = ("seed", "device", "run_dir", "resume", "init_from", "threads", "precision")


@functools.cache
def register() -> None:
    """Put the schemas in Hydra's ConfigStore: ``train_schema`` (the run) and each group's
    schema option (``backend/mujoco``, ``agent/sac``, ...), which the YAML presets extend.
    Once per process: the store is a process-wide singleton and storing a schema converts
    its dataclass again (a third of a compose)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=RunConfig)
    for group, schemas in SCHEMA_OPTIONS.items():
        for name, schema in schemas.items():
            store.store(group=group, name=name, node=schema)


@functools.cache
def dict_keys(schema: type | None = None, prefix: str = "") -> frozenset[str]:
    """The dotted keys of the run's schema whose values are dicts (e.g.
    ``runtime.ray.learner_resources``)."""
    found: set[str] = set()
    for f in fields(schema or RunConfig):
        hint = typing.get_type_hints(schema or RunConfig)[f.name]
        if typing.get_origin(hint) is dict:
            found.add(prefix + f.name)
        elif dataclasses.is_dataclass(hint):
            found |= dict_keys(hint, f"{prefix}{f.name}.")
    return frozenset(found)


def options(group: str) -> list[str]:
    """The options of a config group, e.g. ``options("backend") == ["mujoco", "ros2",
    "serial"]``: the schema options and the YAML presets."""
    yaml = {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")}
    return sorted(yaml | set(SCHEMA_OPTIONS.get(group, {})))


def validate(cfg: DictConfig, backend_name: str) -> RunConfig:
    """Check the composed config against the schemas; raise :class:`ConfigError` naming the
    first bad key."""
    if backend_name not in BACKEND_SCHEMAS:
        raise ConfigError(f"backend={backend_name} is not allowed; choose one of "
                          f"{', '.join(sorted(BACKEND_SCHEMAS))}")
    parts = {"backend": BACKEND_SCHEMAS[backend_name], **PARTS}
    extra = set(cfg.keys()) - set(parts) - set(TOP_KEYS) - {"hydra", "backend_name"}
    if extra:
        shown = sorted({*parts, *TOP_KEYS} - {"resume_options"})  # set as resume.<key>
        raise ConfigError(f"{sorted(extra)[0]} is not a config key; top-level keys are "
                          f"{', '.join(shown)}")
    built = {name: typed(name, schema, cfg.get(name, {})) for name, schema in parts.items()}
    top = {k: cfg.get(k, getattr(RunConfig, k)) for k in TOP_KEYS}
    limits = built["shield"].limits_file
    if limits is not None and not limits_path(limits).is_file():
        raise ConfigError(f"shield.limits_file={limits}: {limits_path(limits)} not found; name "
                          f"a file in {LIMITS_DIR} or give a path")
    if not isinstance(top["seed"], int):
        raise ConfigError(f"seed must be an integer, got {top['seed']!r}")
    top["threads"] = str(top["threads"])
    if not (top["threads"] == "auto" or top["threads"].isdigit() and int(top["threads"]) >= 1):
        raise ConfigError(f"threads={top['threads']} is not allowed; give a number >= 1 or auto")
    top["precision"] = str(top["precision"])
    if top["precision"] not in PRECISIONS:
        raise ConfigError(f"precision={top['precision']} is not allowed; choose one of "
                          f"{', '.join(PRECISIONS)}")
    device = str(top["device"])
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ConfigError(f"device={device} is not allowed; choose cpu, cuda, cuda:N or mps")
    return RunConfig(backend_name=backend_name, **built, **{**top, "device": device})


def typed(prefix: str, schema: type, node: Any) -> Any:
    """``node`` merged into ``schema``, as a dataclass instance (its checks run)."""
    if not isinstance(node, DictConfig | dict):
        raise ConfigError(f"{prefix} must be a group of keys, got {node!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = f"{prefix}.{err.full_key}" if getattr(err, "full_key", None) else prefix
        first = str(err).splitlines()[0]
        if "not in" in first:
            allowed = ", ".join(f.name for f in fields(schema))
            raise ConfigError(f"{key} is not a config key; keys under {prefix}: {allowed}") \
                from None
        raise ConfigError(f"{key}: {first}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None
