"""``mbpo-arm`` on a serial arm: training over a pseudo-terminal against the servo emulator
for both protocols, the interactive calibration driven by scripted input, and the start-up
errors of the serial backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mbpo_arm.agent.checkpoint import latest_checkpoint, load_checkpoint
from mbpo_arm.agent.logger import read_metrics
from mbpo_arm.agent.runtime.replay_log import read_log
from mbpo_arm.configs.loader import load_run_config
from mbpo_arm.configs.schema import ConfigError
from mbpo_arm.hardware.calibration import Calibration
from mbpo_arm.launch.cli import main
from mbpo_arm.sim.servo_emulator import ServoEmulator
from tests.hardware.conftest import fast_limits
from tests.hardware.emulated import emulated_arm

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["logger.wandb=disabled", "agent.sac.learning_starts=100", "agent.sac.batch_size=64",
         "agent.sac.hidden=[64,64]", "trainer.total_steps=200", "trainer.eval_every=200",
         "trainer.eval_episodes=1", "trainer.checkpoint_every=200", "trainer.log_every=100",
         "runtime.control_hz=100", "task.max_episode_steps=50"]


@pytest.fixture
def one_torch_thread():  # noqa: ANN201
    """One intra-op thread, as the actor uses: on a loaded 2-core machine more threads
    only contend with the emulator and the control loop."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("robot,protocol", [("so101", "feetech"), ("koch", "dynamixel")])
def test_training_over_the_wire(robot: str, protocol: str, tmp_path: Path,
                                one_torch_thread: None) -> None:
    """SAC trains on the emulated arm through `mbpo-arm train --backend serial robot=...
    port=...`; every goal position on the wire stays in the joints' ranges."""
    with emulated_arm(tmp_path, protocol) as (emulator, overrides):
        run = tmp_path / "run"
        limits = [f"shield.limits_file={fast_limits(tmp_path)}"]  # so101's, with quick resets
        code = main(["train", "--backend", "serial", f"robot={robot}", f"port={emulator.port}",
                     *overrides[1:], *QUICK, *limits, f"run_dir={run}"])
        assert code == 0
        time.sleep(0.05)
        assert not emulator.torque().any(), "torque still on after the run"
        assert emulator.unsafe == []
        assert emulator.goal_writes >= 250  # 200 steps, 50 eval steps, the slow resets
    metrics = read_metrics(run)
    final = [m for m in metrics if "eval_return" in m][-1]
    assert final["env_steps"] == 200 and final["episodes"] == 4
    assert final["updates"] == 101 and np.isfinite(final["critic_loss"]), "SAC never updated"
    assert -30 < final["eval_return"] < 0  # minus the distance (m) per step, 50 steps


@pytest.mark.slow
def test_calibrate_walks_through_and_finds_the_arms_mounting(tmp_path: Path) -> None:
    """`mbpo-arm calibrate` with scripted answers, while the test moves the limp joints as a
    person would; the file it writes matches the emulated arm's real mounting."""
    out = tmp_path / "so101.json"
    with ServoEmulator("feetech") as emulator:
        truth = emulator.calibration()
        lower, upper = emulator.twin.limits.lower, emulator.twin.limits.upper
        proc = subprocess.Popen(
            [sys.executable, "-m", "mbpo_arm.launch.cli", "calibrate", "robot=so101",
             f"port={emulator.port}", f"backend.calibration={out}"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.stdin is not None and proc.stdout is not None
        names = list(emulator.twin.joint_names)
        try:
            for line in proc.stdout:
                if "zero pose" in line:
                    emulator.hold(np.zeros(6))
                elif "positive direction" in line:
                    q = np.zeros(6)
                    q[next(k for k, n in enumerate(names) if f"Turn {n} " in line)] = 0.2
                    emulator.hold(q)
                elif "whole range" in line:  # a hand sweeps zero -> lower -> upper -> zero
                    for a, b in ((np.zeros(6), lower), (lower, upper), (upper, np.zeros(6))):
                        for s in np.linspace(0, 1, 25):
                            emulator.hold(a + s * (b - a))
                            time.sleep(0.01)
                        time.sleep(0.1)
                else:
                    continue
                time.sleep(0.05)
                proc.stdin.write("\n")
                proc.stdin.flush()
            assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            proc.kill()
    found = Calibration.load(out)
    for name in names:
        got, want = found.joints[name], truth.joints[name]
        assert (got.id, got.direction) == (want.id, want.direction)
        assert abs(got.zero - want.zero) <= 2
        assert abs(got.min - want.min) <= 15 and abs(got.max - want.max) <= 15


def test_serial_start_up_errors_are_one_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="robot=so101 is a serial-bus arm; add --backend"):
        load_run_config(["robot=so101"])
    rc, _ = load_run_config(["backend=serial", "robot=koch", "backend.port=/dev/ttyX"])
    assert (rc.backend.protocol, rc.backend.port) == ("dynamixel", "/dev/ttyX")
    missing = tmp_path / "none.json"
    assert main(["train", "--backend", "serial", "robot=so101", "port=/dev/ttyNOPE9",
                 f"backend.calibration={missing}", "logger.wandb=disabled",
                 f"run_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none.json" in err and "calibrate" in err
    with emulated_arm(tmp_path) as (_, overrides):
        cal = json.loads(Path(overrides[2].split("=", 1)[1]).read_text())
        assert cal["protocol"] == "feetech"
        assert main(["train", "--backend", "serial", "robot=so101", "port=/dev/ttyNOPE9",
                     *overrides[1:], "logger.wandb=disabled", f"run_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'/dev/ttyNOPE9' does not exist" in err


def test_async_learner_never_opens_the_serial_port(tmp_path: Path) -> None:
    """With runtime=async only the actor drives the arm: the learner's env is the twin."""
    from mbpo_arm.envs.reach import ArmReachEnv
    from mbpo_arm.launch.build import build_learner_run
    from mbpo_arm.sim.twin import TwinRobot

    rc, _ = load_run_config(["backend=serial", "robot=so101", "backend.port=/dev/ttyNOPE9",
                             "logger.wandb=disabled", "runtime=async"])
    run = build_learner_run(rc, str(tmp_path / "run"))
    try:
        for env in (run.env, run.eval_env):
            assert isinstance(env.unwrapped, ArmReachEnv)
            assert isinstance(env.unwrapped.loop.backend, TwinRobot)
            assert env.unwrapped.loop.shield is not None
    finally:
        run.logger.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_bus_failure_mid_run_saves_what_was_collected(mode: str, tmp_path: Path,
                                                        capsys,  # noqa: ANN001
                                                        one_torch_thread: None) -> None:
    """Every servo goes silent mid-run: the run exits 1 with one line naming the failure,
    where what was collected is and how to resume. Sync: the checkpoint written then holds
    every step, the last one marked truncated (the failure cut the episode); async: the
    replay log holds every step the actor took."""
    with emulated_arm(tmp_path, "feetech") as (emulator, overrides):
        run = tmp_path / "run"
        limits = [f"shield.limits_file={fast_limits(tmp_path)}"]

        def fail_later() -> None:
            while emulator.goal_writes < 6 * 300:  # a count per servo: 300 ticks
                time.sleep(0.005)
            emulator.faults.silent_ids = set(range(1, 7))

        threading.Thread(target=fail_later, daemon=True).start()
        code = main(["train", "--backend", "serial", "robot=so101", f"port={emulator.port}",
                     *overrides[1:], *QUICK, *limits, f"run_dir={run}",
                     "trainer.total_steps=1000", "trainer.checkpoint_every=1000",
                     f"runtime={mode}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    line = [e for e in err if e.startswith("mbpo-arm: error:")]
    assert len(line) == 1 and f"continue with: mbpo-arm train resume={run}" in line[0], err
    if mode == "async":
        assert str(run / "replay.log") in line[0]
        assert 50 <= len(read_log(run / "replay.log", 19, 5)) < 1000
        return
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and str(ckpt) in line[0]
    state, buffers = load_checkpoint(ckpt)
    steps = state["counters"]["env_steps"]
    assert 50 <= steps < 1000 and len(buffers["replay"]) == steps
    assert bool(buffers["replay"].all()["truncated"][-1])
