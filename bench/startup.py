"""Start-up time of the command line: ``mbpo-arm --help``, ``mbpo-arm dataset info FILE`` and
``import <configs>.schema``, for the current tree and for a baseline commit (default
``bbd7ab6``, the layout before the ``mbpo_arm`` namespace: top-level packages ``agent``,
``envs``, ... and the CLI ``mbpo_launch.cli`` in the folder ``launch/``).

Each command is a fresh interpreter (this venv's), run from a scratch directory so that the
repository is not on ``sys.path``; one untimed warm-up run (byte-compiles, warms the page
cache), then ``--repeats`` rounds in which every command runs once, in turn; the table gives
the median and the fastest wall time.
The current tree runs as a user runs it (the ``mbpo-arm`` script of this venv) and as
``python -m mbpo_arm.launch.cli``. The baseline is checked out into a temporary git worktree
and run from a folder of symlinks to its packages (``mbpo_launch -> launch``) on
``PYTHONPATH``, as ``python -m mbpo_launch.cli``. All read the same dataset, made once by
``collect task=reach policy=random episodes=2`` (with the current tree; with the baseline if the
current tree cannot collect, as the JSON records). Target (issue 14): under 0.5 s for
``--help`` and ``dataset info`` on the current tree.

    .venv/bin/python bench/startup.py --repeats 7 [--baseline bbd7ab6]

Prints a table; writes bench/results/startup.json and startup.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET_S = {"--help": 0.5, "dataset info": 0.5}
BASELINE_PACKAGES = ("agent", "envs", "hardware", "sim", "configs")
COLLECT = ["collect", "task=reach", "policy=random", "episodes=2"]
ROWS = ("--help", "dataset info", "import schema")


@dataclass
class Variant:
    """One way of starting the CLI: ``cli`` is the argv that stands for ``mbpo-arm``,
    ``schema_module`` the tree's config schema, ``env`` what it adds to the environment."""

    name: str
    cli: list[str]
    schema_module: str
    env: dict[str, str] = field(default_factory=dict)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    return {**env, "OMP_NUM_THREADS": "1", "MUJOCO_GL": env.get("MUJOCO_GL", "egl"), **extra}


def run_once(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, exit status and the tail of stderr of one run."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t0, proc.returncode, proc.stderr[-1500:]


def measure(cmds: dict[tuple[str, str], tuple[list[str], dict[str, str]]], cwd: Path,
            repeats: int) -> dict[tuple[str, str], dict]:
    """Each command once untimed (a failing one is reported and dropped), then ``repeats``
    rounds that run every command once, in turn, so a passing load spike on the shared machine
    hits all of them alike rather than one."""
    out, live = {}, {}
    for key, (cmd, env) in cmds.items():
        _, code, err = run_once(cmd, env, cwd)
        if code == 0:
            live[key] = []
        else:
            print(f"  FAILED ({code}): {' '.join(cmd)}\n    {err.strip().splitlines()[-1:]}")
            out[key] = {"cmd": cmd, "rc": code, "error": err, "median_s": None, "min_s": None,
                        "runs_s": []}
    for _ in range(repeats):
        for key, runs in live.items():
            runs.append(run_once(*cmds[key], cwd)[0])
    for key, runs in live.items():
        out[key] = {"cmd": cmds[key][0], "rc": 0, "median_s": float(np.median(runs)),
                    "min_s": float(min(runs)), "runs_s": runs}
    return out


def baseline_tree(commit: str, tmp: Path) -> tuple[Path, Path]:
    """A detached worktree of ``commit`` and a folder of symlinks that imports it as installed."""
    tree = tmp / f"baseline-{commit}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit],
                   check=True, capture_output=True)
    farm = tmp / "baseline-path"
    farm.mkdir()
    for name in BASELINE_PACKAGES:
        (farm / name).symlink_to(tree / name)
    (farm / "mbpo_launch").symlink_to(tree / "launch")
    return tree, farm


def collect(variant: Variant, out: Path, cwd: Path) -> Path | None:
    proc = subprocess.run([*variant.cli, *COLLECT, f"out={out}"], cwd=cwd,
                          env=base_env(**variant.env), capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0 or not out.exists():
        print(f"  collect failed for {variant.name} ({proc.returncode}): "
              f"{proc.stderr.strip().splitlines()[-1:]}")
        return None
    return out


def commands(variant: Variant, dataset: Path | None) -> dict[str, list[str]]:
    out = {"--help": [*variant.cli, "--help"],
           "import schema": [sys.executable, "-c", f"import {variant.schema_module}"]}
    if dataset is not None:
        out["dataset info"] = [*variant.cli, "dataset", "info", str(dataset)]
    return out


def bench(variants: list[Variant], dataset: Path | None, cwd: Path,
          repeats: int) -> dict[str, dict]:
    cmds = {}
    for v in variants:
        print(f"{v.name}: {' '.join(v.cli)}")
        env = base_env(**v.env)
        cmds.update({(v.name, row): (cmd, env) for row, cmd in commands(v, dataset).items()})
    cmds[("python", "floor")] = ([sys.executable, "-c", "pass"], base_env())
    timed = measure(cmds, cwd, repeats)
    missing = {"rc": None, "error": "no dataset (collect failed)", "median_s": None,
               "min_s": None, "runs_s": []}
    results = {v.name: {row: timed.get((v.name, row), missing) for row in ROWS}
               for v in variants}
    results["python -c pass"] = timed[("python", "floor")]
    return results


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def table(results: dict[str, dict], floor: dict) -> str:
    names = list(results)
    head = f"{'seconds (median / min)':<24}" + "".join(f"{n:>28}" for n in names)
    lines = [head + f"{'target':>8}"]
    for row in ROWS:
        cells = []
        for n in names:
            r = results[n][row]
            cells.append(f"{r['median_s']:.3f} / {r['min_s']:.3f}" if r["median_s"] is not None
                         else "failed")
        target = TARGET_S.get(row)
        lines.append(f"{row:<24}" + "".join(f"{c:>28}" for c in cells)
                     + f"{(f'{target:.1f}' if target else '-'):>8}")
    lines.append(f"{'python -c pass':<24}{floor['median_s']:>28.3f}  (interpreter floor)")
    return "\n".join(lines)


def plot(results: dict[str, dict], floor: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    height = 0.8 / len(names)
    for i, n in enumerate(names):
        y = np.arange(len(ROWS)) + i * height
        ax.barh(y, [results[n][r]["median_s"] or 0.0 for r in ROWS], height, label=n)
    ax.set_yticks(np.arange(len(ROWS)) + 0.4 - height / 2, ROWS)
    ax.invert_yaxis()
    ax.axvline(0.5, color="k", ls="--", lw=1, label="target 0.5 s")
    ax.axvline(floor["median_s"], color="grey", ls=":", lw=1, label="python -c pass")
    ax.set_xlabel("wall seconds, median of fresh interpreters (OMP_NUM_THREADS=1)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", default="bbd7ab6", help="commit of the old layout")
    args = parser.parse_args()
    script = Path(sys.executable).with_name("mbpo-arm")
    with tempfile.TemporaryDirectory(prefix="mbpo-startup-") as scratch:
        tmp = Path(scratch)
        work = tmp / "cwd"
        work.mkdir()
        tree, farm = baseline_tree(args.baseline, tmp)
        try:
            variants = [
                Variant(f"baseline {args.baseline} (-m)", [sys.executable, "-m",
                        "mbpo_launch.cli"], "configs.schema", {"PYTHONPATH": str(farm)}),
                Variant("current (mbpo-arm script)", [str(script)], "mbpo_arm.configs.schema"),
                Variant("current (-m)", [sys.executable, "-m", "mbpo_arm.launch.cli"],
                        "mbpo_arm.configs.schema"),
            ]
            maker = variants[1]
            data = collect(maker, tmp / "reach.npz", work)
            if data is None:
                maker = variants[0]
                data = collect(maker, tmp / "reach.npz", work)
            results = bench(variants, data, work, args.repeats)
            floor = results.pop("python -c pass")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    print(table(results, floor))
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0], "repeats": args.repeats,
            "baseline_commit": git("rev-parse", args.baseline), "current_commit":
            git("rev-parse", "HEAD"), "current_tree_dirty": bool(git("status", "--porcelain")),
            "target_s": TARGET_S, "dataset": {"made_by": maker.name if data else None,
                                              "command": COLLECT}}
    (RESULTS / "startup.json").write_text(json.dumps(
        {**meta, "python_floor": floor, "results": results}, indent=1))
    plot(results, floor, RESULTS / "startup.png")


if __name__ == "__main__":
    main()
