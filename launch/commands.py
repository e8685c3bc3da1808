"""``mbpo-arm train``, ``eval`` and ``calibrate``: each builds its parts with :mod:`.build` and
runs them."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch

from mbpo_arm.agent.checkpoint import (
    CheckpointError,
    DamagedCheckpoint,
    Diverged,
    latest_checkpoint,
    load_checkpoint,
    set_aside_damaged,
    step_of,
    verify_latest,
)
from mbpo_arm.agent.io import RunLock, RunLocked
from mbpo_arm.agent.logger import plot_learning_curve, read_metrics
from mbpo_arm.agent.run import evaluate_policy, restore, save_run
from mbpo_arm.agent.runtime.supervisor import STATS_FILE
from mbpo_arm.agent.train import train as train_loop
from mbpo_arm.configs.loader import SAVED_CONFIG, load_run_config, save_config
from mbpo_arm.configs.schema import ConfigError, RunConfig
from mbpo_arm.hardware.errors import RobotError
from mbpo_arm.hardware.serial_bus import BusError
from mbpo_arm.hardware.serial_robot import calibrate_arm
from mbpo_arm.launch.build import (
    attach_status,
    build_policy,
    build_run,
    checked,
    default_run_dir,
    finetune_config,
    start_up_errors,
    thread_policy,
)
from mbpo_arm.launch.ray_runtime import run_ray
from mbpo_arm.launch.runtime import LOG_FILE, run_async
from mbpo_arm.launch.video import CaptionedVideo, hold_episode_ends, write_gif


def train(overrides: list[str]) -> dict[str, Any]:
    """``mbpo-arm train``: build everything from the config and run the training loop. A
    first Ctrl-C (or SIGTERM) ends it after the current step with a checkpoint and the line
    to continue; a second Ctrl-C aborts at once. One process at a time writes a run
    directory (its ``run.lock``); a resume starts from a verified checkpoint."""
    rc, _ = load_run_config(overrides)
    rc = checked(rc)
    run_dir = Path(rc.run_dir or default_run_dir(rc))
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(run_dir).acquire()
    except RunLocked as err:
        raise ConfigError(str(err)) from None
    try:
        if rc.resume:
            check_resume(run_dir, rc.resume_options.fallback)
        return train_run(rc, run_dir)
    except Diverged as err:  # mid-run: the last good checkpoint stays
        last = latest_checkpoint(run_dir)
        where = (f"the last good checkpoint is {last} (mbpo-arm train resume={run_dir} "
                 "continues from it)" if last else "no checkpoint was saved")
        print(f"mbpo-arm: error: {err}; {where}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except CheckpointError as err:  # mid-run (a restarted learner's, a stray writer's)
        print(f"mbpo-arm: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        lock.release()


def check_resume(run_dir: Path, fallback: bool) -> None:
    """The newest checkpoint of a resumed run, verified: damaged, a one-line error naming
    the newest intact one; with ``resume.fallback=true``, the damaged ones set aside and the
    run goes on from the intact one, saying so."""
    try:
        verify_latest(run_dir)
    except DamagedCheckpoint as err:
        if err.intact is None:
            raise ConfigError(f"{err}: start a new run") from None
        if not fallback:
            raise ConfigError(f"{err}: `mbpo-arm train resume={run_dir} resume.fallback=true` "
                              "continues from it") from None
        moved = set_aside_damaged(err)
        print(f"resume: checkpoint {err.path.name} is damaged ({err.reason}); set aside as "
              f"{', '.join(p.name for p in moved) or 'nothing'}; continuing from "
              f"{err.intact.name}, the newest intact checkpoint", file=sys.stderr, flush=True)


def train_run(rc: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The run of :func:`train`, in its locked run directory."""
    if not rc.resume:
        save_config(rc, run_dir)
    rc = finetune_config(rc)
    threads, sync = thread_policy(rc), rc.runtime.mode == "sync"
    governor = threads.apply() if sync else None  # before any torch op
    if not sync:
        torch.set_num_threads(1)  # the actor acts on one thread; the learner applies `threads`
    print(f"run: {run_dir} ({rc.task.id}, agent {rc.agent.algo}, backend {rc.backend_name}, "
          f"{rc.runtime.mode}, {rc.trainer.total_steps} env steps, "
          f"{'' if sync else 'learner: '}{threads.describe(governor)})", flush=True)
    if not sync:
        return train_async(rc, run_dir)
    with start_up_errors():
        run = build_run(rc, run_dir)
    attach_status(run.env, lambda: (run.progress.counters.env_steps,
                                    run.progress.counters.updates),
                  rc.agent.sac.learning_starts)
    if rc.resume and not restore(run):
        print(f"resume: {run_dir} has no checkpoint yet; starting from step 0", file=sys.stderr)
    counters = run.progress.counters  # restore replaced them
    try:
        if rc.resume and finished(run_dir, counters.env_steps, rc.trainer.total_steps):
            return {}
        run.threads = governor
        with GracefulStop() as stop:
            try:
                final = train_loop(run, stop=lambda: stop.signum is not None)
            except RobotError as err:  # the bus or the driver failed mid-run: keep the data
                run.agent.replay.truncate_last()  # the episode was cut by the failure
                saved = save_run(run)
                raise RobotError(f"{err}; the {counters.env_steps} steps collected are in "
                                 f"{saved}; continue with: mbpo-arm train resume={run_dir}"
                                 ) from err
    finally:
        run.logger.close()
        run.env.close()
        if run.eval_env is not run.env:
            run.eval_env.close()
    curve = plot_learning_curve(run_dir)
    print(f"\nresults:    {run_dir / 'metrics.jsonl'}\ncurve:      {curve}\n"
          f"checkpoint: {latest_checkpoint(run_dir)}\nfinal eval: {json.dumps(final)}")
    if stop.signum is not None:
        stopped(run_dir, counters.env_steps, stop.signum)
    return final


def train_async(rc: RunConfig, run_dir: Path) -> dict[str, Any]:
    """``runtime=async``: the actor here, the learner in its own process; the summary as a
    short table (everything in ``runtime_stats.json``)."""
    ckpt = latest_checkpoint(run_dir)
    done = step_of(ckpt) if ckpt is not None else 0
    if rc.resume and finished(run_dir, done, rc.trainer.total_steps):
        return {}
    try:
        stats = run_ray(rc, run_dir) if rc.runtime.mode == "ray" else run_async(rc, run_dir)
    except RobotError as err:  # the bus or the driver failed mid-run: the log holds it all
        raise RobotError(f"{err}; every transition collected is in {run_dir / LOG_FILE}; "
                         f"continue with: mbpo-arm train resume={run_dir}") from err
    rows = [("transitions (log / actor / learner / checkpoint)",
             f"{stats['log_records']} / {stats['actor_steps']} / {stats['learner_steps']} / "
             f"{stats['checkpoint_steps']}"),
            ("SAC updates", stats["learner_updates"]),
            ("learner deaths / restarts", f"{stats['learner_deaths']} / "
                                          f"{stats['learner_restarts']}"),
            ("clean stop", stats["clean_stop"]),
            ("all figures", run_dir / STATS_FILE)]
    print("\n" + "\n".join(f"{name:<50} {value}" for name, value in rows))
    if stats.get("signal"):
        stopped(run_dir, stats["log_steps"], getattr(signal, stats["signal"]))
    return stats


def finished(run_dir: Path, steps: int, total: int) -> bool:
    """A resumed run that already reached ``trainer.total_steps`` (or its ``stop_at``): say
    so and how to go on, instead of printing its old results again."""
    if steps < total and not any("stopped_at_target" in e for e in read_metrics(run_dir)):
        return False
    print(f"{run_dir} is finished at step {steps} (trainer.total_steps={total}); to train on, "
          f"raise it: mbpo-arm train resume={run_dir} trainer.total_steps={max(2 * steps, 1)}")
    return True


def stopped(run_dir: Path, steps: int, signum: int) -> None:
    """The line that ends a run stopped by a signal; exits 128 + the signal (130: SIGINT)."""
    print(f"stopped at step {steps}; continue with: mbpo-arm train resume={run_dir}",
          flush=True)
    raise SystemExit(128 + signum)


class GracefulStop:
    """SIGINT and SIGTERM set ``signum`` (the loop finishes its step, checkpoints and
    stops); a second SIGINT aborts at once (``KeyboardInterrupt``). The handlers before are
    restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step (Ctrl-C again "
              "aborts at once)", file=sys.stderr, flush=True)


def evaluate(run_dir: Path, episodes: int, as_json: bool, video: Path | None,
             device: str) -> dict[str, Any]:
    """``mbpo-arm eval``: the deterministic policy of a run's last checkpoint; with ``video``,
    each frame captioned (episode, distance, success) and the file's path printed."""
    if episodes < 1:
        raise ConfigError(f"--episodes {episodes}: must be >= 1")
    if video is not None:
        video_format(video)
    if not (run_dir / SAVED_CONFIG).is_file():
        raise ConfigError(f"{run_dir}: no {SAVED_CONFIG} there; give a run directory made by "
                          "`mbpo-arm train`")
    rc, _ = load_run_config([f"resume={run_dir}", f"device={device}"])
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ConfigError(f"{run_dir} has no checkpoint; train first")
    with start_up_errors():
        env, sac = build_policy(rc, render=video is not None)
    with start_up_errors():  # a damaged checkpoint: one line naming the newest intact one
        state, _ = load_checkpoint(ckpt, buffer_names=(), map_location=sac.device)
    sac.load_state_dict(state["sac"])
    if video is not None:
        env = CaptionedVideo(env, episodes)
    result = evaluate_policy(sac, env, episodes, seed=123, render=video is not None)
    frames = result.pop("frames")
    if video is not None:
        fps = env.metadata.get("render_fps", 20)
        write_video(video, hold_episode_ends(frames, env.ends, fps), fps=fps)
        result["video"] = str(video)
    env.close()
    result["checkpoint"] = str(ckpt)
    print(json.dumps(result) if as_json else
          f"{episodes} episodes: mean return {result['mean_return']:.2f}, success rate "
          f"{result['success_rate']}")
    if video is not None and not as_json:
        print(f"video: {video}")
    return result


def video_format(path: Path) -> str:
    """``"gif"`` or ``"mp4"`` from ``path``'s suffix; ConfigError for another, or for an .mp4
    without imageio-ffmpeg, before any episode runs."""
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ConfigError(f"--video {path}: use a .gif or .mp4 file name")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (optional: mbpo-arm[video])
        except ImportError:
            raise ConfigError("--video .mp4 needs `pip install imageio-ffmpeg` (or mbpo-arm"
                              "[video]); a .gif needs nothing more") from None
    return suffix[1:]


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """``.gif`` through Pillow (always there; one palette that keeps the target's colour);
    ``.mp4`` needs ``pip install imageio-ffmpeg``. The folder is made if missing."""
    kind = video_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "mp4":
        iio.imwrite(path, np.stack(frames), fps=fps)
    else:
        write_gif(path, frames, fps)


def calibrate(overrides: list[str]) -> None:
    """``mbpo-arm calibrate``: walk a person through the calibration of a serial arm in the
    terminal and write ``backend.calibration`` (see :mod:`mbpo_arm.hardware.calibration`)."""
    rc, _ = load_run_config(["backend=serial", *overrides])
    try:
        calibrate_arm(rc.backend, sys.stdin, sys.stdout)
    except (BusError, RuntimeError) as err:
        raise ConfigError(str(err)) from None
