"""The layer rules of the design (which folder may import which), checked by walking every
import of every module, function-local ones included; and the config layer stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("agent", "envs", "hardware", "sim", "configs", "launch")
# The light modules that hold each part's settings: the config layer imports these only.
CONFIG_MODULES = {"mbpo_arm.agent.config", "mbpo_arm.agent.runtime.config",
                  "mbpo_arm.envs.config", "mbpo_arm.sim.config", "mbpo_arm.hardware.config",
                  "mbpo_arm.hardware.ros2.config"}
# Which layers each layer may import (DESIGN.md, "Layers"); launch is the composition root.
ALLOWED = {"agent": {"agent"}, "envs": {"envs", "hardware", "sim"}, "sim": {"sim", "hardware"},
           "hardware": {"hardware"}, "configs": {"configs"}, "launch": set(LAYERS)}
# Third-party packages a layer must never import, even lazily.
FORBIDDEN = {"agent": {"mujoco", "serial", "rclpy", "cyclonedds", "hydra"},
             "hardware": {"torch", "gymnasium", "hydra"},
             "sim": {"gymnasium", "hydra"},
             "envs": {"hydra"},
             "configs": {"torch", "mujoco", "gymnasium", "serial", "rclpy", "cyclonedds",
                         "numpy"}}
# ROS 2 launch files import ROS's own `launch` package, which shares a name with our folder.
ROS_LAUNCH_FILES = {"train_arm.py"}
LIGHT = {"torch", "mujoco", "gymnasium", "serial", "rclpy", "cyclonedds", "numpy"}


def modules() -> dict[str, Path]:
    """Every module of the package, by its installed name."""
    out = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("mbpo_arm", *parts)).removesuffix(".__init__")
            out[name] = path
    return out


def imports(path: Path, name: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the file, at any depth, relative ones resolved."""
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base]) if base else ".".join(up)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "mbpo_arm" and len(parts) > 1 else None


def violations() -> list[str]:
    known = modules()
    bad = []
    for name, path in known.items():
        mine = layer_of(name)
        where = path.relative_to(ROOT)
        for line, target in imports(path, name):
            top = target.split(".")[0]
            if top in LAYERS and not (top == "launch" and path.name in ROS_LAUNCH_FILES):
                bad.append(f"{where}:{line} imports {target}: write mbpo_arm.{target}")
            theirs = layer_of(target)
            if name in CONFIG_MODULES:
                if theirs is not None and target not in CONFIG_MODULES and not any(
                        target.startswith(m + ".") for m in CONFIG_MODULES):
                    bad.append(f"{where}:{line}: a config module imports {target}")
                if top in LIGHT:
                    bad.append(f"{where}:{line}: a config module imports {top}")
                continue
            if theirs is not None and theirs not in ALLOWED[mine]:
                settings = target in CONFIG_MODULES or any(
                    target.startswith(m + ".") for m in CONFIG_MODULES)
                if not (mine == "configs" and settings):
                    bad.append(f"{where}:{line}: layer {mine} imports {target}")
            if top in FORBIDDEN.get(mine, ()):
                bad.append(f"{where}:{line}: layer {mine} imports {top}")
    return bad


def test_every_import_keeps_the_layer_rules() -> None:
    assert violations() == []


def test_the_walk_sees_function_local_and_relative_imports(tmp_path: Path) -> None:
    """The checker is not vacuous: a nested import of a forbidden layer is found."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    import mujoco\n    from ..sim import twin\n")
    found = imports(source, "mbpo_arm.agent.m")
    assert (2, "mujoco") in found and (3, "mbpo_arm.sim.twin") in found


@pytest.mark.parametrize("module", ["mbpo_arm.configs.schema", "mbpo_arm.configs.loader",
                                    "mbpo_arm.launch.cli"])
def test_the_config_layer_and_the_cli_load_nothing_heavy(module: str) -> None:
    code = (f"import sys, {module}; print(sorted(m for m in {sorted(LIGHT - {'serial'})!r} "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    assert out.strip() == "[]", f"{module} loads {out.strip()}"


def test_every_package_folder_is_installed() -> None:
    """pyproject lists each package explicitly (the folders are mapped into mbpo_arm), and
    each data folder as a package of data."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    data = {".".join(("mbpo_arm", *p.parent.relative_to(ROOT).parts))
            for layer in LAYERS for p in (ROOT / layer).rglob("*")
            if p.suffix in (".yaml", ".xml") and not (p.parent / "__init__.py").exists()}
    assert packages | data == listed
