"""The composition root's builders: a validated :class:`RunConfig` in, the typed parts of a run
out (config -> backend -> env -> agent). Nothing else in the project imports across layers
upward; the commands (:mod:`.commands`, :mod:`.offline`, :mod:`.runtime`) call these.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf

from mbpo_arm.agent.checkpoint import latest_checkpoint, load_checkpoint
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble
from mbpo_arm.agent.layers import resolve_precision
from mbpo_arm.agent.logger import RunLogger
from mbpo_arm.agent.mopo import finetune_penalty, init_from_run
from mbpo_arm.agent.planning import CEMPlanner, Limits, sac_policy, sac_value
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.run import Agent, Model, Run
from mbpo_arm.agent.sac import SAC
from mbpo_arm.agent.threads import ThreadPolicy, usable_cpus
from mbpo_arm.agent.train import evaluate
from mbpo_arm.configs.schema import ConfigError, RunConfig
from mbpo_arm.envs.factory import SIMULATED_BACKENDS, check_task, env_task_functions, make_env
from mbpo_arm.hardware.serial_bus import BusError
from mbpo_arm.sim.twin import twin_config_of


@contextmanager
def start_up_errors() -> Iterator[None]:
    """A bad model path, a missing joint or a wrong size found while building becomes the
    same one-line error as a bad config value."""
    try:
        yield
    except (FileNotFoundError, TimeoutError, ValueError, BusError) as err:
        raise ConfigError(str(err).splitlines()[0]) from err


def checked(rc: RunConfig) -> RunConfig:
    """``rc`` once what needs the envs is checked too (``task.id`` is a registered env)."""
    try:
        check_task(rc.task)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return rc


def default_run_dir(rc: RunConfig) -> str:
    task = rc.task.id.split("-")[0].lower()
    return f"runs/{task}-{rc.agent.algo}-{time.strftime('%Y%m%d-%H%M%S')}-s{rc.seed}"


def thread_policy(rc: RunConfig) -> ThreadPolicy:
    """``threads`` resolved: a number as given; ``auto`` may use the CPUs this process may
    use less the async actor's (one, or ``runtime.actor_cpus``), as many as are idle."""
    actor = 0 if rc.runtime.mode == "sync" else len(rc.runtime.actor_cpus or [0])
    return ThreadPolicy(rc.threads, max(1, usable_cpus() - actor))


def resolve_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but torch sees no CUDA device; use device=cpu or "
                          "install a CUDA build of torch")
    return torch.device(device)


def build_env(rc: RunConfig, render: bool = False, realtime: bool = False) -> gym.Env:
    """The run's task env over its backend's control loop at ``runtime.control_hz``, the
    shield inside it; ``realtime``: the twin paced by the wall clock (hardware always is)."""
    checked(rc)
    return make_env(rc.task, rc.backend_name, rc.backend,
                    render_mode="rgb_array" if render else None, shield=rc.shield,
                    control_hz=rc.runtime.control_hz, realtime=realtime)


def learner_precision(rc: RunConfig) -> str:
    """The learner's number format, ``fp32`` or ``bf16``: ``precision`` with ``auto``
    resolved for ``device`` (:func:`mbpo_arm.agent.layers.resolve_precision`)."""
    return resolve_precision(rc.precision, resolve_device(rc.device))


def build_policy(rc: RunConfig, render: bool = False, realtime: bool = False,
                 precision: str = "fp32") -> tuple[gym.Env, SAC]:
    """An env of the run's task and a fresh SAC agent sized for it; ``precision`` of its
    networks (fp32 for acting, the run's :func:`learner_precision` for learning)."""
    env = build_env(rc, render, realtime)
    generator = torch.Generator().manual_seed(rc.seed)
    sac = SAC(env.observation_space.shape[0], env.action_space.shape[0], rc.agent.sac,
              device=resolve_device(rc.device), generator=generator, precision=precision)
    return env, sac


def build_model(rc: RunConfig, env: gym.Env, precision: str = "fp32") -> Model:
    """MBPO's dynamics side: the ensemble (learning the reward only where the task has no
    reward function; fitted and rolled out in ``precision``) and the task's pure reward,
    termination and derive functions."""
    fns = env_task_functions(env)
    cfg = dataclasses.replace(rc.agent.model, device=rc.device,
                              learn_reward=rc.agent.model.learn_reward or fns.reward is None)
    with torch.random.fork_rng(devices=[]):  # weights from the run's seed, global RNG kept
        torch.manual_seed(rc.seed + 1)
        ensemble = ProbabilisticEnsemble(env.observation_space.shape[0],
                                         env.action_space.shape[0], cfg, precision)
    return Model(ensemble.to(resolve_device(rc.device)), cfg, rc.agent.mbpo, fns.reward,
                 fns.termination, fns.derive, fns.relabel)


def build_planner(rc: RunConfig, env: gym.Env, sac: SAC, model: Model) -> CEMPlanner | None:
    """The CEM-MPC planner of ``agent.act`` over ``model``'s ensemble (the one that is
    trained), or ``None`` when the policy acts. For ``agent=mbpo`` it is seeded by the SAC
    policy and ends on the critic's value; with ``agent.act.respect_shield`` it keeps to the
    limits of the env's shield (:func:`planning_limits`)."""
    act = rc.agent.act
    if act.planner is None:
        return None
    with_sac = rc.agent.algo == "mbpo"
    device = next(model.ensemble.parameters()).device
    generator = torch.Generator().manual_seed(rc.seed + 2)
    return CEMPlanner(model.ensemble, act, env.action_space.shape[0], model.reward_fn,
                      model.termination_fn, model.derive_fn, generator=generator,
                      policy=sac_policy(sac, generator) if with_sac else None,
                      value_fn=sac_value(sac) if with_sac else None,
                      gamma=rc.agent.sac.gamma if with_sac else 1.0,
                      limits=planning_limits(env, device) if act.respect_shield else None)


def build_actor_planner(rc: RunConfig, env: gym.Env, sac: SAC) -> CEMPlanner | None:
    """``runtime=async``: the actor's planner over its own CPU copy of the ensemble (fp32),
    which the learner's published weights refresh; ``None`` when the policy acts."""
    if rc.agent.act.planner is None:
        return None
    return build_planner(rc, env, sac, build_model(rc, env))


def planning_limits(env: gym.Env, device: torch.device | str = "cpu") -> Limits:
    """The planner's :class:`Limits` from the shield inside ``env``'s control loop, i.e. from
    the limits file it read (``shield.limits_file``): the task's joints within lower/upper
    less the margin, the end effector within the workspace box above ``min_height``."""
    inner = env.unwrapped
    shield = getattr(getattr(inner, "loop", None), "shield", None)
    if shield is None:
        raise ConfigError("agent.act.respect_shield=true plans within the shield's limits: it "
                          "needs a robot task (ArmReach-*) with shield.enabled=true")
    cfg, layout = shield.config, inner.layout
    idx = [cfg.joint_names.index(j) for j in inner.config.joints]

    def t(x: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)

    lower, upper = t(cfg.lower[idx] + cfg.margin[idx]), t(cfg.upper[idx] - cfg.margin[idx])
    ws = cfg.workspace
    if ws is None:
        return Limits(slice(0, layout.joints), lower, upper)
    box_lower = np.array(ws.lower, dtype=np.float64)
    box_lower[2] = max(box_lower[2], ws.min_height)
    return Limits(slice(0, layout.joints), lower, upper, layout.ee, t(box_lower), t(ws.upper))


def build_run(rc: RunConfig, run_dir: Path) -> Run:
    """Wire config -> backend -> env -> agent into a :class:`Run`; ``init_from`` loads the
    pretrained run into it. The learner's precision is printed and logged (``precision`` in
    the first ``metrics.jsonl`` event of each start)."""
    precision = learner_precision(rc)
    print(f"precision: {precision} (precision={rc.precision}, device {rc.device})", flush=True)
    env, sac = build_policy(rc, precision=precision)
    # A real arm is one robot: evaluations run on it between training episodes. The twin
    # gets a second copy, so an evaluation leaves the training episode as it was.
    eval_env = env if rc.backend_name not in SIMULATED_BACKENDS else build_env(rc)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    model = build_model(rc, env, precision) if rc.agent.algo in ("mbpo", "pets") else None
    agent = Agent(sac=sac, replay=ReplayBuffer(rc.trainer.replay_capacity, obs_dim, act_dim),
                  rng=np.random.default_rng(rc.seed), generator=sac.generator, model=model,
                  planner=build_planner(rc, env, sac, model) if model is not None else None,
                  policy_learns=rc.agent.algo != "pets")
    logger = RunLogger(run_dir, rc.logger, {**plain(rc), "precision": precision},
                       rc.trainer.total_steps)
    logger.log({"env_steps": 0, "precision": precision})
    run = Run(env=env, eval_env=eval_env, agent=agent, schedule=rc.trainer, logger=logger,
              run_dir=run_dir, seed=rc.seed)
    if rc.init_from:
        init_run(run, rc)
    return run


def build_learner_run(rc: RunConfig, run_dir: str) -> Run:
    """The async learner's :class:`Run` (called in the learner process; picklable).

    The learner never drives hardware: for a serial or ROS 2 arm its env is the arm's twin
    (the same spaces and task functions; evaluations run there), so that only the actor's
    process opens the port or joins the arm's topics."""
    return build_run(twin_run_config(rc), Path(run_dir))


def twin_run_config(rc: RunConfig) -> RunConfig:
    """``rc`` on a simulated backend: a hardware arm's becomes the mujoco backend of its
    twin (the same spaces and task functions)."""
    if rc.backend_name in SIMULATED_BACKENDS:
        return rc
    return dataclasses.replace(rc, backend_name="mujoco", backend=twin_config_of(rc.backend))


def slow_resets(rc: RunConfig) -> RunConfig:
    """``rc`` with resets moving through the shield unless ``shield.slow_reset`` says
    otherwise (``runtime=async``: a reset takes robot time on the twin too, as on hardware)."""
    if rc.shield.slow_reset is not None:
        return rc
    return dataclasses.replace(rc, shield=dataclasses.replace(rc.shield, slow_reset=True))


def attach_status(env: gym.Env, counts: Callable[[], tuple[int, int]],
                  learning_starts: int) -> None:
    """A robot that publishes a status (the ros2 backend) reports the run's env steps, SAC
    updates and achieved UTD (updates per env step since learning started) in it;
    ``counts()`` returns ``(env_steps, updates)``."""
    sources = getattr(env.unwrapped.loop.backend, "status_sources", None) \
        if hasattr(env.unwrapped, "loop") else None
    if sources is None:
        return

    def learner_status() -> dict[str, Any]:
        steps, updates = counts()
        return {"env_steps": steps, "updates": updates,
                "achieved_utd": updates / max(1, steps - learning_starts)}

    sources.append(learner_status)


def plain(rc: RunConfig) -> dict[str, Any]:
    """``rc`` as plain JSON-able values (for the loggers)."""
    return json.loads(json.dumps(OmegaConf.to_container(OmegaConf.structured(rc)), default=str))


# --------------------------------------------------------------------------- init_from
def finetune_config(rc: RunConfig) -> RunConfig:
    """With ``init_from``, the policy acts and the model trains from the first online step
    (no random warm-up: the pretrained agent is the warm-up), and MOPO's penalty anneals from
    the pretrained lambda to 0 over ``agent.finetune.penalty_anneal_steps``."""
    if not rc.init_from:
        return rc
    if not (Path(rc.init_from) / "checkpoints").exists():
        raise ConfigError(f"init_from={rc.init_from}: no checkpoints there; give a run "
                          "directory made by `mbpo-arm pretrain` or `mbpo-arm train`")
    sac = dataclasses.replace(rc.agent.sac, learning_starts=0)
    finetune = rc.agent.finetune
    mbpo = dataclasses.replace(rc.agent.mbpo, model_learning_starts=0,
                               penalty_coef=finetune_penalty(rc.init_from, finetune),
                               penalty_anneal_steps=finetune.penalty_anneal_steps)
    return dataclasses.replace(rc, agent=dataclasses.replace(rc.agent, sac=sac, mbpo=mbpo))


def load_policy(sac: SAC, run_dir: str | Path) -> None:
    """The policy (actor and observation normalizer) of ``run_dir``'s newest checkpoint into
    ``sac``: the async actor's start when fine-tuning."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ConfigError(f"init_from={run_dir}: no checkpoint there")
    sac.load_policy_state_dict(load_checkpoint(ckpt, buffer_names=())[0]["sac"])


def init_run(run: Run, rc: RunConfig) -> None:
    """Load ``rc.init_from`` into the freshly built ``run`` (see
    :func:`mbpo_arm.agent.mopo.init_from_run`), log what was loaded, and evaluate the loaded
    policy: the online curve starts where pretraining left off (and ``trainer.stop_at`` met
    there ends the run before it takes a step)."""
    info = init_from_run(run.agent, rc.init_from, rc.agent.finetune)
    if "rollout_horizon" in info:  # the model buffer was filled at step 0
        run.progress.rolled_out_at = 0
        run.progress.model_log.update({k: v for k, v in info.items() if k.startswith("rollout")})
    run.logger.log({"env_steps": 0, **info})
    if latest_checkpoint(run.run_dir) is None:  # not a resume, nor a restarted async learner
        evaluate(run)
