"""Offline pretraining with MOPO, and starting an online run from a pretrained one.

MOPO (Yu et al. 2020, "Model-based Offline Policy Optimization", algorithm 2): fit the
ensemble on the dataset to convergence, then train SAC on batches mixing ``real_ratio``
dataset transitions with ``horizon``-step branched model rollouts from dataset states, the
model reward penalised by ``penalty_coef`` times the largest member's predicted std norm. No
env step is taken; the twin only evaluates the policy now and then.

The phases of the online loop (:mod:`mbpo_arm.agent.train`) are reused with MOPO's own
settings passed in: ``train_model``, ``rollout_into``, ``sample_batch``, ``evaluate``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from mbpo_arm.agent.checkpoint import latest_checkpoint, load_checkpoint
from mbpo_arm.agent.config import FinetuneConfig, MOPOConfig
from mbpo_arm.agent.dataset import Dataset, check_spec
from mbpo_arm.agent.io import atomic_write_text
from mbpo_arm.agent.run import Agent, Model, Run, save_run
from mbpo_arm.agent.train import (
    evaluate,
    model_figures,
    rollout_into,
    rollout_model,
    sample_batch,
    train_model,
)

PRETRAIN_INFO = "pretrain.json"
_OPTIMIZERS = ("actor_opt", "critic_opt", "alpha_opt")


def pretrain(run: Run, dataset: Dataset, cfg: MOPOConfig, source: str = "") -> dict[str, Any]:
    """MOPO on ``dataset``, which ``run``'s replay holds (an MBPO run built by the composition
    root with the dataset as its replay), in MOPO's own schedule: one fit, then
    ``gradient_steps`` SAC updates with ``horizon``-step rollouts every ``rollout_every``.

    Returns the final evaluation with the model report; writes ``pretrain.json`` and a
    checkpoint (without the model buffer) that ``init_from=`` starts from.
    """
    agent, progress = run.agent, run.progress
    if agent.model is None:
        raise ValueError("pretraining needs an MBPO run (agent=mopo_reach or agent=mopo_hopper)")
    check_spec(dataset, source or "dataset", run.env.observation_space.shape[0],
               run.env.action_space.shape[0])
    if len(agent.replay) != len(dataset):
        raise ValueError(f"the run's replay holds {len(agent.replay)} transitions, the dataset "
                         f"{len(dataset)}; build the run with ReplayBuffer.from_dataset")
    fit = replace(agent.model.fit, max_epochs=None, max_epochs_per_train=cfg.model_max_epochs)
    report = train_model(agent, run.run_dir, 0, fit)
    progress.model_log.update(model_figures(report))
    agent.sac.fit_obs_normalizer(agent.replay.all()["obs"])
    # The model buffer keeps the last retain_rollouts rollouts (Yu et al. 2020, algorithm 2).
    capacity = cfg.retain_rollouts * cfg.rollout_batch * cfg.horizon
    counters = progress.counters
    while counters.updates < cfg.gradient_steps:
        if counters.updates % cfg.rollout_every == 0:
            progress.model_log.update(rollout_into(agent, cfg.horizon, cfg.rollout_batch,
                                                   capacity, cfg.penalty_coef))
        progress.last_update = agent.sac.update(sample_batch(agent, cfg.real_ratio))
        counters.updates += 1
        if counters.updates % cfg.eval_every == 0:
            evaluate(run)
            run.logger.progress(counters.updates, progress.last_eval)
    if not progress.last_eval or counters.updates % cfg.eval_every:
        evaluate(run)
    agent.model.buffer = None  # rollouts are remade from the dataset when fine-tuning starts
    save_run(run)
    info = {"dataset": source, "dataset_meta": {k: v for k, v in asdict(dataset.meta).items()
                                                if k != "checksums"},
            "mopo": asdict(cfg), "penalty_coef": cfg.penalty_coef, "updates":
            counters.updates, "final_eval": progress.last_eval,
            "model_report": {"env_steps": 0, **report.to_dict()}}
    atomic_write_text(Path(run.run_dir) / PRETRAIN_INFO, json.dumps(info, indent=1))
    return {**progress.last_eval, "updates": counters.updates}


# ------------------------------------------------------------------------------ fine-tune
def init_from_run(agent: Agent, source: str | Path, cfg: FinetuneConfig) -> dict[str, Any]:
    """Load the ensemble, elites, policy and critics (optimizers by ``cfg``) of run directory
    ``source`` into the fresh ``agent``, seed its replay with ``source``'s data and fill the
    model buffer once (the penalty to anneal from is set by the composition,
    :func:`finetune_penalty`), so the first online step already acts on and learns from the
    pretrained agent. Returns what was loaded, with the rollout's figures.

    Raises:
        FileNotFoundError: ``source`` has no checkpoint.
        ValueError: the checkpoint is unreadable or for another obs/action size.
    """
    source = Path(source)
    ckpt = latest_checkpoint(source)
    if ckpt is None:
        raise FileNotFoundError(f"init_from={source}: no checkpoint there; give a run "
                                "directory made by `mbpo-arm pretrain` or `mbpo-arm train`")
    state, buffers = load_checkpoint(ckpt, ("replay",), map_location=agent.device)
    sac_state = dict(state["sac"])
    if not cfg.load_optimizers:
        fresh = agent.sac.state_dict()
        sac_state.update({k: fresh[k] for k in _OPTIMIZERS})
    agent.sac.load_state_dict(sac_state)
    if cfg.seed_replay and "replay" in buffers:
        data = buffers["replay"].all()
        agent.replay.add(data["obs"], data["action"], data["reward"], data["next_obs"],
                         data["terminated"] > 0, data["truncated"] > 0)
    rolled = {}
    if agent.model is not None:
        _load_model(agent.model, state, source)
        if len(agent.replay):
            rolled = rollout_model(agent, 0)
    coef = agent.model.mbpo.penalty_coef if agent.model is not None else 0.0
    return {"init_from": str(ckpt), "penalty_coef": coef,
            "seeded_transitions": len(agent.replay), **rolled}


def finetune_penalty(source: str | Path, cfg: FinetuneConfig) -> float:
    """The MOPO lambda fine-tuning starts from: ``cfg.penalty_coef``, else the one the run
    ``source`` was pretrained with (0 for a run that was not pretrained)."""
    if cfg.penalty_coef is not None:
        return float(cfg.penalty_coef)
    return float(_pretrain_info(Path(source)).get("penalty_coef", 0.0))


def _load_model(model: Model, state: dict[str, Any], source: Path) -> None:
    if "model" not in state:
        raise ValueError(f"init_from={source}: the run has no dynamics model (a SAC run); "
                         "use agent=sac or start from an MBPO/MOPO run")
    ens = model.ensemble
    theirs = state["model"]["ensemble"]
    mine = ens.state_dict()
    bad = [k for k in mine if k not in theirs or theirs[k].shape != mine[k].shape]
    if bad:
        raise ValueError(f"init_from={source}: its ensemble does not fit this one (first "
                         f"mismatch {bad[0]}); use the same task and agent.model sizes")
    ens.load_state_dict(theirs)
    model.elites = list(state["model"]["elites"])


def _pretrain_info(source: Path) -> dict[str, Any]:
    path = source / PRETRAIN_INFO
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
