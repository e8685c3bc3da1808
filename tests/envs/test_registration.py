"""``ArmReach-v0`` from plain gymnasium in a fresh interpreter outside the repository (the
installed package, not the source folders), and a trained policy loaded into it from Python:
the docs' example, run as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mbpo_arm.agent.checkpoint import save_checkpoint
from mbpo_arm.agent.config import SACConfig
from mbpo_arm.agent.sac import SAC

EXAMPLE = """
import gymnasium as gym
import torch

from mbpo_arm.agent.checkpoint import latest_checkpoint, load_checkpoint
from mbpo_arm.agent.config import SACConfig
from mbpo_arm.agent.sac import SAC

env = gym.make("mbpo_arm.envs.reach:ArmReach-v0")
sac = SAC(env.observation_space.shape[0], env.action_space.shape[0], SACConfig(),
          device=torch.device("cpu"))
state, _ = load_checkpoint(latest_checkpoint({run!r}), buffer_names=())
sac.load_state_dict(state["sac"])
obs, _ = env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step(sac.act(obs, deterministic=True))
assert env.spec.id == "ArmReach-v0" and obs.shape == (19,)
print("ok", float(reward))
"""


@pytest.mark.slow
def test_the_env_and_a_saved_policy_from_python(tmp_path: Path) -> None:
    sac = SAC(19, 5, SACConfig(), generator=torch.Generator().manual_seed(0))
    save_checkpoint(tmp_path, 1, {"sac": sac.state_dict()}, {})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", EXAMPLE.format(run=str(tmp_path))], cwd="/",
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok")
