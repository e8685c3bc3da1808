"""``runtime=async`` with MBPO: the learner process trains the model on schedule
(``model_due``) and rolls it out, while the actor keeps its rate; nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runtime.async_helpers import HZ, QUICK, check_nothing_lost, finish, start

TINY_MBPO = ["agent=mbpo_reach", "agent.sac.utd=2", "agent.model.hidden=32",
             "agent.model.layers=2", "agent.model.weight_decay=[2.5e-5,5e-5,1e-4]",
             "agent.model.members=3", "agent.model.elites=2", "agent.model.max_epochs_per_train=5",
             "agent.mbpo.model_learning_starts=100", "agent.mbpo.model_train_every=100",
             "agent.mbpo.rollout_batch=500"]


@pytest.mark.slow
def test_mbpo_learner_trains_the_model_on_schedule(tmp_path: Path) -> None:
    run, total = tmp_path / "run", 7 * HZ
    quick = [o for o in QUICK if not o.startswith("agent=")]
    stats = finish(start(*quick, *TINY_MBPO, f"trainer.total_steps={total}",
                         f"run_dir={run}"), run)
    check_nothing_lost(run, total, stats)
    reports = [json.loads(line) for line in (run / "model_reports.jsonl").open()]
    assert [r["env_steps"] for r in reports] == [100, 200, 300]


@pytest.mark.slow
def test_the_learner_evaluates_and_ends_the_run_at_the_target(tmp_path: Path) -> None:
    """``trainer.stop_at`` in async mode: the learner's evaluation (on its own eval env) is
    logged, and reaching the target stops the actor early with nothing lost."""
    run, total = tmp_path / "run", 120 * HZ  # a bound only: the target ends it far sooner
    stats = finish(start(*QUICK, f"trainer.total_steps={total}", f"run_dir={run}",
                         "trainer.eval_every=100", "trainer.eval_episodes=1",
                         "trainer.stop_at=0.0"), run)
    events = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    evals = [e for e in events if "eval_success_rate" in e]
    assert len(evals) == 1, "the run went on evaluating after it reached its target"
    assert evals[0]["env_steps"] >= 100 and evals[0]["updates"] > 0
    assert stats["reached_target_at"] == evals[0]["env_steps"]
    assert any(e.get("stopped_at_target") == 0.0 for e in events)
    n = stats["actor_steps"]
    assert stats["reached_target_at"] <= n < total, "the run did not stop at the target"
    check_nothing_lost(run, n, stats)


@pytest.mark.slow
@pytest.mark.parametrize("budget_ms, all_fall_back", [(1e-3, True), (1e4, False)])
def test_the_async_actor_plans_on_the_published_ensemble(tmp_path: Path, budget_ms: float,
                                                         all_fall_back: bool) -> None:
    """``agent.act.planner=cem`` in async mode: the ensemble reaches the actor with the
    policy (it plans once the first fit is published); a plan over ``agent.act.budget_ms``
    falls back to the policy for that tick and is counted; nothing is lost either way."""
    run, total = tmp_path / "run", 7 * HZ
    quick = [o for o in QUICK if not o.startswith("agent=")]
    stats = finish(start(*quick, *TINY_MBPO, "agent.act.planner=cem", "agent.act.population=32",
                         "agent.act.iterations=1", "agent.act.horizon=1",
                         f"agent.act.budget_ms={budget_ms}",
                         f"trainer.total_steps={total}", f"run_dir={run}"), run)
    check_nothing_lost(run, total, stats)
    # the first fit is at step 100 and published with the next weights; plans follow it (at
    # most every tick from step 100 on, when the fit is published at once)
    assert 0 < stats["plans"] <= total - 100
    assert stats["plan_overruns"] == stats["plan_fallbacks"]
    if all_fall_back:
        assert stats["plan_fallbacks"] == stats["plans"]
    else:  # the budget is then 80% of the 20 ms tick: plans (~3 ms) complete but for hiccups
        assert stats["plan_fallbacks"] <= stats["plans"] // 10 and stats["plan_ms_p50"] > 0
