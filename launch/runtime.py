"""``runtime=async``: the composition of the fixed-rate actor, the learner process and the
supervisor (:mod:`agent.runtime`). :func:`run_async` is what ``mbpo-arm train`` calls; this
module also runs on its own until the CLI passes ``runtime=`` through its schema::

    python -m mbpo_launch.runtime --backend mujoco task=reach agent=sac run_dir=P \
        runtime.control_hz=50 [runtime.key=value ...]
    python -m mbpo_launch.runtime resume=P trainer.total_steps=N

The actor's twin runs with ``realtime: true`` (its ``advance()`` returns at the wall-clock
tick) at ``runtime.control_hz``; the learner's copy of the env, used only for its spaces and
the model's task functions, runs unpaced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import sys
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from agent.runtime.config import RuntimeConfig
from configs.schema import CONFIG_DIR, ConfigError, RunConfig
from mbpo_launch.cli import (
    SAVED_CONFIG,
    attach_status,
    build_policy,
    build_run,
    default_run_dir,
    load_run_config,
)

RUNTIME_SAVED = "runtime.yaml"
LOG_FILE = "replay.log"


def paced(rc: RunConfig, runtime: RuntimeConfig, realtime: bool) -> RunConfig:
    """``rc`` with the twin at the runtime's rate and ``realtime`` as given (a ros2 arm at
    the runtime's rate; it is always paced by the wall clock); resets move slowly through the
    shield (``shield.slow_reset``) unless the config says otherwise."""
    if rc.shield.slow_reset is None:
        rc = dataclasses.replace(rc, shield=dataclasses.replace(rc.shield, slow_reset=True))
    if rc.backend_name == "ros2":
        return dataclasses.replace(rc, backend=dataclasses.replace(
            rc.backend, control_hz=runtime.control_hz))
    if rc.backend_name != "mujoco":
        return rc
    backend = dataclasses.replace(rc.backend, control_hz=runtime.control_hz, realtime=realtime)
    return dataclasses.replace(rc, backend=backend)


def build_learner_run(rc: RunConfig, run_dir: str) -> Any:
    """The learner's :class:`agent.run.Run` (called in the learner process; picklable).

    The learner never drives hardware: for a serial or ROS 2 arm its env is the arm's twin
    (the same spaces and task functions; evaluations run there), so that only the actor's
    process opens the port or joins the arm's topics."""
    if rc.backend_name != "mujoco":
        from sim.twin import twin_config_of

        rc = dataclasses.replace(rc, backend_name="mujoco", backend=twin_config_of(rc.backend))
    return build_run(rc, Path(run_dir))


def run_async(rc: RunConfig, run_dir: Path, runtime: RuntimeConfig | None = None
              ) -> dict[str, Any]:
    """Run ``rc`` with the actor at ``runtime.control_hz`` and a background learner until
    ``trainer.total_steps`` logged transitions; returns the runtime figures."""
    from agent.runtime.actor import Actor
    from agent.runtime.control import UPDATES, make_control
    from agent.runtime.supervisor import Supervisor
    from agent.runtime.weights import WeightsReader, create_block, flatten

    runtime = runtime if runtime is not None else rc.runtime  # type: ignore[attr-defined]
    if not rc.task.id.startswith("ArmReach") and runtime.pacing == "robot":
        runtime = dataclasses.replace(runtime, pacing="actor")  # gym tasks do not wait
    run_dir = Path(run_dir)
    ctx = mp.get_context("spawn")
    actor_rc = dataclasses.replace(paced(rc, runtime, runtime.pacing == "robot"), device="cpu")
    check_gate(runtime, rc)  # before a port opens
    env, policy = build_policy(actor_rc)
    try:
        gate = make_episode_gate(runtime, env)
    except Exception:
        env.close()
        raise
    if rc.init_from:  # act with the pretrained policy (and its normalizer) from the first tick
        from mbpo_launch.offline import load_policy

        load_policy(policy, rc.init_from)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    log = open_log(run_dir, obs_dim, act_dim, runtime)
    block = create_block(len(flatten(policy.acting_state())))
    try:
        actor = Actor(env, policy, log, runtime, WeightsReader(block), make_control(ctx),
                      rc.agent.sac.learning_starts, rc.seed, gate=gate)
        attach_status(env, lambda: (actor.steps, int(actor.control[UPDATES])),
                      rc.agent.sac.learning_starts)
        make_run = partial(build_learner_run, paced(rc, runtime, False), str(run_dir))
        supervisor = Supervisor(actor, runtime, make_run, run_dir, block.name, ctx)
        return supervisor.run(rc.trainer.total_steps)
    finally:
        log.close()
        env.close()
        block.close()
        block.shm.unlink()


def check_gate(runtime: RuntimeConfig, rc: RunConfig) -> None:
    """What ``runtime.episode_gate`` needs and can be checked before the robot connects: a
    robot task, a terminal for ``key``, the ros2 backend for ``topic``."""
    gate = runtime.episode_gate
    if gate is None:
        return
    if not rc.task.id.startswith("ArmReach"):
        raise ConfigError(f"runtime.episode_gate={gate} holds a robot between episodes; "
                          f"task.id={rc.task.id} has no robot")
    if gate == "key" and not sys.stdin.isatty():
        raise ConfigError("runtime.episode_gate=key needs a terminal on stdin to read Enter "
                          "from; run it in a terminal, or use runtime.episode_gate=file "
                          "(runtime.gate_file=<path>) or topic (backend=ros2)")
    if gate == "topic" and rc.backend_name != "ros2":
        raise ConfigError(f"runtime.episode_gate=topic needs backend=ros2 (the topic is "
                          f"backend.next_episode_topic); backend={rc.backend_name} has no "
                          "topics: use key or file")


def make_episode_gate(runtime: RuntimeConfig, env: Any) -> Any:
    """The gate of ``runtime.episode_gate`` on ``env``'s robot (None for none); its
    start-up errors as :class:`ConfigError`."""
    from hardware.gate import make_gate

    try:
        return make_gate(runtime.episode_gate, runtime.gate_file,
                         getattr(env.unwrapped, "robot", None))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def open_log(run_dir: Path, obs_dim: int, act_dim: int, runtime: RuntimeConfig) -> Any:
    """The run's replay log; a new one starts at the newest checkpoint's step (a run that
    switches from the sync loop), an old one must reach at least that step."""
    from agent.checkpoint import latest_checkpoint
    from agent.runtime.replay_log import ReplayLog

    ckpt = latest_checkpoint(run_dir)
    ckpt_steps = int(ckpt.name.removeprefix("step_")) if ckpt is not None else 0
    log = ReplayLog.open(run_dir / LOG_FILE, obs_dim, act_dim, runtime.fsync_every_records,
                         runtime.fsync_every_s, first_seq=ckpt_steps)
    if log.next_seq < ckpt_steps:
        log.close()
        raise ConfigError(f"{log.path} ends at transition {log.next_seq} but the newest "
                          f"checkpoint {ckpt} is at step {ckpt_steps}; the log was replaced")
    return log


# ------------------------------------------------------------------- standalone entry
def load_runtime(overrides: list[str], run_dir: Path | None) -> RuntimeConfig:
    """``configs/runtime/<runtime=name>.yaml`` (default async, or the resumed run's saved
    one), then the ``runtime.key=value`` overrides."""
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("runtime=")), None)
    saved = run_dir / RUNTIME_SAVED if run_dir is not None else None
    if name is None and saved is not None and saved.exists():
        node = OmegaConf.load(saved)
    else:
        node = OmegaConf.load(CONFIG_DIR / "runtime" / f"{name or 'async'}.yaml")
    dots = [o.removeprefix("runtime.") for o in overrides if o.startswith("runtime.")]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RuntimeConfig), node,
                                 OmegaConf.from_dotlist(dots))
        return OmegaConf.to_object(merged)
    except Exception as err:  # OmegaConf's and __post_init__'s errors, as one line
        raise ConfigError(str(err).splitlines()[0]) from None


def main(argv: list[str] | None = None) -> int:
    """Compose, save the configs of a new run, :func:`run_async`, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m mbpo_launch.runtime")
    parser.add_argument("--backend")
    args, rest = parser.parse_known_args(argv)
    overrides = ([f"backend={args.backend}"] if args.backend else []) + rest
    ours = [o for o in overrides if o.startswith("runtime")]
    others = [o for o in overrides if not o.startswith("runtime")]
    try:
        rc, cfg = load_run_config(others)
        run_dir = Path(rc.run_dir or default_run_dir(rc))
        runtime = load_runtime(ours, run_dir if rc.resume else None)
    except ConfigError as err:
        print(f"mbpo-arm: error: {err}", file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    if not rc.resume:
        saved = OmegaConf.create(OmegaConf.to_container(cfg))
        saved.backend_name, saved.run_dir = rc.backend_name, str(run_dir)
        OmegaConf.save(saved, run_dir / SAVED_CONFIG)
    OmegaConf.save(OmegaConf.structured(runtime), run_dir / RUNTIME_SAVED)
    try:
        stats = run_async(rc, run_dir, runtime)
    except ConfigError as err:
        print(f"mbpo-arm: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
