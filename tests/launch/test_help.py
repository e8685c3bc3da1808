"""``mbpo-arm <command> --help`` and ``--show-config``, as a user runs them: the groups with
their options, the keys with their defaults and docs, nothing heavy imported; the printed
config is YAML with the overrides in it; a resumed run refuses a new preset in one line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mbpo_arm.configs.describe import class_source, defaults_list, describe, field_comments
from mbpo_arm.configs.schema import CONFIG_DIR, TOP_KEYS, RunConfig, options

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mujoco", "gymnasium", "numpy")


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbpo_arm.launch.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})


def test_train_help_lists_the_groups_their_options_and_the_top_level_keys() -> None:
    proc = cli("train", "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    defaults = defaults_list(CONFIG_DIR / "train.yaml")
    for group in ("backend", "task", "agent", "runtime", "robot"):
        assert f"  {group}: " in out
        for option in options(group):
            mark = " (default)" if option == defaults[group] else ""
            assert f"    {option}{mark}" in out, f"{group}={option} missing"
    assert "    mujoco (default)" in out and "    sac (default)" in out
    assert "MBPO preset for ArmReach-v0" in out  # a preset's first comment line
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for key in TOP_KEYS:
        default = fields[key].default
        shown = "null" if default is None else str(default)
        assert f"  {key}={shown} " in out, f"{key} missing"
    assert "seeds the env, the replay sampling and the networks" in out  # the field's comment
    for tree in ("trainer.*", "shield.*", "runtime.*", "agent.sac.*", "backend.*"):
        assert f"  {tree} " in out
    assert "mbpo-arm train --show-config" in out and "docs/reference/configuration.md" in out
    assert "composition root" not in out and "Hydra" not in out


@pytest.mark.parametrize("command, expect", [
    ("collect", ["policy=random", "out=required", "    hopper"]),
    ("pretrain", ["dataset=required", "    mopo_reach"]),
    ("calibrate", ["port=/dev/ttyACM0", "    so101", "backend.calibration="]),
])
def test_each_command_with_settings_lists_its_own(command: str, expect: list[str]) -> None:
    proc = cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    for text in expect:
        assert text in proc.stdout, f"{command} --help lacks {text!r}"
    assert f"mbpo-arm {command} --show-config" in proc.stdout


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys\nfrom mbpo_arm.launch.cli import main\n"
            "for command in ('train', 'collect', 'pretrain', 'calibrate'):\n"
            "    try:\n        main([command, '--help'])\n    except SystemExit:\n        pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd="/")
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_show_config_prints_yaml_with_the_overrides_and_builds_nothing(tmp_path: Path) -> None:
    proc = cli("train", "--show-config", "agent=mbpo_reach", "trainer.total_steps=1234",
               "seed=7", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["trainer"]["total_steps"] == 1234 and cfg["seed"] == 7
    assert cfg["agent"]["algo"] == "mbpo" and cfg["agent"]["sac"]["utd"] == 10  # the preset
    assert cfg["backend_name"] == "mujoco" and cfg["threads"] == "1"
    assert list(tmp_path.iterdir()) == []  # no run directory, no checkpoint


@pytest.mark.slow
def test_show_config_of_the_other_commands(tmp_path: Path) -> None:
    calib = yaml.safe_load(cli("calibrate", "--show-config", "robot=so101",
                               "port=/dev/ttyUSB3").stdout)
    assert calib["backend_name"] == "serial" and calib["backend"]["port"] == "/dev/ttyUSB3"
    collect = cli("collect", "--show-config", "policy=medium", "out=x.npz", "seed=4",
                  cwd=tmp_path)
    assert collect.returncode == 0, collect.stderr
    assert yaml.safe_load(collect.stdout)["seed"] == 4 and list(tmp_path.iterdir()) == []


def test_show_config_errors_are_one_line() -> None:
    proc = cli("train", "--show-config", "agent=nope")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "agent=nope is not an option" in proc.stderr


@pytest.fixture
def saved_run(tmp_path: Path) -> Path:
    """A run directory holding only the ``config.yaml`` that ``mbpo-arm train`` writes."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(cli("train", "--show-config").stdout)
    return run


def test_show_config_of_a_resumed_run_applies_key_overrides(saved_run: Path) -> None:
    proc = cli("train", "--backend", "mujoco", "--show-config", f"resume={saved_run}",
               "trainer.total_steps=99")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["trainer"]["total_steps"] == 99
    assert cfg["resume"] == cfg["run_dir"] == str(saved_run)


@pytest.mark.parametrize("choice", ["agent=mbpo", "task=hopper", "runtime=async",
                                    "--backend=serial"])
@pytest.mark.slow
def test_a_resumed_run_refuses_a_new_preset_in_one_line(saved_run: Path, choice: str) -> None:
    proc = cli("train", f"resume={saved_run}", choice)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "cannot change on resume" in line, proc.stderr
    assert choice.lstrip("-") in line and "trainer.total_steps=N" in line


def test_the_keys_collect_and_pretrain_read_are_the_ones_help_and_show_config_know() -> None:
    from mbpo_arm.launch import cli as cli_module
    from mbpo_arm.launch import help as help_module
    from mbpo_arm.launch import offline

    assert cli_module.COMMAND_KEYS["collect"] == offline.COLLECT_KEYS
    for command, keys in cli_module.COMMAND_KEYS.items():
        assert set(help_module.OWN_KEYS[command]) == set(keys)


def test_describe_reads_type_default_and_comment() -> None:
    seed = next(f for f in describe(RunConfig) if f.name == "seed")
    assert (seed.type, seed.default, seed.sub) == ("int", "0", None)
    assert seed.doc == "seeds the env, the replay sampling and the networks"
    threads = next(f for f in describe(RunConfig) if f.name == "threads")
    assert threads.doc.startswith("torch threads")  # the comment block above the field
    assert next(f for f in describe(RunConfig) if f.name == "trainer").sub is not None
    assert class_source(RunConfig).startswith("class RunConfig")
    assert class_source(RunConfig).rstrip().endswith("# the safety shield")
    assert field_comments(RunConfig)["runtime"] == "sync loop, or async actor"
