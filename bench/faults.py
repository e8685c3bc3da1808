"""Random kills over one ``runtime=async`` run on the twin: is anything recorded ever lost?

    .venv/bin/python bench/faults.py [--kills 50] [--hz 50] [--seed 0]
        [--out bench/results/faults] [key=value ...]

Starts ``mbpo-arm train runtime=async`` (ArmReach-v0, SAC, small networks) and then, ``--kills``
times: waits until the run logs again (for half the kills also until the learner saves its
next checkpoint: a learner at work rather than one starting), then a random 0-5 s, and
SIGKILLs a random process -- the actor (the main process; its learner dies with it) or the
learner (the supervisor restarts it). After an actor kill the run is resumed (``resume=``).
At the end it stops with SIGTERM (final checkpoint) and compares the replay log, as written
and as read, with the final checkpoint's replay. Prints a table:

- transitions collected: the log's end (the actor's steps over all processes);
- transitions in the final checkpoint: its ``env_steps`` and its replay's rows;
- transitions lost: collected but absent from the final replay (goal 0; a SIGKILL can also
  lose the one record the actor had queued and not yet written, which never got a place in
  the log: the next process numbers its own transition in its place);
- episodes joined: a transition that ended no episode and whose successor starts elsewhere,
  in the final replay (goal 0), and the episodes the kills cut (marked ``truncated``);
- resumes and learner restarts that failed (goal 0).

Saves ``<out>.json`` (every kill: process, instant, log records and newest checkpoint then)
and ``<out>.png`` (log records and checkpoint step over time, the kills marked; per kill, the
transitions only the log held). The run and each process's stderr go to ``<out>-run/``
(ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_arm.agent.checkpoint import latest_checkpoint, step_of
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.agent.runtime.replay_log import HEADER, read_log, record_dtype

ROOT = Path(__file__).resolve().parents[1]
OBS, ACT = 19, 5  # ArmReach-v0
RECORD = record_dtype(OBS, ACT).itemsize
UP_TIMEOUT_S = 90.0  # a (resumed) run logs its first transition within this
MAX_WAIT_S = 5.0  # a kill comes a uniform 0 .. this many seconds after the run logs again
SETTLE_TIMEOUT_S = 30.0  # ... or after the next checkpoint: a learner at work (at most this)
ORPHAN_WAIT_S = 3.0  # a learner still running this long after its actor's kill is killed


class Run:
    """The run under test: its current main process, its directory, what it logged when."""

    def __init__(self, work: Path, overrides: list[str]) -> None:
        self.work, self.dir, self.overrides = work, work / "run", overrides
        self.proc: subprocess.Popen | None = None
        self._err: Any = None
        self.segments = 0
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, int, int]] = []  # (s, log records, checkpoint step)

    def start(self) -> None:
        """The first process, or a resume of the run."""
        args = (["runtime=async", *self.overrides, f"run_dir={self.dir}"] if not self.segments
                else [f"resume={self.dir}"])
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        self.segments += 1
        if self._err is not None:
            self._err.close()
        self._err = open(self.stderr_path(), "w")  # noqa: SIM115 - open while the process runs
        self.proc = subprocess.Popen([sys.executable, "-m", "mbpo_arm.launch.cli", "train", *args],
                                     cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self._err)

    def stderr_path(self) -> Path:
        return self.work / f"stderr{self.segments}.txt"

    def logged(self) -> int:
        path = self.dir / "replay.log"
        return max(path.stat().st_size - HEADER.size, 0) // RECORD if path.exists() else 0

    def checkpoint_step(self) -> int:
        """The newest checkpoint's step, read without touching the checkpoints (-1: none)."""
        latest = self.dir / "checkpoints" / "latest"
        try:
            return step_of(latest.read_text().strip())
        except (OSError, ValueError):
            return -1

    def sample(self) -> None:
        self.samples.append((time.monotonic() - self.t0, self.logged(), self.checkpoint_step()))

    def wait(self, seconds: float, until: Any = None) -> bool:
        """Sample for ``seconds`` or until ``until()``; ``False`` when the process ended."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sample()
            if self.proc.poll() is not None:
                return False
            if until is not None and until():
                return True
            time.sleep(0.1)
        return until is None

    def stderr_tail(self) -> str:
        return self.stderr_path().read_text()[-600:]


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def learner_pid(run: Run) -> int | None:
    try:
        return int((run.dir / "learner.pid").read_text())
    except (OSError, ValueError):
        return None


def kill_once(run: Run, target: str) -> dict[str, Any]:
    """SIGKILL ``target`` now; bring the run back (resume, or wait for the restart)."""
    event = {"target": target, "at_s": time.monotonic() - run.t0, "log_records": run.logged(),
             "checkpoint_step": run.checkpoint_step(), "recovered": False, "orphan": False}
    if target == "learner":
        pid = learner_pid(run)
        os.kill(pid, signal.SIGKILL)
        event["recovered"] = run.wait(60.0, lambda: learner_pid(run) != pid
                                      and run.logged() > event["log_records"])
    else:
        pid = learner_pid(run)
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait()
        deadline = time.monotonic() + ORPHAN_WAIT_S
        while pid is not None and alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid is not None and alive(pid):  # a learner that outlived its actor
            event["orphan"] = True
            os.kill(pid, signal.SIGKILL)
        event["records_after_kill"] = n = run.logged()
        last = read_log(run.dir / "replay.log", OBS, ACT, start=n - 1) if n else None
        event["mid_episode"] = bool(last is not None and len(last)
                                    and not (last.terminated[-1] or last.truncated[-1]))
        run.start()
        t = time.monotonic()
        event["recovered"] = run.wait(UP_TIMEOUT_S,
                                      lambda: run.logged() > event["records_after_kill"])
        event["resume_s"] = time.monotonic() - t
    if not event["recovered"]:
        event["error"] = run.stderr_tail()
    return event


def joined(data: dict[str, np.ndarray]) -> int:
    """Transitions that ended no episode although the next one starts elsewhere."""
    done = (np.asarray(data["terminated"]) > 0) | (np.asarray(data["truncated"]) > 0)
    return int((~done[:-1] & (data["next_obs"][:-1] != data["obs"][1:]).any(axis=1)).sum())


def account(run: Run) -> dict[str, Any]:
    """The log (on disk and as read) against the final checkpoint's replay."""
    log = read_log(run.dir / "replay.log", OBS, ACT)
    raw = np.frombuffer((run.dir / "replay.log").read_bytes()[HEADER.size:], record_dtype(OBS, ACT),
                        count=len(log))
    ckpt = latest_checkpoint(run.dir)
    import torch

    state = torch.load(ckpt / "state.pt", weights_only=False, map_location="cpu")
    replay = ReplayBuffer.load(ckpt / "replay.npz").all()
    collected = int(log.seq[-1]) + 1 if len(log) else 0
    same = len(log) == len(replay["obs"]) and all(
        np.array_equal(replay[k], np.asarray(getattr(log, k), np.float32))
        for k in ("obs", "action", "next_obs", "terminated", "truncated"))
    as_read = {"obs": log.obs, "next_obs": log.next_obs, "terminated": log.terminated,
               "truncated": log.truncated}
    return {"transitions_collected": collected, "log_records": len(log),
            "log_missing": log.missing.tolist(), "log_torn_bytes": log.torn_bytes,
            "checkpoint_env_steps": int(state["counters"]["env_steps"]),
            "checkpoint_replay": len(replay["obs"]),
            "transitions_lost": collected - len(replay["obs"]),
            "replay_equals_log": same,
            "episodes_joined_replay": joined(replay), "episodes_joined_log": joined(as_read),
            "episodes_cut": int((log.truncated & ~raw["truncated"].astype(bool)).sum())}


def table(summary: dict[str, Any], kills: list[dict[str, Any]]) -> str:
    by = {t: sum(k["target"] == t for k in kills) for t in ("actor", "learner")}
    failed = {t: sum(k["target"] == t and not k["recovered"] for k in kills)
              for t in ("actor", "learner")}
    rows = [("kills (actor / learner)", f"{by['actor']} / {by['learner']}"),
            ("transitions collected", summary["transitions_collected"]),
            ("transitions in the final checkpoint",
             f"{summary['checkpoint_env_steps']} (replay rows {summary['checkpoint_replay']})"),
            ("transitions lost", summary["transitions_lost"]),
            ("final replay = log as read (every field)", summary["replay_equals_log"]),
            ("episodes joined (replay / log as read)",
             f"{summary['episodes_joined_replay']} / {summary['episodes_joined_log']}"),
            ("episodes cut by kills (marked truncated)",
             f"{summary['episodes_cut']} (actor kills mid-episode: "
             f"{sum(k.get('mid_episode', False) for k in kills)})"),
            ("resumes that failed", failed["actor"]),
            ("learner restarts that failed", failed["learner"]),
            ("learners outliving their actor", sum(k["orphan"] for k in kills)),
            ("final stop", f"exit {summary['exit_code']}")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def plot(samples: list[tuple[float, int, int]], kills: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, logged, ckpt = (np.asarray(c) for c in zip(*samples, strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(t, logged, lw=1, label="log records")
    axes[0].plot(t, np.where(ckpt < 0, np.nan, ckpt), lw=1, label="newest checkpoint")
    for k in kills:
        axes[0].axvline(k["at_s"], lw=0.6, ls="--",
                        color="tab:red" if k["target"] == "actor" else "tab:blue")
    axes[0].set(xlabel="time (s); dashed: kills (red actor, blue learner)",
                ylabel="transitions")
    axes[0].legend(loc="upper left")
    only_log = [k["log_records"] - max(k["checkpoint_step"], 0) for k in kills]
    axes[1].bar(np.arange(1, len(kills) + 1), only_log,
                color=["tab:red" if k["target"] == "actor" else "tab:blue" for k in kills])
    axes[1].set(xlabel="kill", ylabel="transitions only in the log at the kill")
    fig.suptitle(f"{len(kills)} random kills of one runtime=async run on the twin")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/faults")
    parser.add_argument("overrides", nargs="*", help="more key=value overrides")
    args = parser.parse_args()
    work = args.out.with_name(args.out.name + "-run")
    if work.exists():
        raise SystemExit(f"{work} exists; remove it or pass another --out")
    work.mkdir(parents=True)
    rng = np.random.default_rng(args.seed)
    overrides = ["--backend", "mujoco", "task=reach", "agent=sac", "logger.wandb=disabled",
                 "logger.progress=false", "trainer.total_steps=100000000",
                 "agent.sac.learning_starts=100", "agent.sac.batch_size=32",
                 "agent.sac.hidden=[32,32]", "trainer.checkpoint_every=200",
                 f"runtime.control_hz={args.hz}", "runtime.restart_delay_s=0.5",
                 "runtime.checkpoint_every_s=2", "runtime.max_restarts=1000", *args.overrides]
    run = Run(work, overrides)
    run.start()
    kills: list[dict[str, Any]] = []
    for i in range(args.kills):
        before, saved = run.logged(), run.checkpoint_step()
        if not run.wait(UP_TIMEOUT_S, lambda b=before: run.logged() > b):
            raise SystemExit(f"the run ended before kill {i}: {run.stderr_tail()}")
        settled = bool(rng.random() < 0.5)  # half the kills hit a learner at work
        if settled:
            run.wait(SETTLE_TIMEOUT_S, lambda c=saved: run.checkpoint_step() > c)
        run.wait(float(rng.uniform(0.0, MAX_WAIT_S)))
        target = "learner" if rng.random() < 0.5 and learner_pid(run) is not None \
            and alive(learner_pid(run)) else "actor"
        kills.append({**kill_once(run, target), "after_a_checkpoint": settled})
        k = kills[-1]
        print(f"kill {i + 1}/{args.kills}: {target} at {k['log_records']} records "
              f"(checkpoint {k['checkpoint_step']}): "
              f"{'back' if k['recovered'] else 'NOT BACK: ' + k.get('error', '')}", flush=True)
        if not k["recovered"] and target == "actor":
            break
    run.wait(2.0)
    run.proc.send_signal(signal.SIGTERM)
    code = run.proc.wait(timeout=300)
    run.sample()
    summary = {**account(run), "exit_code": code}
    print(table(summary, kills))
    shown = {k: (str(v.relative_to(ROOT) if v.is_relative_to(ROOT) else v)
                 if isinstance(v, Path) else v) for k, v in vars(args).items()}
    json_path, png_path = Path(f"{args.out}.json"), Path(f"{args.out}.png")
    json_path.write_text(json.dumps({"args": shown, "summary": summary, "kills": kills,
                                     "samples": run.samples[::5]}, indent=1))
    plot(run.samples, kills, png_path)
    print(f"saved {json_path} and {png_path}")


if __name__ == "__main__":
    main()
