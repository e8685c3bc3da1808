"""The training loop, top to bottom: collect, train model, roll out, update policy, evaluate,
checkpoint.

Model-free SAC runs without the two model phases; MBPO (``agent.algo=mbpo``) adds them
(Janner et al. 2019, algorithm 2): every ``model_train_every`` real steps the ensemble is
retrained on all real data and ``rollout_batch`` branched rollouts from real states fill the
model buffer; each SAC batch then mixes ``real_ratio`` real with model transitions.

Only the gymnasium API is used here; the composition root (:mod:`mbpo_arm.launch.cli`)
builds the envs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_arm.agent.config import EnsembleConfig
from mbpo_arm.agent.ensemble_train import multistep_error, train_ensemble
from mbpo_arm.agent.math import annealed_penalty, rollout_horizon
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.rollout import branched_rollout
from mbpo_arm.agent.run import Run, evaluate_policy, save_run
from mbpo_arm.agent.types import TransitionBatch


# ------------------------------------------------------------------------------- the loop
def train(run: Run) -> dict[str, Any]:
    """Run until ``total_steps`` env steps; returns the final evaluation."""
    if run.counters.env_steps == 0 and reached_target(run.last_eval, run.cfg):
        run.logger.log({"env_steps": 0, "stopped_at_target": run.cfg.stop_at})  # pretrained
        checkpoint(run)
        return run.last_eval
    obs = start_episode(run)
    while run.counters.env_steps < run.cfg.total_steps:
        obs = collect_step(run, obs)
        if model_due(run):
            train_model(run)
        if rollout_due(run):
            rollout_model(run)
        update_policy(run)
        step = run.counters.env_steps
        if step % run.cfg.eval_every == 0:
            result = evaluate(run)
            if run.eval_env is run.env:  # one robot: the evaluation cut the episode short
                run.replay.truncate_last()
                obs = start_episode(run)
            if reached_target(result, run.cfg):
                run.logger.log({"env_steps": step, "stopped_at_target": run.cfg.stop_at})
                break
        if step % run.cfg.log_every == 0:
            report_progress(run)
        if step % run.cfg.checkpoint_every == 0:
            checkpoint(run)
    if run.counters.env_steps % run.cfg.eval_every or not run.last_eval:
        evaluate(run)
    checkpoint(run)
    return run.last_eval


# ---------------------------------------------------------------------------- the phases
def start_episode(run: Run) -> np.ndarray:
    """Reset the env; the first reset in this process (a fresh run or a resume) is seeded."""
    seed = None if run.seeded else run.seed + run.counters.episodes
    run.seeded = True
    obs, _ = run.env.reset(seed=seed)
    run.episode_return = 0.0
    return obs


def collect_step(run: Run, obs: np.ndarray) -> np.ndarray:
    """One real env step: random actions before ``learning_starts``, then the stochastic
    policy. Stores the *executed* action where the env reports it."""
    if run.counters.env_steps < run.sac_cfg.learning_starts:
        action = run.rng.uniform(-1.0, 1.0, run.env.action_space.shape).astype(np.float32)
    else:
        action = run.sac.act(obs)
    next_obs, reward, terminated, truncated, info = run.env.step(action)
    executed = info.get("executed_action", action)
    run.replay.add(obs, executed, reward, next_obs, terminated, truncated)
    for rule in info.get("shield", ()):  # the safety shield's interventions, by rule
        run.shield_counts[rule] = run.shield_counts.get(rule, 0) + 1
    run.counters.env_steps += 1
    run.episode_return += float(reward)
    if not (terminated or truncated):
        return next_obs
    run.counters.episodes += 1
    run.returns.append(run.episode_return)
    if "is_success" in info:
        run.successes.append(float(info["is_success"]))
    return start_episode(run)


def model_due(run: Run) -> bool:
    """MBPO retrains the model every ``model_train_every`` steps once enough data is in."""
    if run.model is None:
        return False
    step, cfg = run.counters.env_steps, run.model.mbpo
    return step >= cfg.model_learning_starts and step % cfg.model_train_every == 0


def rollout_due(run: Run) -> bool:
    """A trained model rolls out every ``rollout_every`` env steps (by default right after
    each training): more often, with a smaller batch, keeps the model data closer to the
    current policy (MOPO's offline loop rolls out every few hundred updates the same way)."""
    if run.model is None or not run.model.elites:
        return False
    step, period, last = run.counters.env_steps, run.model.mbpo.rollout_period, run.rolled_out_at
    if step == last:
        return False
    # multiples of the period (as a resumed run would meet them), or a period since the last
    # rollout (the async learner takes in several steps at a time and may pass a multiple)
    return model_due(run) or step % period == 0 or (last >= 0 and step - last >= period)


def train_model(run: Run, fit: EnsembleConfig | None = None) -> dict[str, Any]:
    """Fit the ensemble on all real data (settings ``fit``, default the model's own), choose
    elites, measure multi-step error on recent real episodes; the report is logged and
    appended to ``model_reports.jsonl``."""
    model, data = run.model, run.replay.all()
    reward = data["reward"] if model.ensemble.learn_reward else None
    report = train_ensemble(model.ensemble, data["obs"], data["action"], data["next_obs"],
                            reward, fit or model.cfg, run.rng, run.generator)
    model.elites = report.elites
    report.multistep_mse = multistep_error(model.ensemble, model.elites, recent_episodes(data),
                                           model.mbpo.report_horizons, run.generator,
                                           derive_fn=model.derive_fn)
    entry = {"env_steps": run.counters.env_steps, **report.to_dict()}
    with open(Path(run.run_dir) / "model_reports.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    run.model_log = {"model_holdout_mse": report.elite_holdout_mse,
                     "model_holdout_nll": report.elite_holdout_nll,
                     "model_epochs": report.epochs, "model_seconds": report.seconds,
                     **{f"model_mse_h{h}": v for h, v in report.multistep_mse.items()}}
    return entry


def rollout_model(run: Run) -> dict[str, float]:
    """MBPO's branched rollouts: the horizon from the epoch's schedule, the model buffer sized
    for ``retain_epochs`` of rollouts at that horizon (resized when it changes, as MBPO does),
    the MOPO penalty annealed over the env steps."""
    cfg = run.model.mbpo
    horizon = rollout_horizon(run.counters.env_steps // cfg.epoch_length, cfg.horizon_schedule)
    penalty = annealed_penalty(cfg.penalty_coef, run.counters.env_steps,
                               cfg.penalty_anneal_steps)
    return rollout_into(run, horizon, cfg.rollout_batch, cfg.model_buffer_capacity(horizon),
                        penalty)


def rollout_into(run: Run, horizon: int, batch: int, capacity: int,
                 penalty: float) -> dict[str, float]:
    """``batch`` branched rollouts of ``horizon`` steps from real states with the current
    policy (reward minus ``penalty`` times the largest member's std norm) into the model
    buffer of ``capacity`` transitions; the shared step of MBPO's and MOPO's schedules."""
    model, cfg = run.model, run.model.mbpo
    model.horizon = horizon
    ensure_model_buffer(run, capacity)
    run.rolled_out_at = run.counters.env_steps
    # Start states sampled on the CPU: branched_rollout moves them to the model's device once.
    start = run.replay.sample(batch, run.rng).obs.numpy()
    if cfg.goal_relabel > 0 and model.relabel_fn is not None:
        start = model.relabel_fn(start, cfg.goal_relabel, run.rng)
    data, stats = branched_rollout(
        model.ensemble, model.elites, run.sac.policy_tensor, start, horizon, model.reward_fn,
        model.termination_fn, run.generator, penalty, cfg.max_disagreement, cfg.rollout_chunk,
        model.derive_fn)
    finite = np.isfinite(data["next_obs"]).all(-1) & np.isfinite(data["reward"])
    if finite.any():
        model.buffer.add(*(data[k][finite] for k in ("obs", "action", "reward", "next_obs",
                                                      "terminated", "truncated")))
    run.model_log.update(rollout_horizon=horizon, rollout_transitions=int(finite.sum()),
                         rollout_nonfinite=int((~finite).sum()),
                         rollout_mean_penalty=stats.get("mean_penalty"))
    return stats


def update_policy(run: Run) -> None:
    """``utd`` SAC updates per env step on real data (SAC) or on batches mixing
    ``real_ratio`` real with model transitions (MBPO, once the model buffer has data)."""
    if run.counters.env_steps < run.sac_cfg.learning_starts:
        return
    if run.sac.obs_fit_pending:  # checked here so the replay is copied only once
        run.sac.fit_obs_normalizer(run.replay.all()["obs"])  # once, on the first real data
    for _ in range(run.sac_cfg.utd):
        run.last_update = run.sac.update(sample_batch(run))
        run.counters.updates += 1


def sample_batch(run: Run, real_ratio: float | None = None) -> TransitionBatch:
    """A SAC batch: all real without a model (or before its first rollout), else mixed with
    ``real_ratio`` real transitions (default MBPO's ``agent.mbpo.real_ratio``)."""
    size = run.sac_cfg.batch_size
    model = run.model
    if model is None or model.buffer is None or len(model.buffer) == 0:
        return run.replay.sample(size, run.rng, run.device)
    ratio = model.mbpo.real_ratio if real_ratio is None else real_ratio
    n_real = int(round(size * ratio))
    parts = [model.buffer.sample(size - n_real, run.rng, run.device)]
    if n_real:
        parts.append(run.replay.sample(n_real, run.rng, run.device))
    return TransitionBatch.cat(parts)


def evaluate(run: Run) -> dict[str, Any]:
    """Deterministic policy for ``eval_episodes`` on the eval env; logs the figures along with
    the latest update, model and rollout figures."""
    result = evaluate_policy(run.sac, run.eval_env, run.cfg.eval_episodes,
                             seed=10_000 + run.counters.env_steps)
    run.last_eval = {"eval_return": result["mean_return"],
                     "eval_success_rate": result["success_rate"]}
    c = run.counters
    event = {"env_steps": c.env_steps, "episodes": c.episodes, "updates": c.updates,
             **run.last_eval, **recent_stats(run), **run.last_update, **run.model_log,
             **{f"shield_{rule}": n for rule, n in run.shield_counts.items()}}
    run.logger.log(event)
    return run.last_eval


def report_progress(run: Run) -> None:
    run.logger.progress(run.counters.env_steps, {**recent_stats(run), **run.last_eval,
                                                 "shield": run.shield_counts})


def checkpoint(run: Run) -> Path:
    return save_run(run)


# --------------------------------------------------------------------------------- helpers
def reached_target(result: dict[str, Any], cfg: Any) -> bool:
    """``trainer.stop_at``: stop once the evaluation's ``stop_metric`` reaches it (saves
    robot time once a policy is good enough)."""
    value = result.get(cfg.stop_metric)
    return cfg.stop_at is not None and value is not None and value >= cfg.stop_at



def recent_stats(run: Run) -> dict[str, Any]:
    return {"episode_return": float(np.mean(run.returns)) if run.returns else None,
            "success_rate": float(np.mean(run.successes)) if run.successes else None}


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


def ensure_model_buffer(run: Run, capacity: int | None = None) -> None:
    """(Re)allocate the model buffer to ``capacity`` transitions (default: MBPO's sizing at
    the current horizon), keeping the newest rollouts."""
    model = run.model
    capacity = capacity or model.mbpo.model_buffer_capacity(model.horizon)
    old = model.buffer
    if old is not None and old.capacity == capacity:
        return
    model.buffer = ReplayBuffer(capacity, run.env.observation_space.shape[0],
                                run.env.action_space.shape[0])
    if old is not None and len(old):
        kept = {k: v[-capacity:] for k, v in old.all().items()}
        model.buffer.add(kept["obs"], kept["action"], kept["reward"], kept["next_obs"],
                         kept["terminated"] > 0, kept["truncated"] > 0)
