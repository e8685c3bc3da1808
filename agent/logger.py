"""Run logging: ``metrics.jsonl`` always, wandb (offline by default), progress lines, a plot.

Every log event is one JSON object per line in ``<run_dir>/metrics.jsonl`` with at least
``env_steps``; evaluations add ``eval_return`` and ``eval_success_rate``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from mbpo_arm.agent.config import LoggerConfig


class RunLogger:
    """Appends events to ``metrics.jsonl`` (so a resumed run continues the same file), mirrors
    them to wandb, and prints progress (steps/s, episode return, success rate, ETA)."""

    def __init__(self, run_dir: Path, config: LoggerConfig, run_config: dict[str, Any],
                 total_steps: int, start_step: int = 0) -> None:
        self.run_dir, self.config, self.total_steps = Path(run_dir), config, total_steps
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._t0, self._step0 = time.monotonic(), start_step
        self._wandb = None
        if config.wandb != "disabled":
            self._wandb = _start_wandb(self.run_dir, config, run_config)

    def log(self, event: dict[str, Any]) -> None:
        """Append one event (must hold ``env_steps``); flushed at once so a kill loses none."""
        if "env_steps" not in event:
            raise ValueError("a log event needs 'env_steps'")
        event = {k: _jsonable(v) for k, v in event.items()}
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in event.items() if v is not None},
                            step=int(event["env_steps"]))

    def progress(self, env_steps: int, stats: dict[str, Any]) -> None:
        """Print one progress line: rate, recent return and success, time left."""
        if not self.config.progress:
            return
        now = time.monotonic()
        rate = (env_steps - self._step0) / max(now - self._t0, 1e-9)
        self._t0, self._step0 = now, env_steps  # the rate over the last interval
        left = (self.total_steps - env_steps) / rate if rate > 0 else float("inf")
        parts = [f"step {env_steps:>7d}/{self.total_steps}", f"{rate:6.1f} steps/s"]
        for key, fmt in (("episode_return", "return {:8.2f}"),
                         ("success_rate", "success {:4.0%}"), ("eval_return", "eval {:8.2f}"),
                         ("eval_success_rate", "eval succ {:4.0%}")):
            if stats.get(key) is not None:
                parts.append(fmt.format(stats[key]))
        if stats.get("shield"):
            parts.append(shield_line(stats["shield"]))
        parts.append(f"ETA {_clock(left)}")
        print(" | ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def shield_line(counts: dict[str, int]) -> str:
    """``"shield velocity 12 collision 3"``: the safety shield's interventions per rule."""
    return "shield " + " ".join(f"{rule} {n}" for rule, n in counts.items() if n)


def _start_wandb(run_dir: Path, config: LoggerConfig, run_config: dict[str, Any]) -> Any:
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb  # imported lazily: it is slow to import and optional at run time

    return wandb.init(project=config.project, mode=config.wandb, dir=str(run_dir),
                      config=run_config, name=run_dir.name, id=_wandb_id(run_dir),
                      resume="allow")


def _wandb_id(run_dir: Path) -> str:
    """One wandb id per run directory, so a resumed run continues the same wandb run."""
    path = run_dir / "wandb_id.txt"
    if path.exists():
        return path.read_text().strip()
    import secrets

    run_id = secrets.token_hex(4)
    path.write_text(run_id)
    return run_id


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All events of ``<run_dir>/metrics.jsonl``; a torn last line (a kill mid-write) is
    skipped."""
    events = []
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def plot_learning_curve(run_dir: Path, out: Path | None = None) -> Path:
    """Plot evaluation return (and success rate, where the task has one) against env steps
    into ``<run_dir>/learning_curve.png``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [e for e in read_metrics(run_dir) if e.get("eval_return") is not None]
    out = Path(out or Path(run_dir) / "learning_curve.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [e["env_steps"] for e in evals]
    ax.plot(steps, [e["eval_return"] for e in evals], "o-", color="tab:blue")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return", color="tab:blue")
    succ = [e.get("eval_success_rate") for e in evals]
    if evals and all(s is not None for s in succ):
        ax2 = ax.twinx()
        ax2.plot(steps, succ, "s--", color="tab:green")
        ax2.set_ylabel("eval success rate", color="tab:green")
        ax2.set_ylim(-0.05, 1.05)
    ax.set_title(Path(run_dir).name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
