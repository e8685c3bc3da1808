"""Damaged checkpoints are found, named in one line with the newest intact one, and resumed
from only when asked (``resume.fallback=true``); training that diverges stops on its last
good checkpoint; retention keeps the newest whole checkpoint; ``latest`` only moves forward.
Real runs of the CLI, real files damaged on disk."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.checkpoint import (
    CheckpointError,
    DamagedCheckpoint,
    Diverged,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_manifest,
)
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.launch.cli import main

QUICK = ["logger.wandb=disabled", "logger.progress=false", "agent.sac.learning_starts=60",
         "agent.sac.batch_size=16", "agent.sac.hidden=[16,16]", "agent.sac.utd=1",
         "trainer.eval_episodes=1", "trainer.eval_every=100000", "trainer.log_every=100000"]
NEWEST, INTACT = "step_00000300", "step_00000200"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short sync run with checkpoints at steps 200 and 300 (the two kept)."""
    run = tmp_path_factory.mktemp("made") / "run"
    assert main(["train", *QUICK, "trainer.total_steps=300", "trainer.checkpoint_every=100",
                 f"run_dir={run}"]) == 0
    return run


@pytest.fixture
def run(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(made, copy)
    return copy


def flip(path: Path) -> None:
    """Invert four bytes in the middle of ``path`` (its size stays)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2
    data[i:i + 4] = bytes(b ^ 0xFF for b in data[i:i + 4])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def nan_weights(path: Path) -> None:
    """NaN in the policy's first layer, with a manifest that matches (a state saved so)."""
    state = torch.load(path, weights_only=False)
    next(iter(state["sac"]["actor"].values())).fill_(float("nan"))
    torch.save(state, path)
    write_manifest(path.parent, 300)


DAMAGE = {"state.pt-flipped": ("state.pt", flip, "state.pt does not match its SHA-256"),
          "replay.npz-flipped": ("replay.npz", flip, "replay.npz does not match its SHA-256"),
          "state.pt-truncated": ("state.pt", truncate, "when written: truncated"),
          "replay.npz-truncated": ("replay.npz", truncate, "when written: truncated"),
          "nan-weights": ("state.pt", nan_weights,
                          "state.pt holds non-finite values in sac.actor.net.0.weight")}


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_one_line_naming_the_newest_intact_one(
        run: Path, kind: str, capsys: pytest.CaptureFixture) -> None:
    name, damage, reason = DAMAGE[kind]
    newest = run / "checkpoints" / NEWEST
    damage(newest / name)
    assert main(["train", f"resume={run}"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"mbpo-arm: error: checkpoint {newest} is damaged (")
    assert reason in line
    assert line.endswith(f"the newest intact checkpoint is {INTACT}: `mbpo-arm train "
                         f"resume={run} resume.fallback=true` continues from it")
    with pytest.raises(DamagedCheckpoint) as err:  # what eval, init_from and the learner read
        load_checkpoint(newest, ("replay",))
    assert err.value.intact == run / "checkpoints" / INTACT
    assert latest_checkpoint(run) == newest  # nothing moved without resume.fallback


def test_fallback_sets_the_damaged_one_aside_and_resumes_from_the_intact_one(
        run: Path, capsys: pytest.CaptureFixture) -> None:
    flip(run / "checkpoints" / NEWEST / "state.pt")
    assert main(["train", f"resume={run}", "resume.fallback=true",
                 "trainer.total_steps=400"]) == 0
    err = capsys.readouterr().err
    assert (f"resume: checkpoint {NEWEST} is damaged (state.pt does not match its SHA-256: it "
            f"changed after it was written); set aside as damaged_{NEWEST}; continuing from "
            f"{INTACT}, the newest intact checkpoint") in err
    assert (run / "checkpoints" / f"damaged_{NEWEST}").is_dir()
    state, buffers = load_checkpoint(latest_checkpoint(run))
    assert latest_checkpoint(run).name == "step_00000400"
    assert state["counters"]["env_steps"] == 400 and len(buffers["replay"]) == 400


def test_no_intact_checkpoint_left_says_so_even_with_fallback(
        run: Path, capsys: pytest.CaptureFixture) -> None:
    truncate(run / "checkpoints" / NEWEST / "replay.npz")
    flip(run / "checkpoints" / INTACT / "state.pt")
    assert main(["train", f"resume={run}", "resume.fallback=true"]) == 2
    assert one_error_line(capsys).endswith("no older checkpoint is intact: start a new run")
    assert latest_checkpoint(run).name == NEWEST


def test_training_that_diverges_stops_in_one_line_on_its_last_good_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:  # learning rates that overflow at the first update
        main(["train", *QUICK, "trainer.total_steps=300", "trainer.checkpoint_every=50",
              "agent.sac.critic_lr=1e30", "agent.sac.actor_lr=1e30", f"run_dir={run}"])
    assert stop.value.code == 1
    line = one_error_line(capsys)
    good = run / "checkpoints" / "step_00000050"
    assert line.startswith("mbpo-arm: error: training diverged at env step 60: ")
    assert line.endswith(f"the last good checkpoint is {good} (mbpo-arm train resume={run} "
                         "continues from it)")
    assert latest_checkpoint(run) == good
    load_checkpoint(good)  # verifies: whole and finite


def small_state(value: float = 0.0) -> dict:
    return {"w": torch.full((4,), value), "counters": {"env_steps": 0}}


def small_buffer(n: int) -> dict[str, ReplayBuffer]:
    buffer = ReplayBuffer(64, 3, 2)
    for _ in range(n):
        buffer.add(np.zeros(3), np.zeros(2), 0.0, np.zeros(3), False, False)
    return {"replay": buffer}


def names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_retention_never_deletes_the_newest_whole_checkpoint(tmp_path: Path) -> None:
    for step in (100, 200):
        save_checkpoint(tmp_path, step, small_state(), small_buffer(step // 10))
    truncate(tmp_path / "checkpoints" / "step_00000200" / "replay.npz")
    save_checkpoint(tmp_path, 300, small_state(), small_buffer(30))
    # 200 is damaged: 100 stays, the newest whole one before 300
    assert names(tmp_path) == ["latest", "step_00000100", "step_00000200", "step_00000300"]
    save_checkpoint(tmp_path, 400, small_state(), small_buffer(40))
    assert names(tmp_path) == ["latest", "step_00000300", "step_00000400"]


def test_latest_only_moves_forward_and_nothing_non_finite_is_saved(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 300, small_state(), small_buffer(3))
    with pytest.raises(CheckpointError, match="names step 300 and only moves forward"):
        save_checkpoint(tmp_path, 200, small_state(), small_buffer(2))  # a stray old writer
    with pytest.raises(Diverged, match="w is not finite"):
        save_checkpoint(tmp_path, 400, small_state(float("nan")), small_buffer(4))
    assert names(tmp_path) == ["latest", "step_00000300"]
    save_checkpoint(tmp_path, 300, small_state(1.0), small_buffer(3))  # the same step again
    assert load_checkpoint(latest_checkpoint(tmp_path))[0]["w"][0] == 1.0
    # A kill between the two renames of a second save of one step leaves the old directory
    # aside, under the dead writer's pid: it is put back.
    dead = subprocess.Popen(["true"])
    dead.wait()
    ckpt = tmp_path / "checkpoints" / "step_00000300"
    ckpt.rename(ckpt.with_name(f".step_00000300.{dead.pid}.0123abcd.old"))
    assert latest_checkpoint(tmp_path) == ckpt
    load_checkpoint(ckpt)
