"""``mbpo-arm train``, ``eval`` and ``calibrate``: each builds its parts with :mod:`.build` and
runs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

from mbpo_arm.agent.checkpoint import latest_checkpoint, load_checkpoint
from mbpo_arm.agent.logger import plot_learning_curve
from mbpo_arm.agent.run import evaluate_policy, restore
from mbpo_arm.agent.train import train as train_loop
from mbpo_arm.configs.loader import load_run_config, save_config
from mbpo_arm.configs.schema import ConfigError
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
)
from mbpo_arm.launch.runtime import run_async


def train(overrides: list[str]) -> dict[str, Any]:
    """``mbpo-arm train``: build everything from the config and run the training loop."""
    rc, _ = load_run_config(overrides)
    rc = checked(rc)
    run_dir = Path(rc.run_dir or default_run_dir(rc))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not rc.resume:
        save_config(rc, run_dir)
    rc = finetune_config(rc)
    if rc.runtime.mode == "async":
        stats = run_async(rc, run_dir)
        print(json.dumps(stats))
        return stats
    with start_up_errors():
        run = build_run(rc, run_dir)
    attach_status(run.env, lambda: (run.progress.counters.env_steps, run.progress.counters.updates),
                  rc.agent.sac.learning_starts)
    if rc.resume and not restore(run):
        print(f"resume: {run_dir} has no checkpoint yet; starting from step 0", file=sys.stderr)
    try:
        final = train_loop(run)
    finally:
        run.logger.close()
        run.env.close()
        if run.eval_env is not run.env:
            run.eval_env.close()
    curve = plot_learning_curve(run_dir)
    print(f"\nresults:    {run_dir / 'metrics.jsonl'}\ncurve:      {curve}\n"
          f"checkpoint: {latest_checkpoint(run_dir)}\nfinal eval: {json.dumps(final)}")
    return final


def evaluate(run_dir: Path, episodes: int, as_json: bool, video: Path | None,
             device: str) -> dict[str, Any]:
    """``mbpo-arm eval``: the deterministic policy of a run's last checkpoint."""
    rc, _ = load_run_config([f"resume={run_dir}", f"device={device}"])
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ConfigError(f"{run_dir} has no checkpoint; train first")
    with start_up_errors():
        env, sac = build_policy(checked(rc), render=video is not None)
    state, _ = load_checkpoint(ckpt, buffer_names=(), map_location=sac.device)
    sac.load_state_dict(state["sac"])
    result = evaluate_policy(sac, env, episodes, seed=123, render=video is not None)
    frames = result.pop("frames")
    if video is not None:
        write_video(video, frames, fps=env.metadata.get("render_fps", 20))
        result["video"] = str(video)
    env.close()
    result["checkpoint"] = str(ckpt)
    print(json.dumps(result) if as_json else
          f"{episodes} episodes: mean return {result['mean_return']:.2f}, success rate "
          f"{result['success_rate']}")
    return result


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """``.gif`` through Pillow (always there); ``.mp4`` needs ``pip install imageio-ffmpeg``."""
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--video {path}: use a .gif or .mp4 file name")
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (optional: mbpo-arm[video])
        except ImportError:
            raise ConfigError("--video .mp4 needs `pip install imageio-ffmpeg` (or mbpo-arm"
                              "[video]); a .gif needs nothing more") from None
        iio.imwrite(path, np.stack(frames), fps=fps)
    else:
        iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)


def calibrate(overrides: list[str]) -> None:
    """``mbpo-arm calibrate``: walk a person through the calibration of a serial arm in the
    terminal and write ``backend.calibration`` (see :mod:`mbpo_arm.hardware.calibration`)."""
    rc, _ = load_run_config(["backend=serial", *overrides])
    try:
        calibrate_arm(rc.backend, sys.stdin, sys.stdout)
    except (BusError, RuntimeError) as err:
        raise ConfigError(str(err)) from None
