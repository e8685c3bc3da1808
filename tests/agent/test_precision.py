"""The learner's number format (``precision``) and its Adam: what ``auto`` picks, that bf16
autocasts the forward passes only (parameters, optimizer states and losses stay float32),
that it still learns, and that a short ``mbpo-arm train`` runs in bf16."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.config import EnsembleConfig, SACConfig
from mbpo_arm.agent.ensemble import ProbabilisticEnsemble, predict
from mbpo_arm.agent.ensemble_train import train_ensemble
from mbpo_arm.agent.layers import adam, native_bf16, resolve_precision
from mbpo_arm.agent.logger import read_metrics
from mbpo_arm.agent.sac import SAC
from mbpo_arm.agent.types import TransitionBatch
from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.configs.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return next((set(line.split(":", 1)[1].split()) for line in f
                     if line.startswith("flags")), set())


# --------------------------------------------------------------------------- resolution
@pytest.mark.parametrize(("flags", "native"), [("fpu sse2 amx_bf16 amx_tile", True),
                                                ("fpu avx512f avx512_bf16", True),
                                                ("fpu sse2 avx2 avx512f", False)])
def test_native_bf16_reads_the_cpu_flags(tmp_path: Path, flags: str, native: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert native_bf16("cpu", str(info)) is native
    assert native_bf16("cpu", str(tmp_path / "missing")) is False


def test_auto_picks_bf16_on_this_cpu_and_fp32_is_kept() -> None:
    native = bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert native_bf16("mps") is False


def test_bad_precision_is_a_one_line_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError) as err:
        load_run_config(["precision=fp16"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("precision=fp16") and "auto, fp32, bf16" in msg
    assert load_run_config(["precision=auto"])[0].precision == "auto"
    assert load_run_config([])[0].precision == "fp32"  # the default, until bf16's curves


# ------------------------------------------------------------------------------ Adam
def test_adam_is_fused_on_cpu_and_keeps_it_through_a_plain_state() -> None:
    w = torch.nn.Parameter(torch.randn(4, 3))
    plain = torch.optim.Adam([w], lr=1e-2)
    w.grad = torch.ones_like(w)
    plain.step()
    opt = adam([w], lr=1e-2)
    assert opt.param_groups[0]["fused"] is True
    opt.load_state_dict(plain.state_dict())  # its groups say fused=None; the hook restores
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["foreach"] is None
    opt.step()
    assert float(opt.state[w]["step"]) == 2.0
    half = torch.nn.Parameter(torch.randn(3, dtype=torch.float16))
    assert adam([half], lr=1e-2).param_groups[0]["foreach"] is True  # no fused fp16 on CPU here


# ----------------------------------------------------------------------- SAC in bf16
BEST = torch.tensor([0.5, -0.5])  # the action the tiny problem rewards most


def fixed_batch(n: int = 128, obs_dim: int = 3) -> TransitionBatch:
    """One state, one-step episodes (all terminated), reward ``-||a - BEST||^2``: the critic
    regresses a fixed target and the best action is known."""
    g = torch.Generator().manual_seed(0)
    obs = torch.ones(n, obs_dim)
    action = torch.rand(n, len(BEST), generator=g) * 2 - 1
    return TransitionBatch(obs=obs, action=action, reward=-(action - BEST).pow(2).sum(dim=1),
                           next_obs=obs + 0.1 * torch.randn(n, obs_dim, generator=g),
                           terminated=torch.ones(n), truncated=torch.zeros(n))


def test_sac_in_bf16_learns_and_keeps_float32_state() -> None:
    cfg = SACConfig(hidden=(64, 64), critic_lr=3e-3, init_alpha=0.01)
    sac = SAC(3, 2, cfg, generator=torch.Generator().manual_seed(0), precision="bf16")
    assert sac.precision == "bf16"
    seen: list[torch.dtype] = []
    hook = sac.critic.net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    batch = fixed_batch()
    def miss() -> float:  # mean distance of the deterministic action from the best one
        return float(np.abs(sac.act(batch.obs.numpy(), deterministic=True) - BEST.numpy()).mean())

    miss_before = miss()
    critic = [sac.update(batch)["critic_loss"] for _ in range(400)]
    hook.remove()
    assert torch.bfloat16 in seen  # the forward passes ran in bf16
    assert np.mean(critic[-20:]) < 0.3 * np.mean(critic[:20]), critic[::30]
    assert miss() < 0.5 * miss_before, (miss(), miss_before)  # the actor moved to the best
    assert {p.dtype for p in [*sac.actor.parameters(), *sac.critic.parameters(),
                              *sac.critic_target.parameters(), sac.log_alpha]} == {torch.float32}
    for opt in (sac.actor_opt, sac.critic_opt, sac.alpha_opt):
        assert opt.param_groups[0]["fused"] is True
        assert {v.dtype for s in opt.state.values() for v in s.values()} == {torch.float32}
    metrics = sac._update_critic(batch)
    assert metrics["critic_loss"].dtype == torch.float32 and sac.td_target(batch).dtype == \
        torch.float32
    mean, log_std = sac.actor(batch.obs)
    assert mean.dtype == log_std.dtype == torch.float32


# ------------------------------------------------------------------ ensemble in bf16
def test_ensemble_fits_and_predicts_in_bf16() -> None:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(600, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(600, 2)).astype(np.float32)
    nxt = obs + 0.1 * np.concatenate([act, act[:, :1]], axis=1)
    cfg = EnsembleConfig(members=3, elites=2, hidden=32, layers=2, batch_size=32,
                         weight_decay=(2.5e-5, 5e-5, 1e-4), max_epochs=15)
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(3, 2, cfg, precision="bf16")
    report = train_ensemble(model, obs, act, nxt, None, cfg, rng, torch.Generator())
    assert report.elite_holdout_mse < 0.2 * report.initial_holdout_mse, report
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    pred = predict(model, torch.as_tensor(obs[:8]), torch.as_tensor(act[:8]), report.elites,
                   torch.Generator().manual_seed(0))
    assert pred.next_obs.dtype == pred.member_std.dtype == torch.float32
    assert float((pred.next_obs - torch.as_tensor(nxt[:8])).abs().mean()) < 0.1


# --------------------------------------------------------------------- the CLI in bf16
def test_a_short_sync_train_runs_in_bf16(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--backend", "mujoco", "task=reach", "agent=mbpo", "logger.wandb=disabled",
            "precision=bf16", "trainer.total_steps=120", "trainer.eval_every=120",
            "trainer.eval_episodes=1", "trainer.checkpoint_every=120", "agent.sac.utd=2",
            "agent.sac.learning_starts=80", "agent.sac.batch_size=32",
            "agent.sac.hidden=[32,32]", "agent.model.hidden=32", "agent.model.layers=2",
            "agent.model.weight_decay=[2.5e-5,5e-5,1e-4]", "agent.model.members=3",
            "agent.model.elites=2", "agent.model.max_epochs_per_train=3",
            "agent.mbpo.model_train_every=40", "agent.mbpo.rollout_batch=200",
            f"run_dir={run}"]
    proc = subprocess.run([sys.executable, "-m", "mbpo_arm.launch.cli", *args], cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "precision: bf16" in proc.stdout
    events = read_metrics(run)
    assert events[0]["precision"] == "bf16"
    assert any("critic_loss" in e for e in events), "SAC updates never ran"
    assert (run / "model_reports.jsonl").exists(), "the ensemble was never fitted"
