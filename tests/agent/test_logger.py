"""The run logger: progress lines whose ETA is steady and says when it is unknown (the warm-up
apart from learning), and a learning curve drawn at each evaluation. Real files, real
matplotlib; the only stand-in is a clock the test moves."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from mbpo_arm.agent.config import LoggerConfig
from mbpo_arm.agent.logger import (
    CURVE,
    Pace,
    RunLogger,
    eval_events,
    plot_learning_curve,
    plot_title,
    read_metrics,
    wilson_interval,
)

PNG = b"\x89PNG\r\n\x1a\n"


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def config(learning_starts: int = 2000, **top: object) -> dict:
    return {"task": {"id": "ArmReach-v0"}, "agent": {"algo": "mbpo",
            "sac": {"learning_starts": learning_starts}}, "seed": 3,
            "trainer": {"eval_episodes": 10}, "resume": None, **top}


def logger(tmp_path: Path, clock: Clock, total: int = 20_000, **cfg: object) -> RunLogger:
    return RunLogger(tmp_path, LoggerConfig(wandb="disabled"), config(**cfg), total, clock=clock)


def eta_seconds(line: str) -> int:
    h, m, s = re.search(r"ETA (\d+):(\d\d):(\d\d)", line).groups()
    return int(h) * 3600 + int(m) * 60 + int(s)


# --------------------------------------------------------------------------------- progress
def test_the_warm_up_is_reported_apart_and_its_eta_is_unknown(tmp_path: Path, capsys) -> None:
    clock = Clock()
    log = logger(tmp_path, clock)
    clock.t += 1.0  # random actions: 1000 steps/s
    line = log.progress(1000, {"episode_return": -3.0})
    assert "warm-up 1000/2000 at 1000.0 steps/s" in line
    assert "ETA unknown until learning starts, warm-up ends in 0:00:01" in line
    assert not re.search(r"ETA \d", line)  # no number from the warm-up's speed
    assert line in capsys.readouterr().err
    clock.t += 1.0
    line = log.progress(2000, {})  # the last warm-up step: learning is not measured yet
    assert "learning rate measuring (warm-up ran at 1000.0 steps/s)" in line
    assert "ETA unknown yet" in line


def test_the_eta_is_the_average_since_learning_started_and_stays_steady(tmp_path: Path) -> None:
    clock, total = Clock(), 20_000
    log = logger(tmp_path, clock, total)
    for step in (1000, 2000):  # warm-up at 1000 steps/s
        clock.t += 1.0
        log.progress(step, {})
    start, finishes, windowed = clock.t, [], []
    for i, step in enumerate(range(3000, total, 1000)):
        took = 50.0 if i % 2 == 0 else 200.0  # the load changes: 20 then 5 steps/s
        clock.t += took
        line = log.progress(step, {})
        assert log.pace.rate == pytest.approx((step - 2000) / (clock.t - start))
        assert "avg since step 2000" in line
        finishes.append(clock.t + eta_seconds(line))
        windowed.append(clock.t + (total - step) / (1000 / took))  # today's last-window ETA
    assert max(finishes[2:]) / min(finishes[2:]) < 1.3
    assert max(windowed) / min(windowed) > 2  # what it replaces swings


def test_learning_starting_inside_an_interval_is_not_counted_at_warm_up_speed() -> None:
    pace = Pace(total=10_000, learning_starts=2500, start=(0.0, 0))
    pace.update(2.0, 2000)  # 1000 steps/s of warm-up
    pace.update(52.5, 3000)  # 0.5 s of warm-up to step 2500, then 500 steps in 50 s
    assert pace.warmup_rate == pytest.approx(1000.0)
    assert pace.rate == pytest.approx(10.0)
    assert pace.eta() == pytest.approx(700.0)


def test_a_resumed_run_measures_from_its_first_line(tmp_path: Path) -> None:
    clock = Clock()
    log = logger(tmp_path, clock, resume=str(tmp_path))  # restored at a step not known yet
    clock.t += 30.0  # start-up and restoring the checkpoint: not steps
    first = log.progress(16_000, {})
    assert "learning rate measuring" in first and "ETA unknown yet" in first
    clock.t += 100.0
    line = log.progress(17_000, {})
    assert "10.0 steps/s (avg since step 16000)" in line
    assert "ETA 0:05:00" in line


def test_progress_off_prints_nothing(tmp_path: Path, capsys) -> None:
    log = RunLogger(tmp_path, LoggerConfig(wandb="disabled", progress=False), config(), 100)
    assert log.progress(10, {}) is None
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------ plot
def test_wilson_interval_on_known_values() -> None:
    assert wilson_interval(9, 10) == pytest.approx((0.5958, 0.9821), abs=1e-3)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-3)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-3)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    lo_n, hi_n = wilson_interval(500, 1000)
    assert hi - lo > 0.5 and hi_n - lo_n < 0.07  # more episodes, a narrower interval
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_the_title_names_task_agent_and_seed() -> None:
    assert plot_title(config()) == "ArmReach-v0 · mbpo · seed 3"
    assert plot_title({"seed": 0, "agent": {"algo": "sac"}}) == "? · sac · seed 0"
    assert plot_title({}, "runs/x") == "runs/x"


def evaluation(step: int, ret: float, succ: float | None) -> dict:
    return {"env_steps": step, "eval_return": ret, "eval_success_rate": succ}


def test_the_curve_is_written_at_the_first_evaluation_and_redrawn_at_the_next(
        tmp_path: Path) -> None:
    log = logger(tmp_path, Clock())
    curve = tmp_path / CURVE
    log.log({"env_steps": 100, "episode_return": -5.0})
    assert not curve.exists()  # not an evaluation
    log.log(evaluation(150, -20.0, 0.9))
    first = curve.read_bytes()
    assert first.startswith(PNG) and len(first) > 5000
    t0 = time.perf_counter()
    log.log(evaluation(300, -10.0, 0.5))
    redraw_s = time.perf_counter() - t0
    second = curve.read_bytes()
    assert second.startswith(PNG) and second != first
    assert redraw_s < 1.0, f"a redraw took {redraw_s:.2f} s"
    assert sorted(p.name for p in tmp_path.iterdir()) == [CURVE, "metrics.jsonl"]  # no temps
    log.close()


def test_a_failing_plot_warns_once_and_logging_goes_on(tmp_path: Path, capsys) -> None:
    (tmp_path / CURVE).mkdir()  # a directory where the png goes: every write fails
    log = logger(tmp_path, Clock())
    log.log(evaluation(150, -20.0, 0.9))
    log.log(evaluation(300, -10.0, 0.5))
    log.close()
    assert capsys.readouterr().err.count("warning: could not draw") == 1
    assert [e["env_steps"] for e in read_metrics(tmp_path)] == [150, 300]


def test_a_resumed_run_keeps_one_point_per_step(tmp_path: Path) -> None:
    # killed after the evaluation at 300, resumed from the checkpoint at 150: 300 comes again
    events = [evaluation(150, -20.0, 0.9), evaluation(300, -10.0, 0.5),
              {"env_steps": 200}, evaluation(300, -8.0, 0.6)]
    assert [(e["env_steps"], e["eval_return"]) for e in eval_events(events)] == \
        [(150, -20.0), (300, -8.0)]


def test_the_end_of_run_plot_reads_the_run_dir(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(json.dumps(config()))  # JSON is YAML
    lines = [evaluation(150, -20.0, None), evaluation(300, -10.0, None)]  # no success metric
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    out = plot_learning_curve(tmp_path)
    assert out == tmp_path / CURVE and out.read_bytes().startswith(PNG)
    # an empty run (stopped before its first evaluation) still gets a figure
    empty = tmp_path / "empty"
    empty.mkdir()
    assert plot_learning_curve(empty).read_bytes().startswith(PNG)
