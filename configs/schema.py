"""Typed schemas of the config tree, checked at start-up.

Each part's dataclass lives beside the code it configures (``agent.sac.SACConfig``,
``sim.twin.TwinConfig``, ...), so every part receives exactly its own typed sub-config; this
module composes them into the run's schema and turns any problem into a one-line
:class:`ConfigError` that names the key and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from agent.ensemble import EnsembleConfig
from agent.logger import LoggerConfig
from agent.mopo import FinetuneConfig, MOPOConfig
from agent.run import MBPOConfig, TrainerConfig
from agent.runtime.config import RuntimeConfig
from agent.sac import SACConfig
from envs.factory import TaskConfig, resolve_limits_file
from hardware.ros2 import Ros2Config
from hardware.serial_robot import SerialConfig
from hardware.shield_config import ShieldSettings
from sim.twin import TwinConfig

CONFIG_DIR = Path(__file__).parent

# The schema of each option of a polymorphic group.
BACKEND_SCHEMAS: dict[str, type] = {"mujoco": TwinConfig, "serial": SerialConfig,
                                     "ros2": Ros2Config}
ALGOS = ("sac", "mbpo")


class ConfigError(ValueError):
    """A bad config key or value; the message is one line naming the key."""


@dataclass
class AgentConfig:
    """The learning algorithm and its parts."""

    algo: str = "sac"  # sac (model-free) or mbpo (model-based)
    sac: SACConfig = field(default_factory=SACConfig)  # the policy optimizer
    model: EnsembleConfig | None = None  # the dynamics ensemble (mbpo)
    mbpo: MBPOConfig | None = None  # the model-based schedule (mbpo)
    mopo: MOPOConfig | None = None  # offline pretraining (mbpo-arm pretrain)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # used with init_from

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"agent.algo={self.algo!r} is not allowed; choose one of {ALGOS}")
        if self.algo == "mbpo" and (self.model is None or self.mbpo is None):
            raise ValueError("agent.algo=mbpo needs agent.model and agent.mbpo; start from "
                             "agent=mbpo (configs/agent/mbpo.yaml)")


@dataclass
class RunConfig:
    """One run: the backend, the task, the agent, the schedule, the logging."""

    backend_name: str
    backend: Any
    task: TaskConfig
    agent: AgentConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    seed: int = 0
    device: str = "cpu"
    run_dir: str | None = None
    resume: str | None = None
    init_from: str | None = None  # a pretrained (or any) run to start from
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # sync loop, or async actor
    shield: ShieldSettings = field(default_factory=ShieldSettings)  # the safety shield


def options(group: str) -> list[str]:
    """The YAML options of a config group, e.g. ``options("backend") == ["mujoco"]``."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def validate(cfg: DictConfig, backend_name: str) -> RunConfig:
    """Check the composed config against the schemas; raise :class:`ConfigError` naming the
    first bad key."""
    if backend_name not in BACKEND_SCHEMAS:
        raise ConfigError(f"backend={backend_name} is not allowed; choose one of "
                          f"{', '.join(sorted(BACKEND_SCHEMAS))}")
    parts = {"backend": BACKEND_SCHEMAS[backend_name], "task": TaskConfig,
             "agent": AgentConfig, "trainer": TrainerConfig, "logger": LoggerConfig,
             "runtime": RuntimeConfig, "shield": ShieldSettings}
    built = {name: _typed(name, schema, cfg.get(name, {})) for name, schema in parts.items()}
    top = {k: cfg.get(k) for k in ("seed", "device", "run_dir", "resume", "init_from")}
    extra = set(cfg.keys()) - set(parts) - set(top) - {"hydra"}
    if extra:
        raise ConfigError(f"{sorted(extra)[0]} is not a config key; top-level keys are "
                          f"{', '.join(sorted([*parts, *top]))}")
    limits = built["shield"].limits_file
    if limits is not None and not resolve_limits_file(limits).is_file():
        raise ConfigError(f"shield.limits_file={limits}: {resolve_limits_file(limits)} not "
                          "found; name a file in configs/limits/ or give a path")
    if not isinstance(top["seed"], int):
        raise ConfigError(f"seed must be an integer, got {top['seed']!r}")
    device = str(top["device"])
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ConfigError(f"device={device} is not allowed; choose cpu, cuda, cuda:N or mps")
    return RunConfig(backend_name=backend_name, **built, seed=top["seed"], device=device,
                     run_dir=top["run_dir"], resume=top["resume"], init_from=top["init_from"])


def _typed(prefix: str, schema: type, node: Any) -> Any:
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
