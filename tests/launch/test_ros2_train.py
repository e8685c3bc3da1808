"""Training through ROS 2 topics: the twin driver and ``mbpo-arm train --backend ros2`` as two
processes exchanging real DDS traffic (``/joint_states``, the forward position controller's
commands) in a domain of their own, with this process listening to the status topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cyclonedds")

from mbpo_arm.agent.logger import read_metrics  # noqa: E402
from mbpo_arm.hardware.ros2 import messages as m  # noqa: E402
from mbpo_arm.hardware.ros2.transport import EVENTS, CycloneTransport  # noqa: E402
from tests.hardware.conftest import fast_limits  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STEPS = 300
TRAIN = ["task=reach", "agent=sac", "logger.wandb=disabled", "agent.sac.learning_starts=100",
         "agent.sac.batch_size=64", "agent.sac.hidden=[64,64]", "trainer.eval_episodes=1",
         f"trainer.total_steps={STEPS}", "trainer.eval_every=150",
         f"trainer.checkpoint_every={STEPS}", "trainer.log_every=100",
         "task.max_episode_steps=50", "shield.limits_file=so101"]


def domain_for_this_run() -> int:
    return 1 + (os.getpid() * 7 + 101) % 200


@pytest.mark.slow
def test_agent_trains_through_ros2_topics(tmp_path: Path) -> None:
    domain = domain_for_this_run()
    backend = [f"backend.domain_id={domain}", "runtime.control_hz=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stats_file = tmp_path / "driver.json"
    driver = subprocess.Popen([sys.executable, "-m", "mbpo_arm.sim.ros2_twin_driver", "--stats",
                               str(stats_file), *backend], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    statuses: list[dict[str, Any]] = []
    listener = CycloneTransport(domain)
    listener.subscribe("/mbpo_arm/status", m.String, EVENTS,
                       lambda s: statuses.append(json.loads(s.data)))
    run = tmp_path / "run"
    try:
        train = subprocess.Popen([sys.executable, "-m", "mbpo_arm.launch.cli", "train",
                                  "--backend", "ros2", *backend, *TRAIN, f"run_dir={run}",
                                  f"shield.limits_file={fast_limits(tmp_path)}"],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while train.poll() is None and time.monotonic() < deadline:
            listener.poll()
            time.sleep(0.05)
        if train.poll() is None:
            train.kill()
        out, err = train.communicate()
        assert train.returncode == 0, f"training failed:\n{err[-3000:]}"
        end = time.monotonic() + 2
        while time.monotonic() < end:  # the last status, sent as the node disconnects
            listener.poll()
            time.sleep(0.05)
    finally:
        listener.close()
        driver.send_signal(2)  # SIGINT: the driver writes its counts and exits
        driver.communicate(timeout=20)
    assert driver.returncode == 0
    driver_stats = json.loads(stats_file.read_text())

    # The agent trained: every transition collected, SAC updates ran, a checkpoint exists.
    events = read_metrics(run)
    assert max(e["env_steps"] for e in events) == STEPS
    assert any("critic_loss" in e for e in events), "SAC updates never ran"
    assert (run / "checkpoints" / "latest").exists()
    # Real traffic both ways: the node read joint states, the driver followed its commands.
    # (The training env's node reports the learner's figures; the eval env's node does not.)
    trained = [s for s in statuses if "updates" in s]
    assert trained, f"no status of the training node on /mbpo_arm/status ({len(statuses)} seen)"
    last = max(trained, key=lambda s: s["ticks"])
    assert last["transport"] == "cyclonedds"
    assert last["joint_states_received"] >= STEPS and last["joint_states_rejected"] == 0
    assert last["updates"] > 0 and last["achieved_utd"] > 0
    assert last["shield_ticks"] >= STEPS, "the commands did not go through the shield"
    # One command per step (and more per reset); keep-last-1 keeps only the newest of those
    # that land between two of the driver's ticks, so a loaded machine sees fewer taken.
    assert driver_stats["commands_received"] >= STEPS // 2
    assert driver_stats["commands_rejected"] == 0
