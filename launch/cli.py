"""``mbpo-arm``: the composition root. Config -> backend -> env -> agent, then run.

    mbpo-arm train --backend mujoco task=reach agent=sac trainer.total_steps=N seed=S run_dir=P
    mbpo-arm train resume=P [trainer.total_steps=N]
    mbpo-arm eval P --episodes N --json [--video out.mp4]
    mbpo-arm train --backend serial robot=so101 port=/dev/ttyACM0
    mbpo-arm calibrate robot=so101 port=/dev/ttyACM0
    mbpo-arm collect / pretrain / dataset ...    (offline data and MOPO: mbpo_launch.offline)
    mbpo-arm train init_from=P ...               (fine-tune a pretrained run)

Nothing else in the project imports across layers upward; this module wires them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from configs.schema import CONFIG_DIR, ConfigError, RunConfig, options, validate
from hardware.serial_bus import BusError

SAVED_CONFIG = "config.yaml"


# ------------------------------------------------------------------------------ composing
def compose(overrides: list[str]) -> tuple[DictConfig, str]:
    """The Hydra-composed config and the chosen backend; errors become :class:`ConfigError`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        message = _hydra_message(err)
        bad = re.match(r"(\S+) is not a config key", message)
        if bad:
            message += _keys_near(bad.group(1), [o for o in overrides
                                                 if not o.lstrip("+~").startswith(bad.group(1))])
        raise ConfigError(message) from None
    backend = str(cfg.hydra.runtime.choices.backend)
    robot = cfg.hydra.runtime.choices.get("robot")
    if robot not in (None, "null") and backend != "serial":
        raise ConfigError(f"robot={robot} is a serial-bus arm; add --backend serial")
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, backend


def _hydra_message(err: Exception) -> str:
    """One line from a Hydra composition error."""
    text = str(err)
    missing = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        return f"{group}={option} is not an option; choose one of {', '.join(options(group))}"
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
    return f"; {parent} is null in this config (another option of its group sets it)" \
        if parent else ""


def load_run_config(overrides: list[str]) -> tuple[RunConfig, DictConfig]:
    """Compose and validate; ``resume=<run_dir>`` reloads that run's saved config and applies
    the remaining ``key=value`` overrides to it."""
    resume = next((o.split("=", 1)[1] for o in overrides if o.startswith("resume=")), None)
    if resume:
        saved = Path(resume) / SAVED_CONFIG
        if not saved.exists():
            raise ConfigError(f"resume={resume}: no {SAVED_CONFIG} there; give a run directory "
                              "made by `mbpo-arm train`")
        cfg = OmegaConf.load(saved)
        rest = [o for o in overrides if not o.startswith("resume=")]
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(rest))
        cfg.resume, cfg.run_dir = resume, resume
        backend = str(cfg.pop("backend_name"))
    else:
        cfg, backend = compose(overrides)
    return validate(cfg, backend), cfg


# ---------------------------------------------------------------------------- the commands
def train(overrides: list[str]) -> dict[str, Any]:
    """``mbpo-arm train``: build everything from the config and run the training loop."""
    from agent.logger import plot_learning_curve
    from agent.run import restore
    from agent.train import train as train_loop
    from mbpo_launch.offline import finetune_config

    rc, cfg = load_run_config(overrides)
    rc = finetune_config(rc)
    run_dir = Path(rc.run_dir or default_run_dir(rc))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not rc.resume:
        saved = OmegaConf.create(OmegaConf.to_container(cfg))
        saved.backend_name, saved.run_dir = rc.backend_name, str(run_dir)
        OmegaConf.save(saved, run_dir / SAVED_CONFIG)
    if rc.runtime.mode == "async":
        from mbpo_launch.runtime import run_async

        stats = run_async(rc, run_dir)
        print(json.dumps(stats))
        return stats
    with start_up_errors():
        run = build_run(rc, run_dir)
    attach_status(run.env, lambda: (run.counters.env_steps, run.counters.updates),
                  rc.agent.sac.learning_starts)
    if rc.resume and not restore(run):
        print(f"resume: {run_dir} has no checkpoint yet; starting from step 0", file=sys.stderr)
    try:
        final = train_loop(run)
    finally:
        run.logger.close()
        run.env.close()
        if run.eval_env is not run.env:
            run.eval_env.close()
    curve = plot_learning_curve(run_dir)
    from agent.checkpoint import latest_checkpoint

    print(f"\nresults:    {run_dir / 'metrics.jsonl'}\ncurve:      {curve}\n"
          f"checkpoint: {latest_checkpoint(run_dir)}\nfinal eval: {json.dumps(final)}")
    return final


def evaluate(run_dir: Path, episodes: int, as_json: bool, video: Path | None,
             device: str) -> dict[str, Any]:
    """``mbpo-arm eval``: the deterministic policy of a run's last checkpoint."""
    from agent.checkpoint import latest_checkpoint, load_checkpoint
    from agent.run import evaluate_policy

    rc, _ = load_run_config([f"resume={run_dir}", f"device={device}"])
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ConfigError(f"{run_dir} has no checkpoint; train first")
    with start_up_errors():
        env, sac = build_policy(rc, render=video is not None)
    state, _ = load_checkpoint(ckpt, buffer_names=(), map_location=sac.device)
    sac.load_state_dict(state["sac"])
    result = evaluate_policy(sac, env, episodes, seed=123, render=video is not None)
    frames = result.pop("frames")
    if video is not None:
        write_video(video, frames, fps=env.metadata.get("render_fps", 20))
        result["video"] = str(video)
    env.close()
    result["checkpoint"] = str(ckpt)
    print(json.dumps(result) if as_json else
          f"{episodes} episodes: mean return {result['mean_return']:.2f}, success rate "
          f"{result['success_rate']}")
    return result


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """``.gif`` through Pillow (always there); ``.mp4`` needs ``pip install imageio-ffmpeg``."""
    import imageio.v3 as iio

    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--video {path}: use a .gif or .mp4 file name")
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError("--video .mp4 needs `pip install imageio-ffmpeg` (or mbpo-arm"
                              "[video]); a .gif needs nothing more") from None
        iio.imwrite(path, np.stack(frames), fps=fps)
    else:
        iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)


# ------------------------------------------------------------------------------- building
@contextmanager
def start_up_errors() -> Iterator[None]:
    """A bad model path, a missing joint or a wrong size found while building becomes the
    same one-line error as a bad config value."""
    try:
        yield
    except (FileNotFoundError, TimeoutError, ValueError, BusError) as err:
        raise ConfigError(str(err).splitlines()[0]) from err


def attach_status(env: Any, counts: Callable[[], tuple[int, int]],
                  learning_starts: int) -> None:
    """A robot that publishes a status (the ros2 backend) reports the run's env steps, SAC
    updates and achieved UTD (updates per env step since learning started) in it;
    ``counts()`` returns ``(env_steps, updates)``."""
    sources = getattr(getattr(env.unwrapped, "robot", None), "status_sources", None)
    if sources is None:
        return

    def learner_status() -> dict[str, Any]:
        steps, updates = counts()
        return {"env_steps": steps, "updates": updates,
                "achieved_utd": updates / max(1, steps - learning_starts)}

    sources.append(learner_status)



def default_run_dir(rc: RunConfig) -> str:
    task = rc.task.id.split("-")[0].lower()
    return f"runs/{task}-{rc.agent.algo}-{time.strftime('%Y%m%d-%H%M%S')}-s{rc.seed}"


def build_policy(rc: RunConfig, render: bool = False) -> tuple[Any, Any]:
    """An env of the run's task and a fresh SAC agent sized for it."""
    from agent.sac import SAC
    from envs.factory import make_env

    env = make_env(rc.task, rc.backend_name, rc.backend,
                   render_mode="rgb_array" if render else None, shield=rc.shield)
    device = resolve_device(rc.device)
    generator = torch.Generator().manual_seed(rc.seed)
    sac = SAC(env.observation_space.shape[0], env.action_space.shape[0], rc.agent.sac,
              device=device, generator=generator)
    return env, sac


def build_run(rc: RunConfig, run_dir: Path) -> Any:
    """Wire config -> backend -> env -> agent into a :class:`agent.train.Run`."""
    from agent.logger import RunLogger
    from agent.replay import ReplayBuffer
    from agent.train import Run
    from envs.factory import SIMULATED_BACKENDS, make_env

    env, sac = build_policy(rc)
    # A real arm is one robot: evaluations run on it between training episodes. The twin
    # gets a second copy, so an evaluation leaves the training episode as it was.
    eval_env = env if rc.backend_name not in SIMULATED_BACKENDS else make_env(
        rc.task, rc.backend_name, rc.backend, shield=rc.shield)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    logger = RunLogger(run_dir, rc.logger, _plain(rc), rc.trainer.total_steps)
    run = Run(env=env, eval_env=eval_env, sac=sac,
              replay=ReplayBuffer(rc.trainer.replay_capacity, obs_dim, act_dim),
              cfg=rc.trainer, sac_cfg=rc.agent.sac, rng=np.random.default_rng(rc.seed),
              generator=sac.generator, logger=logger, run_dir=run_dir, seed=rc.seed,
              device=sac.device, model=build_model(rc, env) if rc.agent.algo == "mbpo" else None)
    if rc.init_from:
        from mbpo_launch.offline import init_run

        init_run(run, rc)
    return run


def build_model(rc: RunConfig, env: Any) -> Any:
    """MBPO's dynamics side: the ensemble (learning the reward only where the task has no
    reward function) and the task's pure reward, termination and derive functions."""
    from dataclasses import replace

    from agent.ensemble import ProbabilisticEnsemble
    from agent.run import Model
    from envs.factory import env_task_functions

    fns = env_task_functions(env)
    cfg = replace(rc.agent.model, device=rc.device,
                  learn_reward=rc.agent.model.learn_reward or fns.reward is None)
    with torch.random.fork_rng(devices=[]):  # weights from the run's seed, global RNG kept
        torch.manual_seed(rc.seed + 1)
        ensemble = ProbabilisticEnsemble(env.observation_space.shape[0],
                                         env.action_space.shape[0], cfg)
    return Model(ensemble.to(resolve_device(rc.device)), cfg, rc.agent.mbpo, fns.reward,
                 fns.termination, fns.derive, fns.relabel)


def resolve_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but torch sees no CUDA device; use device=cpu or "
                          "install a CUDA build of torch")
    return torch.device(device)


def _plain(rc: RunConfig) -> dict[str, Any]:
    return json.loads(json.dumps(OmegaConf.to_container(OmegaConf.structured(rc)), default=str))


def calibrate(overrides: list[str]) -> None:
    """``mbpo-arm calibrate``: walk a person through the calibration of a serial arm in the
    terminal and write ``backend.calibration`` (see :mod:`hardware.calibration`)."""
    from hardware.serial_robot import calibrate_arm

    rc, _ = load_run_config(["backend=serial", *overrides])
    try:
        calibrate_arm(rc.backend, sys.stdin, sys.stdout)
    except (BusError, RuntimeError) as err:
        raise ConfigError(str(err)) from None


# Shorthands on the command line for the keys a serial-arm user types most.
SHORTHANDS = {"port": "backend.port"}


def expand_shorthands(overrides: list[str]) -> list[str]:
    """``port=/dev/ttyACM0`` -> ``backend.port=/dev/ttyACM0``."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        out.append(f"{SHORTHANDS[key]}={value}" if key in SHORTHANDS else o)
    return out


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mbpo-arm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train an agent (key=value Hydra overrides follow)")
    p_train.add_argument("--backend", help="robot backend: " + ", ".join(options("backend")))
    sub.add_parser("calibrate", help="calibrate a serial arm interactively (robot=<preset> "
                   "port=<device> [backend.calibration=<file>])")
    p_eval = sub.add_parser("eval", help="evaluate a run's deterministic policy")
    p_eval.add_argument("run_dir", type=Path)
    p_eval.add_argument("--episodes", type=int, default=10)
    p_eval.add_argument("--json", action="store_true", help="print one JSON object")
    p_eval.add_argument("--video", type=Path, help="record a .gif or .mp4 from the twin")
    p_eval.add_argument("--device", default="cpu")
    for name, text in (("collect", "make a dataset in the twin (policy=random|medium|expert|"
                        "checkpoint|mixed out=PATH)"),
                       ("pretrain", "MOPO on a dataset, no robot time (dataset=PATH)")):
        sub.add_parser(name, help=text).add_argument("--backend")
    sub.add_parser("dataset", help="dataset info, import (run, rosbag2, Minari), export",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command in ("train", "collect", "pretrain"):
            from mbpo_launch import offline

            bad = [r for r in rest if "=" not in r]
            if bad:
                raise ConfigError(f"{bad[0]!r} is not an override; write key=value")
            overrides = ([f"backend={args.backend}"] if args.backend else []) + rest
            {"train": train, "collect": offline.collect,
             "pretrain": offline.pretrain}[args.command](expand_shorthands(overrides))
        elif args.command == "calibrate":
            calibrate(expand_shorthands(rest))
        elif args.command == "dataset":
            from agent.dataset import DatasetError
            from mbpo_launch.offline import dataset_command

            try:
                dataset_command(rest)
            except (DatasetError, FileNotFoundError) as err:
                raise ConfigError(str(err).splitlines()[0]) from None
        else:
            if rest:
                raise ConfigError(f"unknown arguments {rest}")
            if args.video is not None:
                os.environ.setdefault("MUJOCO_GL", "egl")
            evaluate(args.run_dir, args.episodes, args.json, args.video, args.device)
    except ConfigError as err:
        print(f"mbpo-arm: error: {err}", file=sys.stderr)
        return 2
    except BusError as err:  # the serial bus failed during the run (every retry spent)
        print(f"mbpo-arm: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
