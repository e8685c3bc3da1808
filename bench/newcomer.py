"""The README's first command, ``make train``, as a newcomer runs it, on a quiet machine and
beside a CPU hog, for the current tree and a baseline commit (default ``bf5361e``: 30 000
steps on one torch thread), in the same command.

Each tree's own ``make train`` recipe is read from its Makefile (``--steps`` overrides its
``STEPS``) and run as ``mbpo-arm ...`` with the environment a newcomer has: no
``OMP_NUM_THREADS``. The hog is ``--hogs`` processes spinning on the CPU, like another job on
a shared machine. Conditions are interleaved (quiet current, quiet baseline, hog current, hog
baseline) for ``--runs`` rounds; the table gives the median wall time and the ratio of hog to
quiet per tree.

    .venv/bin/python bench/newcomer.py [--steps N] [--runs 3] [--baseline-runs N] [--hogs 1]
                                       [--current-only]

Prints a table; writes bench/results/newcomer[-<steps>][-current].json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from startup import git

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
HOG = "while True: pass"


@contextmanager
def hogs(n: int):
    """``n`` processes that spin on the CPU until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def newcomer_env(**extra: str) -> dict[str, str]:
    """A newcomer's shell: no thread settings, no path tricks."""
    drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "MUJOCO_GL": env.get("MUJOCO_GL", "egl"), **extra}


def make_train_args(makefile: str, steps: int | None) -> list[str]:
    """The ``mbpo-arm`` arguments of a Makefile's ``train`` recipe, ``$(STEPS)`` filled in
    (``steps``, else the Makefile's ``STEPS ?=`` default)."""
    default = re.search(r"^STEPS \?= *(\d+)", makefile, re.M)
    recipe = re.search(r"^train:.*\n\t(.*)$", makefile, re.M)
    if recipe is None or "mbpo-arm" not in recipe.group(1):
        raise SystemExit("no `train:` recipe running mbpo-arm in the Makefile")
    line = recipe.group(1).split("mbpo-arm", 1)[1]
    value = str(steps if steps is not None else (default.group(1) if default else 30_000))
    return line.replace("$(STEPS)", value).split()


def tree_of(commit: str, tmp: Path) -> tuple[Path, Path]:
    """A detached worktree of ``commit`` and a folder that imports it as ``mbpo_arm`` (the
    top-level folders linked as its subpackages, as the installed layout maps them)."""
    tree = tmp / f"baseline-{commit}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit],
                   check=True, capture_output=True)
    farm = tmp / "baseline-path" / "mbpo_arm"
    farm.mkdir(parents=True)
    for pkg in tree.iterdir():
        if (pkg / "__init__.py").exists():
            (farm / pkg.name).symlink_to(pkg)
    return tree, farm.parent


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="default: each Makefile's STEPS")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--baseline-runs", type=int, default=None,
                   help="rounds for the baseline (default: --runs; it takes ~20 min a round)")
    p.add_argument("--hogs", type=int, default=1)
    p.add_argument("--baseline", default="bf5361e")
    p.add_argument("--current-only", action="store_true",
                   help="time the current tree only (the baseline beside a hog takes long)")
    a = p.parse_args()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="mbpo-newcomer-") as scratch:
        tmp = Path(scratch)
        tree, farm = tree_of(a.baseline, tmp)
        mine = make_train_args((ROOT / "Makefile").read_text(), a.steps)
        theirs = make_train_args((tree / "Makefile").read_text(), a.steps)
        trees = {"current": ([str(Path(sys.executable).with_name("mbpo-arm")), *mine],
                             newcomer_env()),
                 f"baseline {a.baseline}": ([sys.executable, "-m", "mbpo_arm.launch.cli",
                                             *theirs], newcomer_env(PYTHONPATH=str(farm)))}
        for name, (cmd, _) in trees.items():
            print(f"{name}: mbpo-arm {' '.join(cmd[cmd.index('train'):])}", flush=True)
        if a.current_only:
            trees.pop(f"baseline {a.baseline}")
        try:
            for i in range(a.runs):
                for load in ("quiet", "hog"):
                    for name, (cmd, env) in trees.items():
                        if name != "current" and i >= (a.baseline_runs or a.runs):
                            continue
                        run_dir = tmp / f"{name.split()[0]}-{load}-{i}"
                        with hogs(a.hogs if load == "hog" else 0):
                            s = timed([*cmd, f"run_dir={run_dir}"], env, tmp)
                        times.setdefault(f"{name}, {load}", []).append(s)
                        print(f"  {name:<18} {load:<5} run {i}: {s:7.1f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"\n{'':<30} {'median s':>9} {'runs':>5}   (hogs={a.hogs})")
    for k, v in med.items():
        print(f"{k:<30} {v:9.1f} {len(times[k]):5d}")
    for name in trees:
        print(f"{name + ': hog / quiet':<30} {med[f'{name}, hog'] / med[f'{name}, quiet']:9.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = ("newcomer" + (f"-{a.steps}" if a.steps else "")
           + ("-current" if a.current_only else ""))
    (RESULTS / f"{out}.json").write_text(json.dumps(
        {"steps": a.steps, "commands": {k: v[0] for k, v in trees.items()},
         "runs": {k: len(v) for k, v in times.items()},
         "hogs": a.hogs, "cpus": os.cpu_count(),
         "baseline_commit": git("rev-parse", a.baseline),
         "current_commit": git("rev-parse", "HEAD"),
         "seconds": times, "median_s": med}, indent=1))
    plot(med, RESULTS / f"{out}.png", a)


def plot(med: dict[str, float], path: Path, a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(med)
    ax.barh(names, [med[n] for n in names], color=["C0" if "current" in n else "C7"
                                                   for n in names])
    ax.set_xlabel("wall time (s), median")
    ax.set_title(f"make train: quiet vs {a.hogs} CPU hog(s), medians")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
