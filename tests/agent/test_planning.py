"""CEM-MPC on a learned model: a 1-D point mass whose answer is known, the warm start, the
limits, the budget and the weights the async actor receives."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from mbpo_arm.agent.config import EnsembleConfig, PlannerConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble, predict
from mbpo_arm.agent.ensemble_train import train_ensemble
from mbpo_arm.agent.planning import (
    CEMPlanner,
    Limits,
    acting_state,
    load_acting_state,
    rank_scores,
    score_sequences,
    shift_plan,
)
from mbpo_arm.agent.runtime.weights import flatten, unflatten
from mbpo_arm.agent.sac import SAC
from mbpo_arm.configs.schema import AgentConfig

GOAL, DT = 0.3, 0.1


def true_step(s: np.ndarray, a: float) -> np.ndarray:
    """The double integrator ``v' = v + dt a``, ``x' = x + dt v'`` (obs ``[x, v]``)."""
    v = s[1] + DT * float(np.clip(a, -1, 1))
    return np.array([s[0] + DT * v, v])


def reward(obs, action, next_obs):
    """``-|x' - goal| - 0.1 |v'|``: get to the goal and stop there. ``[B]``."""
    return -(next_obs[..., 0] - GOAL).abs() - 0.1 * next_obs[..., 1].abs()


@pytest.fixture(scope="module")
def model() -> ProbabilisticEnsemble:
    """A small ensemble fitted on 3000 random transitions of the point mass (~2 s)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = EnsembleConfig(members=3, elites=3, hidden=32, layers=2,
                         weight_decay=(0.0, 0.0, 0.0), max_epochs=60, patience=60)
    ens = ProbabilisticEnsemble(2, 1, cfg)
    obs = np.stack([rng.uniform(-0.5, 1.0, 3000), rng.uniform(-1.0, 1.0, 3000)], 1)
    act = rng.uniform(-1, 1, (3000, 1))
    nxt = np.stack([true_step(s, a[0]) for s, a in zip(obs, act, strict=True)])
    train_ensemble(ens, obs, act, nxt, None, cfg, rng, torch.Generator().manual_seed(0))
    return ens


def planner(model, **kw) -> CEMPlanner:
    cfg = PlannerConfig(planner="cem", **{"population": 100, "iterations": 5, "horizon": 15,
                                          **kw})
    return CEMPlanner(model, cfg, 1, reward, None, generator=torch.Generator().manual_seed(1))


def random_shooting(model, obs: np.ndarray, n: int, horizon: int, gen) -> float:
    """PETS's baseline: the first action of the best of ``n`` uniform sequences."""
    seqs = torch.rand(n, horizon, 1, generator=gen) * 2 - 1
    ret, _ = score_sequences(model, [0, 1, 2], torch.as_tensor(obs, dtype=torch.float32), seqs,
                             particles=1, reward_fn=reward, termination_fn=None,
                             derive_fn=None, generator=gen)
    return float(seqs[int(ret.argmax()), 0, 0])


def episode(act, steps: int = 30) -> tuple[float, np.ndarray]:
    """Closed loop on the true point mass from rest at 0: (true return, final state)."""
    s, total = np.zeros(2), 0.0
    for _ in range(steps):
        s = true_step(s, act(s))
        total += -abs(s[0] - GOAL) - 0.1 * abs(s[1])
    return total, s


def test_the_model_fits_the_point_mass(model) -> None:
    s = torch.tensor([[0.1, 0.5]])
    pred = predict(model, s, torch.tensor([[1.0]]), [0, 1, 2])
    assert torch.allclose(pred.next_obs, torch.tensor([[0.16, 0.6]]), atol=0.02)


def test_cem_beats_random_shooting_and_finds_the_known_answer(model) -> None:
    """Same model evaluations per step (500 sequences of 15 steps): CEM's closed loop gets to
    the goal and stops there; random shooting's does markedly worse (measured over 4 seeds:
    -1.81..-1.87 against -2.13..-2.24)."""
    cem = planner(model)
    gen = torch.Generator().manual_seed(2)
    cem_return, cem_end = episode(lambda s: cem.plan(s, [0, 1, 2])[0])
    rs_return, rs_end = episode(lambda s: random_shooting(model, s, 500, 15, gen))
    assert abs(cem_end[0] - GOAL) < 0.03 and abs(cem_end[1]) < 0.1, cem_end
    assert cem_return > rs_return + 0.2, (cem_return, rs_return, rs_end)
    # the first step of the known answer: accelerate towards the goal (near full thrust)
    fresh = planner(model)
    assert fresh.plan(np.zeros(2), [0, 1, 2])[0] > 0.5


def test_each_plan_starts_from_the_last_plan_shifted() -> None:
    mean = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(shift_plan(mean), torch.tensor([[2.0, 3.0], [4.0, 5.0], [0.0, 0.0]]))


def test_the_shifted_warm_start_is_used_and_reset_per_episode(model) -> None:
    cem = planner(model, iterations=2)
    cem.plan(np.zeros(2), [0, 1, 2])
    first = cem.mean.clone()
    assert first.abs().sum() > 0
    cem.plan(np.array([0.01, 0.1]), [0, 1, 2])
    assert torch.equal(cem.start_mean, shift_plan(first))
    # and it matters: one iteration from the warm start beats one from scratch
    warm, cold = planner(model, iterations=1), planner(model, iterations=1)
    s = np.zeros(2)
    for _ in range(8):  # both follow the same states; only warm keeps its plans
        warm.plan(s, [0, 1, 2])
        cold.reset()
        cold.plan(s, [0, 1, 2])
        s = true_step(s, 1.0)
    assert warm.last["plan_return"] > cold.last["plan_return"]
    warm.reset()
    assert warm.mean.abs().sum() == 0


def test_infeasible_sequences_rank_below_every_feasible_one() -> None:
    returns = torch.tensor([5.0, 1.0, -3.0, float("nan"), 9.0])
    violation = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.01])
    rank = rank_scores(returns, violation)
    assert rank.argsort(descending=True).tolist() == [0, 1, 2, 3, 4]
    assert rank_scores(torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.1])).argmax() == 1


def test_a_planner_within_limits_never_chooses_a_sequence_that_leaves_them(model) -> None:
    """The goal (0.3) lies beyond the position limit (0.2): unconstrained the plan overshoots
    the limit; with it every chosen sequence keeps x <= 0.2, in the model and on the true
    point mass too (up to the model's error)."""
    limits = Limits(slice(0, 1), torch.tensor([-1.0]), torch.tensor([0.2]))
    free = planner(model)
    free.plan(np.zeros(2), [0, 1, 2])
    _, viol = score_sequences(model, [0, 1, 2], torch.zeros(2), free.mean[None], particles=4,
                              reward_fn=reward, termination_fn=None, derive_fn=None,
                              generator=torch.Generator().manual_seed(3), limits=limits)
    assert viol.item() > 0  # the best unconstrained plan leaves the limits
    cfg = PlannerConfig(planner="cem", population=100, iterations=5, horizon=15)
    safe = CEMPlanner(model, cfg, 1, reward, None, generator=torch.Generator().manual_seed(1),
                      limits=limits)
    _, end = episode(lambda s: safe.plan(s, [0, 1, 2])[0])
    assert safe.chosen_feasible and all(safe.chosen_feasible)
    assert safe.figures()["plan_feasible"] == 1.0
    assert end[0] < 0.22 and end[0] > 0.1, end


def test_a_plan_over_budget_is_abandoned_and_counted(model) -> None:
    cem = planner(model, population=500)
    cem.mean = torch.ones_like(cem.mean)
    t0 = time.perf_counter()
    assert cem.plan(np.zeros(2), [0, 1, 2], budget_s=1e-4) is None
    assert time.perf_counter() - t0 < 1.0  # it stopped after its first iteration
    assert cem.overruns == 1
    assert torch.equal(cem.mean, shift_plan(torch.ones(15, 1)))  # still in step with time
    assert cem.fallback_action() == pytest.approx([1.0])
    assert cem.plan(np.zeros(2), [0, 1, 2], budget_s=10.0) is not None


def test_policy_seeded_plans_end_on_the_value(model) -> None:
    """MBPO's planner: policy sequences join the population and ``V(s_H)`` the score."""
    calls = []

    def policy(obs):
        calls.append(obs.shape)
        return torch.ones(obs.shape[0], 1)

    def value(obs):
        return -10 * (obs[:, 0] - GOAL).abs()

    cfg = PlannerConfig(planner="cem", population=40, iterations=2, policy_fraction=0.25)
    cem = CEMPlanner(model, cfg, 1, reward, None, generator=torch.Generator().manual_seed(4),
                     policy=policy, value_fn=value, gamma=0.9)
    assert cem.horizon == 3 and cem.n_policy == 10  # a value at the end: horizon 3
    assert cem.plan(np.zeros(2), [0, 1, 2]).shape == (1,)
    assert calls == [(10, 2)] * 3
    assert PlannerConfig().plan_horizon(with_value=False) == 15


def test_the_actor_gets_policy_critic_ensemble_and_elites_in_one_vector(model) -> None:
    cfg = EnsembleConfig(members=3, elites=3, hidden=32, layers=2,
                         weight_decay=(0.0, 0.0, 0.0))
    sac = SAC(2, 1, AgentConfig().sac, generator=torch.Generator().manual_seed(0))
    vector = flatten(acting_state(sac, model, [2, 0]))
    fresh_sac = SAC(2, 1, AgentConfig().sac, generator=torch.Generator().manual_seed(9))
    fresh = ProbabilisticEnsemble(2, 1, cfg)
    template = acting_state(fresh_sac, fresh, [])
    elites = load_acting_state(fresh_sac, fresh, unflatten(vector, template))
    assert elites == [0, 2]
    x = torch.tensor([[0.1, 0.2, 0.5]]).expand(3, 1, 3)
    assert torch.equal(fresh(x)[0], model(x)[0])
    obs, a = torch.zeros(4, 2), torch.zeros(4, 1)
    assert torch.equal(fresh_sac.critic(obs, a), sac.critic(obs, a))
    assert len(flatten(acting_state(sac))) < len(vector)  # without a planner: the policy only


def test_pets_acts_by_planning_and_the_policy_agent_refuses_a_planner() -> None:
    assert AgentConfig(algo="pets").act.planner == "cem"
    with pytest.raises(ValueError, match="agent.act.planner needs a model"):
        AgentConfig(algo="sac", act=PlannerConfig(planner="cem"))
    with pytest.raises(ValueError, match="agent.act.population"):
        PlannerConfig(population=1)
