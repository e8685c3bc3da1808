"""The training loop, top to bottom: collect, train model, roll out, update policy, evaluate,
checkpoint.

Model-free SAC runs without the two model phases; MBPO (``agent.algo=mbpo``) adds them
(Janner et al. 2019, algorithm 2): every ``model_train_every`` real steps the ensemble is
retrained on all real data and ``rollout_batch`` branched rollouts from real states fill the
model buffer; each SAC batch then mixes ``real_ratio`` real with model transitions.

Each phase takes the parts of the :class:`~mbpo_arm.agent.run.Run` it uses: the learning
phases only the :class:`~mbpo_arm.agent.run.Agent` (and the step count), the trainer's phases
the envs, the schedule and the :class:`~mbpo_arm.agent.run.Progress`. Only the gymnasium API
is used here; the composition root (:mod:`mbpo_arm.launch.build`) builds the envs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_arm.agent.checkpoint import Diverged, all_finite, nonfinite
from mbpo_arm.agent.config import EnsembleConfig, TrainerConfig
from mbpo_arm.agent.ensemble_train import ModelReport, multistep_error, train_ensemble
from mbpo_arm.agent.math import annealed_penalty, rollout_horizon
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.rollout import branched_rollout
from mbpo_arm.agent.run import Agent, Counters, Model, Progress, Run, evaluate_policy, save_run
from mbpo_arm.agent.types import TransitionBatch


# ------------------------------------------------------------------------------- the loop
def train(run: Run, stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Run until ``total_steps`` env steps, or until ``stop()`` (asked after each step: a
    signal handler's flag) ends it early after a final checkpoint; returns the last
    evaluation."""
    schedule, progress, agent = run.schedule, run.progress, run.agent
    counters = progress.counters
    if counters.env_steps == 0 and reached_target(progress.last_eval, schedule):
        run.logger.log({"env_steps": 0, "stopped_at_target": schedule.stop_at})  # pretrained
        save_run(run)
        return progress.last_eval
    obs = start_episode(run)
    while counters.env_steps < schedule.total_steps:
        obs = collect_step(run, obs)
        step = counters.env_steps
        if model_due(agent.model, step):
            progress.model_log.update(model_figures(train_model(agent, run.run_dir, step)))
        if agent.policy_learns and rollout_due(agent.model, step, progress.rolled_out_at):
            progress.model_log.update(rollout_model(agent, step))
            progress.rolled_out_at = step
        if agent.policy_learns:  # agent=pets only plans: no rollouts, no SAC updates
            update_policy(agent, progress)
        if run.threads is not None:
            run.threads.poll()
        if step % schedule.eval_every == 0:
            result = evaluate(run)
            if run.eval_env is run.env:  # one robot: the evaluation cut the episode short
                agent.replay.truncate_last()
                obs = start_episode(run)
            if reached_target(result, schedule):
                run.logger.log({"env_steps": step, "stopped_at_target": schedule.stop_at})
                break
        if step % schedule.log_every == 0:
            report_progress(run)
        if step % schedule.checkpoint_every == 0:
            save_run(run)
        if stop():
            save_run(run)
            return progress.last_eval
    if counters.env_steps % schedule.eval_every or not progress.last_eval:
        if run.eval_env is run.env:  # one robot: what it collected is saved before it evaluates
            save_run(run)
        evaluate(run)
    save_run(run)
    return progress.last_eval


# ---------------------------------------------------------------------------- the phases
def start_episode(run: Run) -> np.ndarray:
    """Reset the env; the first reset in this process (a fresh run or a resume) is seeded."""
    seed = None if run.seeded else run.seed + run.progress.counters.episodes
    run.seeded = True
    obs, _ = run.env.reset(seed=seed)
    run.progress.episode_return = 0.0
    return obs


def collect_step(run: Run, obs: np.ndarray) -> np.ndarray:
    """One real env step: random actions before ``learning_starts``, then the stochastic
    policy, or the planner (``agent.act.planner``) once the model has elites. Stores the
    *executed* action where the env reports it."""
    agent, progress = run.agent, run.progress
    model = agent.model
    if agent.planner is not None and model.elites \
            and progress.counters.env_steps >= agent.sac.cfg.learning_starts:
        action = agent.planner.plan(obs, model.elites)
    elif progress.counters.env_steps < agent.sac.cfg.learning_starts or not agent.policy_learns:
        action = agent.rng.uniform(-1.0, 1.0, run.env.action_space.shape).astype(np.float32)
    else:
        action = agent.sac.act(obs)
    next_obs, reward, terminated, truncated, info = run.env.step(action)
    executed = info.get("executed_action", action)
    agent.replay.add(obs, executed, reward, next_obs, terminated, truncated)
    for rule in info.get("shield", ()):  # the safety shield's interventions, by rule
        progress.shield_counts[rule] = progress.shield_counts.get(rule, 0) + 1
    progress.counters.env_steps += 1
    progress.episode_return += float(reward)
    if not (terminated or truncated):
        return next_obs
    if agent.planner is not None:
        agent.planner.reset()  # no warm start across episodes
    progress.end_episode(float(info["is_success"]) if "is_success" in info else None)
    return start_episode(run)


def model_due(model: Model | None, step: int) -> bool:
    """MBPO retrains the model every ``model_train_every`` steps once enough data is in."""
    if model is None:
        return False
    cfg = model.mbpo
    return step >= cfg.model_learning_starts and step % cfg.model_train_every == 0


def rollout_due(model: Model | None, step: int, last: int) -> bool:
    """A trained model rolls out every ``rollout_every`` env steps (by default right after
    each training; ``last``: the step of the last rollout, -1 for none): more often, with a
    smaller batch, keeps the model data closer to the current policy (MOPO's offline loop
    rolls out every few hundred updates the same way)."""
    if model is None or not model.elites or step == last:
        return False
    period = model.mbpo.rollout_period
    # multiples of the period (as a resumed run would meet them), or a period since the last
    # rollout (the async learner takes in several steps at a time and may pass a multiple)
    return model_due(model, step) or step % period == 0 or (last >= 0 and step - last >= period)


def train_model(agent: Agent, run_dir: Path, step: int,
                fit: EnsembleConfig | None = None) -> ModelReport:
    """Fit the ensemble on all real data (settings ``fit``, default the model's own), choose
    elites, measure multi-step error on recent real episodes; the report is appended to
    ``run_dir/model_reports.jsonl`` and returned."""
    model, data = agent.model, agent.replay.all()
    reward = data["reward"] if model.ensemble.learn_reward else None
    report = train_ensemble(model.ensemble, data["obs"], data["action"], data["next_obs"],
                            reward, fit or model.fit, agent.rng, agent.generator)
    bad = nonfinite(model.ensemble.state_dict())
    if bad:
        raise Diverged(f"training diverged at env step {step}: the model's {bad} is not "
                       "finite after its fit")
    model.elites = report.elites
    report.multistep_mse = multistep_error(model.ensemble, model.elites, recent_episodes(data),
                                           model.mbpo.report_horizons, agent.generator,
                                           derive_fn=model.derive_fn)
    with open(Path(run_dir) / "model_reports.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"env_steps": step, **report.to_dict()}) + "\n")
    return report


def model_figures(report: ModelReport) -> dict[str, Any]:
    """What the progress events show of a model fit."""
    return {"model_holdout_mse": report.elite_holdout_mse,
            "model_holdout_nll": report.elite_holdout_nll,
            "model_epochs": report.epochs, "model_seconds": report.seconds,
            **{f"model_mse_h{h}": v for h, v in report.multistep_mse.items()}}


def rollout_model(agent: Agent, step: int) -> dict[str, Any]:
    """MBPO's branched rollouts at env step ``step``: the horizon from the epoch's schedule,
    the model buffer sized for ``retain_epochs`` of rollouts at that horizon (resized when it
    changes, as MBPO does), the MOPO penalty annealed over the env steps."""
    cfg = agent.model.mbpo
    horizon = rollout_horizon(step // cfg.epoch_length, cfg.horizon_schedule)
    penalty = annealed_penalty(cfg.penalty_coef, step, cfg.penalty_anneal_steps)
    return rollout_into(agent, horizon, cfg.rollout_batch, cfg.model_buffer_capacity(horizon),
                        penalty)


def rollout_into(agent: Agent, horizon: int, batch: int, capacity: int,
                 penalty: float) -> dict[str, Any]:
    """``batch`` branched rollouts of ``horizon`` steps from real states with the current
    policy (reward minus ``penalty`` times the largest member's std norm) into the model
    buffer of ``capacity`` transitions; the shared step of MBPO's and MOPO's schedules.
    Returns the figures to log."""
    model, cfg = agent.model, agent.model.mbpo
    model.horizon = horizon
    ensure_model_buffer(agent, capacity)
    # Start states sampled on the CPU: branched_rollout moves them to the model's device once.
    start = agent.replay.sample(batch, agent.rng).obs.numpy()
    if cfg.goal_relabel > 0 and model.relabel_fn is not None:
        start = model.relabel_fn(start, cfg.goal_relabel, agent.rng)
    data, stats = branched_rollout(
        model.ensemble, model.elites, agent.sac.policy_tensor, start, horizon, model.reward_fn,
        model.termination_fn, agent.generator, penalty, cfg.max_disagreement, cfg.rollout_chunk,
        model.derive_fn)
    finite = np.isfinite(data["next_obs"]).all(-1) & np.isfinite(data["reward"])
    if finite.any():
        model.buffer.add(*(data[k][finite] for k in ("obs", "action", "reward", "next_obs",
                                                      "terminated", "truncated")))
    return {"rollout_horizon": horizon, "rollout_transitions": int(finite.sum()),
            "rollout_nonfinite": int((~finite).sum()),
            "rollout_mean_penalty": stats.get("mean_penalty")}


def update_policy(agent: Agent, progress: Progress) -> None:
    """``utd`` SAC updates per env step on real data (SAC) or on batches mixing
    ``real_ratio`` real with model transitions (MBPO, once the model buffer has data)."""
    sac, counters = agent.sac, progress.counters
    if counters.env_steps < sac.cfg.learning_starts:
        return
    if sac.obs_fit_pending:  # checked here so the replay is copied only once
        sac.fit_obs_normalizer(agent.replay.all()["obs"])  # once, on the first real data
    for _ in range(sac.cfg.utd):
        progress.last_update = sac.update(sample_batch(agent))
        counters.updates += 1
        check_finite(progress.last_update, counters)
    acting = [*sac.actor.parameters(), *sac.obs_norm.buffers()]  # what the next action uses
    bad = None if all_finite(acting) else nonfinite(sac.acting_state())
    if bad:
        raise Diverged(f"training diverged at env step {counters.env_steps}: the policy's "
                       f"{bad} is not finite after SAC update {counters.updates}")


def check_finite(figures: dict[str, float], counters: Counters) -> None:
    """Stop with :class:`Diverged` when an update's loss (or another figure) is NaN or
    infinite: the run ends on its last good checkpoint instead of training on garbage."""
    bad = next((k for k, v in figures.items() if not math.isfinite(v)), None)
    if bad is not None:
        raise Diverged(f"training diverged at env step {counters.env_steps}: {bad} is "
                       f"{figures[bad]} after SAC update {counters.updates}")


def sample_batch(agent: Agent, real_ratio: float | None = None) -> TransitionBatch:
    """A SAC batch: all real without a model (or before its first rollout), else mixed with
    ``real_ratio`` real transitions (default MBPO's ``agent.mbpo.real_ratio``)."""
    size, model, device = agent.sac.cfg.batch_size, agent.model, agent.device
    if model is None or model.buffer is None or len(model.buffer) == 0:
        return agent.replay.sample(size, agent.rng, device)
    ratio = model.mbpo.real_ratio if real_ratio is None else real_ratio
    n_real = int(round(size * ratio))
    parts = [model.buffer.sample(size - n_real, agent.rng, device)]
    if n_real:
        parts.append(agent.replay.sample(n_real, agent.rng, device))
    return TransitionBatch.cat(parts)


EVAL_SEED = 10_000  # + env steps: the first episode's seed of the evaluation at that step


def eval_figures(result: dict[str, Any]) -> dict[str, float]:
    """An :func:`~agent.run.evaluate_policy` result under the names the metrics use."""
    return {"eval_return": result["mean_return"], "eval_success_rate": result["success_rate"]}


def evaluate(run: Run) -> dict[str, Any]:
    """Deterministic policy for ``eval_episodes`` on the eval env; logs the figures along with
    the latest update, model and rollout figures."""
    progress, c, planner = run.progress, run.progress.counters, run.agent.planner
    acting: dict[str, Any] = {}
    if planner is not None and run.agent.model.elites:  # the agent is evaluated as it acts
        elites = run.agent.model.elites
        acting = {"act": lambda o: planner.plan(o, elites), "on_reset": planner.reset}
    result = evaluate_policy(run.agent.sac, run.eval_env, run.schedule.eval_episodes,
                             seed=EVAL_SEED + c.env_steps, **acting)
    if planner is not None:
        planner.reset()  # the training episode's warm start is gone
    progress.last_eval = eval_figures(result)
    event = {"env_steps": c.env_steps, "episodes": c.episodes, "updates": c.updates,
             **progress.last_eval, **recent_stats(progress), **progress.last_update,
             **progress.model_log,
             **(planner.figures() if planner is not None else {}),
             **{f"shield_{rule}": n for rule, n in progress.shield_counts.items()}}
    run.logger.log(event)
    return progress.last_eval


def report_progress(run: Run) -> None:
    progress = run.progress
    run.logger.progress(progress.counters.env_steps,
                        {**recent_stats(progress), **progress.last_eval,
                         "shield": progress.shield_counts})


# --------------------------------------------------------------------------------- helpers
def reached_target(result: dict[str, Any], schedule: TrainerConfig) -> bool:
    """``trainer.stop_at``: stop once the evaluation's ``stop_metric`` reaches it (saves
    robot time once a policy is good enough)."""
    value = result.get(schedule.stop_metric)
    return schedule.stop_at is not None and value is not None and value >= schedule.stop_at


def recent_stats(progress: Progress) -> dict[str, Any]:
    return {"episode_return": float(np.mean(progress.returns)) if progress.returns else None,
            "success_rate": float(np.mean(progress.successes)) if progress.successes else None}


def recent_episodes(data: dict[str, np.ndarray], max_episodes: int = 20
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The newest complete real episodes as ``(obs [T+1, D], actions [T, A])``, for the
    model's multi-step error."""
    ends = np.flatnonzero((data["terminated"] > 0) | (data["truncated"] > 0))
    starts = np.r_[0, ends[:-1] + 1] if len(ends) else ends  # no end yet: no episode
    episodes = []
    for start, end in zip(starts[-max_episodes:], ends[-max_episodes:],
                          strict=True):
        obs = np.concatenate([data["obs"][start:end + 1], data["next_obs"][end:end + 1]])
        episodes.append((obs, data["action"][start:end + 1]))
    return episodes


def ensure_model_buffer(agent: Agent, capacity: int | None = None) -> None:
    """(Re)allocate the model buffer to ``capacity`` transitions (default: MBPO's sizing at
    the current horizon), keeping the newest rollouts."""
    model = agent.model
    capacity = capacity or model.mbpo.model_buffer_capacity(model.horizon)
    old = model.buffer
    if old is not None and old.capacity == capacity:
        return
    model.buffer = ReplayBuffer(capacity, agent.replay.obs_dim, agent.replay.act_dim)
    if old is not None and len(old):
        kept = {k: v[-capacity:] for k, v in old.all().items()}
        model.buffer.add(kept["obs"], kept["action"], kept["reward"], kept["next_obs"],
                         kept["terminated"] > 0, kept["truncated"] > 0)
