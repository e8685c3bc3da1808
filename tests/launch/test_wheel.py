"""The project as a user installs it: a wheel built from the sources, installed non-editable in a
fresh venv, and a 300-step training run by its ``mbpo-arm`` script from another directory.

The fresh venv borrows the dev venv's dependencies (torch, mujoco, ...) through a ``.pth`` line
naming the dev site-packages: a path line is appended to ``sys.path``, but the ``.pth`` files
inside that directory are not processed (``site.addpackage`` does not recurse), so the editable
finder of the dev install never activates and every ``mbpo_arm`` module comes from the wheel.
No network: the wheel is built with ``--no-build-isolation`` (the dev venv's setuptools).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("agent", "envs", "hardware", "sim", "configs", "launch")
DATA_FILES = ("mbpo_arm/configs/train.yaml", "mbpo_arm/configs/limits/so101.yaml",
              "mbpo_arm/sim/assets/so101_arm.xml")
TRAIN = ["train", "--backend", "mujoco", "trainer.total_steps=300", "trainer.eval_every=300",
         "trainer.eval_episodes=1", "agent.sac.learning_starts=100", "agent.sac.batch_size=64",
         "agent.sac.hidden=[32,32]", "logger.wandb=disabled"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def source_copy(dest: Path) -> Path:
    """The files a fresh clone would have (tracked plus new, not ignored), so the build neither
    sees local build outputs nor leaves ``build/`` and ``*.egg-info`` in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would put the repository on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1", "MUJOCO_GL": env.get("MUJOCO_GL", "egl"), **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to list the sources")
    tmp = tmp_path_factory.mktemp("wheel")
    src = source_copy(tmp / "src")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(src)], cwd=tmp, env=clean_env())
    (built,) = (tmp / "dist").glob("mbpo_arm-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed and the dev venv's site-packages on its path."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(root / "env")], cwd=root)
    python = root / "env" / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=root, env=clean_env())
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=root, env=clean_env()).stdout.strip()
    dev = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "dev_site_packages.pth").write_text("".join(f"{p}\n" for p in dev))
    return root / "env"


def test_wheel_holds_one_package_and_its_data_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/RECORD")).rsplit("/", 1)[0]
        top_level = f"{info}/top_level.txt"
        if top_level in names:
            assert zf.read(top_level).decode().split() == ["mbpo_arm"]
    assert {n.split("/", 1)[0] for n in names} == {"mbpo_arm", info}
    for name in DATA_FILES:
        assert name in names, f"{name} is not in the wheel"
    yamls = {f"mbpo_arm/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
             for p in (ROOT / "configs").rglob("*.yaml")}
    assert yamls <= set(names), f"YAML files missing from the wheel: {sorted(yamls - set(names))}"
    for sub in SUBPACKAGES:
        assert f"mbpo_arm/{sub}/__init__.py" in names


def test_installed_package_is_the_wheel_not_the_repository(venv: Path, tmp_path: Path) -> None:
    probe = ("import importlib, importlib.util, json, sys\n"
             f"mods = [importlib.import_module('mbpo_arm.' + s) for s in {SUBPACKAGES!r}]\n"
             "print(json.dumps({'files': [m.__file__ for m in mods], 'path': sys.path,\n"
             "  'finder': importlib.util.find_spec('agent') is not None\n"
             "            or any('editable' in k for k in sys.modules)}))\n")
    out = json.loads(run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path,
                         env=clean_env()).stdout)
    site = venv.resolve()
    for file in out["files"]:
        assert Path(file).resolve().is_relative_to(site), f"{file} is not from the wheel"
    on_path = [p for p in out["path"] if Path(tmp_path, p).resolve() == ROOT]
    assert not on_path, f"the repository is on sys.path: {out['path']}"
    assert not out["finder"], "the dev install's editable finder leaked into the fresh venv"


def test_a_short_training_runs_from_the_installed_script(venv: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run([str(venv / "bin" / "mbpo-arm"), *TRAIN, f"run_dir={run_dir}"], cwd=tmp_path,
        env=clean_env())
    latest = run_dir / "checkpoints" / "latest"
    assert latest.exists(), "no checkpoint written"
    assert (run_dir / "checkpoints" / latest.read_text().strip() / "state.pt").exists()
    events = [json.loads(line) for line in
              (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert max(e["env_steps"] for e in events) == 300
    assert any("eval_return" in e and e["env_steps"] == 300 for e in events)
