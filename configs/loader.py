"""The one config loader: compose the Hydra tree (or reload a run's saved config), validate it,
save it. Light: Hydra and OmegaConf only, so ``mbpo-arm --help`` and the offline commands load
no learning code.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, fields
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mbpo_arm.configs.describe import defaults_list
from mbpo_arm.configs.schema import (
    CONFIG_DIR,
    ConfigError,
    ResumeOptions,
    RunConfig,
    dict_keys,
    options,
    register,
    validate,
)

SAVED_CONFIG = "config.yaml"


def compose(overrides: list[str]) -> tuple[DictConfig, str]:
    """The Hydra-composed config and the chosen backend; errors become :class:`ConfigError`."""
    register()
    robot = next((o.split("=", 1)[1] for o in overrides if o.startswith("robot=")), None)
    backend = next((o.split("=", 1)[1] for o in overrides if o.startswith("backend=")), None)
    if robot not in (None, "null") and backend != "serial":
        raise ConfigError(f"robot={robot} is a serial-bus arm; add --backend serial")
    # A dict key's value (runtime.ray.learner_resources={gpu_box: 1}) replaces its dict:
    # plain Hydra merges it into the (empty, struct) default and refuses every new key.
    overrides = [f"++{o}" if o.split("=", 1)[0] in dict_keys() else o for o in overrides]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        message = hydra_message(err)
        bad = re.match(r"(\S+) is not a config key", message)
        if bad:
            message += _keys_near(bad.group(1), [o for o in overrides
                                                 if not o.lstrip("+~").startswith(bad.group(1))])
        raise ConfigError(message) from None
    backend = str(cfg.hydra.runtime.choices.backend)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.backend_name = backend
    return cfg, backend


def hydra_message(err: Exception) -> str:
    """One line from a Hydra composition error."""
    text = str(err)
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        return f"{group}={option} is not an option; choose one of {', '.join(options(group))}"
    merging = re.search(r"Error merging override ([^=\s]+)=", text)
    if merging:  # a value of the wrong type, checked against the schema
        detail = [line for line in text.splitlines()[1:] if line.strip()
                  and "full_key" not in line and "object_type" not in line]
        return f"{merging.group(1)}: {detail[0].strip() if detail else text.splitlines()[0]}"
    bad_key = re.search(r"Could not override '([^']+)'", text)
    if bad_key:
        return f"{bad_key.group(1)} is not a config key"
    return " ".join(text.split("\n")[0].split())


def _keys_near(key: str, overrides: list[str]) -> str:
    """``"; keys under <parent>: a, b, c"`` for a mistyped ``key``."""
    parent = key.rpartition(".")[0]
    try:
        node = OmegaConf.select(compose(overrides)[0], parent) if parent else None
    except ConfigError:
        return ""
    if isinstance(node, DictConfig):
        return f"; keys under {parent}: {', '.join(map(str, node.keys()))}"
    return ""


def load_run_config(overrides: list[str]) -> tuple[RunConfig, DictConfig]:
    """Compose and validate; ``resume=<run_dir>`` reloads that run's saved config and applies
    the remaining ``key=value`` overrides to it; ``resume.<key>=`` (:class:`ResumeOptions`)
    says what that resume may do, for this resume only."""
    resume = next((o.split("=", 1)[1] for o in overrides if o.startswith("resume=")), None)
    options_given = [o for o in overrides if o.startswith(("resume.", "resume_options."))]
    overrides = [o for o in overrides if o not in options_given]
    resume_options = parse_resume_options(options_given)
    if options_given and not resume:
        raise ConfigError(f"{options_given[0]} says what a resume may do; add "
                          "resume=<run_dir>, or leave it out for a new run")
    if resume:
        saved = Path(resume) / SAVED_CONFIG
        if not saved.exists():
            raise ConfigError(f"resume={resume}: no {SAVED_CONFIG} there; give a run directory "
                              "made by `mbpo-arm train`")
        cfg = OmegaConf.load(saved)
        rest = _keep_groups(resume, [o for o in overrides if not o.startswith("resume=")],
                            str(cfg.get("backend_name", "mujoco")))
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(rest))
        cfg.resume, cfg.run_dir = resume, resume
        cfg.resume_options = resume_options  # never the saved run's
        backend = str(cfg.get("backend_name", "mujoco"))
    else:
        cfg, backend = compose(overrides)
    return validate(cfg, backend), cfg


def parse_resume_options(overrides: list[str]) -> dict[str, bool]:
    """``resume.fallback=true`` and the like as the fields of :class:`ResumeOptions`;
    :class:`ConfigError` for another key or a value other than true or false."""
    names = [f.name for f in fields(ResumeOptions)]
    out = {name: getattr(ResumeOptions(), name) for name in names}
    for o in overrides:
        key, _, value = o.partition("=")
        if key.startswith("resume_options."):
            raise ConfigError(f"{key}: write resume.{key.split('.', 1)[1]}={value}")
        name = key.removeprefix("resume.")
        if name not in names:
            raise ConfigError(f"{key} is not a config key; keys under resume: "
                              f"{', '.join(names)}")
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"{key}={value} is not allowed; give true or false")
        out[name] = value.lower() == "true"
    return out


def _keep_groups(resume: str, overrides: list[str], backend: str) -> list[str]:
    """The overrides of a resumed run, which keeps the presets it was made with: a group
    choice (``agent=mbpo``) is a :class:`ConfigError` saying what can change instead; the
    run's own backend (``--backend mujoco`` again) is dropped."""
    groups = set(defaults_list(CONFIG_DIR / "train.yaml"))
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key in groups and not (key == "backend" and value == backend):
            kept = ", ".join(sorted(groups - {key}))
            raise ConfigError(f"{key}={value} cannot change on resume: a run keeps its {key} "
                              f"(and {kept}); set single keys instead, e.g. "
                              f"trainer.total_steps=N, or start a new run without "
                              f"resume={resume}")
    return [o for o in overrides if o != f"backend={backend}"]


def config_yaml(rc: RunConfig, run_dir: str | Path | None = None) -> str:
    """The validated config as YAML: what ``config.yaml`` holds and ``--show-config``
    prints."""
    plain = json.loads(json.dumps(asdict(rc), default=str))
    if run_dir is not None:
        plain["run_dir"] = str(run_dir)
    return OmegaConf.to_yaml(OmegaConf.create(plain))


def save_config(rc: RunConfig, run_dir: Path) -> Path:
    """Write the run's validated config as ``config.yaml`` (what ``resume=`` reloads)."""
    path = Path(run_dir) / SAVED_CONFIG
    tmp = path.with_name(f".{path.name}.tmp")  # crash-safe: write aside, then rename
    tmp.write_text(config_yaml(rc, run_dir), encoding="utf-8")
    os.replace(tmp, path)
    return path
