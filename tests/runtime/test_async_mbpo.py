"""``runtime=async`` with MBPO: the learner process trains the model on schedule
(``model_due``) and rolls it out, while the actor keeps its rate; nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

from tests.runtime.async_helpers import HZ, QUICK, check_nothing_lost, finish, start

TINY_MBPO = ["agent=mbpo_reach", "agent.sac.utd=2", "agent.model.hidden=32",
             "agent.model.layers=2", "agent.model.weight_decay=[2.5e-5,5e-5,1e-4]",
             "agent.model.members=3", "agent.model.elites=2", "agent.model.max_epochs_per_train=5",
             "agent.mbpo.model_learning_starts=100", "agent.mbpo.model_train_every=100",
             "agent.mbpo.rollout_batch=500"]


def test_mbpo_learner_trains_the_model_on_schedule(tmp_path: Path) -> None:
    run, total = tmp_path / "run", 7 * HZ
    quick = [o for o in QUICK if not o.startswith("agent=")]
    stats = finish(start(*quick, *TINY_MBPO, f"trainer.total_steps={total}",
                         f"run_dir={run}"), run)
    check_nothing_lost(run, total, stats)
    reports = [json.loads(line) for line in (run / "model_reports.jsonl").open()]
    assert [r["env_steps"] for r in reports] == [100, 200, 300]
