"""``runtime=ray`` under faults, with real Ray processes: a multi-node test cluster on this
machine (``ray.cluster_utils.Cluster``: a head node for the robot's process, a node for the
learner, a node for the twins), the robot a real ``mbpo-arm train runtime=ray`` process.

One run takes every fault in turn (starting a cluster costs more than a fault): a twin actor
killed (Ray replaces it; the new one continues its source's numbering), the learner's host
killed (Ray restarts it; it restores from its checkpoint and the robot re-sends what it
lacks), and a partition (the learner's node stopped with SIGSTOP for a few seconds, then
SIGCONT): the robot keeps acting, and is back within 2 s of the learner answering. A second
listed arm (``runtime.ray.robots``) feeds the same learner through it all and ends after the
first, which waits for it; an unlisted arm is refused in one line. After the run: every
transition of each arm reached the learner exactly once, with its source, and equals that
arm's log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mbpo_arm.agent.runtime.intake import Intake
from mbpo_arm.agent.runtime.replay_log import read_log
from tests.runtime.async_helpers import QUICK, ROOT

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

HZ, TOTAL, STOP_S = 50, 2500, 4.0
ARM2, ARM2_TOTAL = "arm2", 2800  # a second arm, listed; it ends after the first, which waits
NAME, NAMESPACE = "mbpo-learner-faults", "mbpo-arm-test"


def robot(run: Path, address: str, source: str = "robot", total: int = TOTAL,
          robots: str = f"[robot,{ARM2}]") -> subprocess.Popen:
    """An ``mbpo-arm train runtime=ray`` process: the first creates the learner (and its
    twin), the others join it as arms ``source``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    args = [*QUICK, "runtime=ray", f"runtime.ray.address={address}",
            f"runtime.ray.source={source}", f"runtime.ray.robots={robots}",
            f"runtime.ray.learner_name={NAME}", f"runtime.ray.namespace={NAMESPACE}",
            "runtime.ray.learner_resources={learner_node: 1}", "runtime.ray.twins=1",
            "runtime.ray.twin_resources={twin_node: 1}", "runtime.ray.twin_num_cpus=0",
            "runtime.ray.learner_num_cpus=0", "runtime.ray.learner_num_gpus=1",
            "trainer.checkpoint_every=100000",
            "trainer.eval_every=100000", f"trainer.total_steps={total}", f"run_dir={run}"]
    return subprocess.Popen([sys.executable, "-m", "mbpo_arm.launch.cli", "train", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def poll(host, timeout: float = 5.0) -> dict | None:
    try:
        return ray.get(host.poll.remote(), timeout=timeout)
    except (ray.exceptions.RayError, TimeoutError):
        return None


def answer(host, timeout: float = 60.0) -> dict:
    """The host's status, asked again until it answers (a loaded machine can be slow)."""
    end = time.monotonic() + timeout
    while (status := poll(host)) is None:
        assert time.monotonic() < end, "the learner host did not answer"
    return status


def until(what: str, predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the robot's process ended waiting for {what}: "
                                 f"{proc.stderr.read()[-3000:]}")
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_twin_a_killed_learner_and_a_partition_lose_nothing(tmp_path: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "include_dashboard": False})
    # "a GPU": Ray places by the count a node declares (the learner runs on cpu here)
    learner_node = cluster.add_node(num_cpus=1, num_gpus=1, resources={"learner_node": 1})
    cluster.add_node(num_cpus=1, resources={"twin_node": 1})
    run = tmp_path / "run"
    proc = robot(run, cluster.address)
    arm2 = stray = None
    try:
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        until("the learner host", lambda: NAME in [a["name"] for a in
                                                   ray.util.list_named_actors(True)], proc)
        host = ray.get_actor(NAME, namespace=NAMESPACE)
        arm2 = robot(tmp_path / ARM2, cluster.address, ARM2, ARM2_TOTAL)
        stray = robot(tmp_path / "arm3", cluster.address, "arm3", robots="[]")  # unlisted
        until("the first SAC update", lambda: (poll(host) or {}).get("updates", 0) > 0, proc, 90)

        # 1. a twin dies: Ray replaces it, and it goes on after its acknowledged seq
        status = answer(host)
        os.kill(status["source_pids"]["twin0"], signal.SIGKILL)
        until("the twin's replacement", lambda: (poll(host) or {}).get("starts", {})
              .get("twin0", 0) >= 2, proc)
        twin_acked = answer(host)["sources"]["twin0"]
        until("the new twin's data", lambda: answer(host)["sources"]["twin0"] > twin_acked, proc)

        # 2. the learner's host dies: Ray restarts it from its checkpoint
        first = answer(host)["instance"]
        blocks = [(run / "intake" / "weights_block").read_text()]
        pids = ray.get(host.pids.remote())
        os.kill(pids["host"], signal.SIGKILL)
        until("the restarted learner", lambda: (s := poll(host)) is not None
              and s["instance"] != first and s["ready"] == 1, proc, 90)

        # 3. a partition: the learner's node stops answering for STOP_S, then comes back
        pids = ray.get(host.pids.remote())
        blocks.append((run / "intake" / "weights_block").read_text())
        frozen = [pids["host"], pids["learner"],
                  *(p.process.pid for p in learner_node.all_processes["raylet"])]
        before = len(read_log(run / "replay.log", 19, 5))
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(STOP_S)
        during = len(read_log(run / "replay.log", 19, 5)) - before
        resumed = time.time()
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        assert f"waiting for {ARM2} to finish" in out, out[-2000:]
        _, err2 = arm2.communicate(timeout=60)
        assert arm2.returncode == 0, err2[-3000:]
        _, refused = stray.communicate(timeout=60)
        assert stray.returncode != 0 and "runtime.ray.robots=['robot', 'arm2']" in refused \
            and "not runtime.ray.source=arm3" in refused, refused[-2000:]
    finally:
        for p in (proc, arm2, stray):
            if p is not None and p.poll() is None:
                p.kill()
        ray.shutdown()
        cluster.shutdown()

    stats = json.loads((run / "runtime_stats.json").read_text())
    link = stats["ray"]
    # the robot kept acting while the learner was stopped: the tick never waits on Ray
    assert during >= 0.5 * STOP_S * HZ, f"{during} transitions in {STOP_S} s of partition"
    backs = [back - resumed for _, back in link["outages"] if back >= resumed - 0.5]
    assert backs and backs[0] <= 2.0, link["outages"]
    assert link["learner_instances"] >= 2 and stats["learner_deaths"] >= 1
    assert link["learner_placed"]["gpus"] == ["0"], link["learner_placed"]  # on the GPU node
    # the killed host's weights block was removed by its successor, the last one at the end
    assert blocks[0] != blocks[1] and not any(Path("/dev/shm", b).exists() for b in blocks)
    assert stats["clean_stop"] and stats["log_records"] == TOTAL

    # nothing lost or duplicated: each arm's transitions are in the merged log once each,
    # with their source
    intake = Intake.open(run / "intake", 19, 5)
    try:
        merged = read_log(intake.path, 19, 5)
        for source, total, log in (("robot", TOTAL, run), (ARM2, ARM2_TOTAL, tmp_path / ARM2)):
            assert intake.sources()[source] == total
            rows = [(s, n, src, s0) for s, n, src, s0 in intake.spans() if src == source]
            seqs = np.concatenate([np.arange(s0, s0 + n) for _, n, _, s0 in rows])
            assert seqs.tolist() == list(range(total)), source
            at = np.concatenate([np.arange(s, s + n) for s, n, _, _ in rows])
            np.testing.assert_array_equal(merged.obs[at],
                                          read_log(log / "replay.log", 19, 5).obs)
        twin = [(s0, n) for _, n, src, s0 in intake.spans() if src == "twin0"]
        twin_seqs = np.concatenate([np.arange(s0, s0 + n) for s0, n in twin])
        assert len(np.unique(twin_seqs)) == len(twin_seqs), "a twin record twice"
        assert stats["checkpoint_steps"] == intake.next_seq
    finally:
        intake.close()
