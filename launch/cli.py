"""``mbpo-arm``: the command line. Parses the command and hands it to the module that runs it
(:mod:`.commands`, :mod:`.offline`); imports nothing heavy itself, so ``--help`` is instant.

    mbpo-arm train --backend mujoco task=reach agent=sac trainer.total_steps=N seed=S run_dir=P
    mbpo-arm train resume=P [trainer.total_steps=N]
    mbpo-arm train --show-config [key=value ...]    (the settings it would run with)
    mbpo-arm eval P --episodes N --json [--video out.mp4]
    mbpo-arm train --backend serial robot=so101 port=/dev/ttyACM0
    mbpo-arm calibrate robot=so101 port=/dev/ttyACM0
    mbpo-arm collect / pretrain / dataset ...    (offline data and MOPO)
    mbpo-arm train init_from=P ...               (fine-tune a pretrained run)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from mbpo_arm.configs.schema import ConfigError, options
from mbpo_arm.hardware.errors import RobotError
from mbpo_arm.sim.gl import GLBackendError, use_gl

# Each command: the module and function that run it.
COMMANDS = {"train": "commands:train", "calibrate": "commands:calibrate",
            "eval": "commands:evaluate", "collect": "offline:collect",
            "pretrain": "offline:pretrain", "dataset": "dataset_cli:dataset_command"}
# Shorthands on the command line for the keys a serial-arm user types most.
SHORTHANDS = {"port": "backend.port"}


def expand_shorthands(overrides: list[str]) -> list[str]:
    """``port=/dev/ttyACM0`` -> ``backend.port=/dev/ttyACM0``."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        out.append(f"{SHORTHANDS[key]}={value}" if key in SHORTHANDS else o)
    return out


# The commands that take key=value settings of a run; their --help lists the settings.
SETTINGS_COMMANDS = ("train", "collect", "pretrain", "calibrate")
# The keys collect and pretrain read themselves (launch/offline.py), not settings of the run.
COMMAND_KEYS = {"collect": ("policy", "episodes", "out", "noise", "checkpoint"),
                "pretrain": ("dataset",)}


class SettingsHelp(argparse.Action):
    """``-h/--help`` of a command with settings: the groups, keys and examples
    (:mod:`.help`), built only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, help="show this help, with every group and key, and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        text = importlib.import_module("mbpo_arm.launch.help")
        command = parser.prog.split()[-1]
        parser.description, parser.epilog = text.description(command), text.epilog(command)
        parser.print_help()
        parser.exit()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbpo-arm", description="Model-based RL (MBPO, MOPO) for "
                                "robot arms: real hardware, a MuJoCo twin, a safety shield.",
                                epilog="`mbpo-arm COMMAND --help` lists what a command takes.")
    sub = p.add_subparsers(dest="command", required=True)
    helps = {"train": "train an agent (settings follow as key=value)",
             "calibrate": "calibrate a serial arm, step by step (robot=PRESET port=DEVICE)",
             "collect": "make a dataset in the twin (policy=... out=FILE.npz)",
             "pretrain": "MOPO on a dataset, no robot time (dataset=FILE.npz)"}
    settings = {}
    for name in SETTINGS_COMMANDS:
        backend = "" if name == "calibrate" else " [--backend NAME]"
        settings[name] = sub.add_parser(
            name, help=helps[name], add_help=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            usage=f"mbpo-arm {name} [-h]{backend} [--show-config] [key=value ...]")
        settings[name].add_argument("-h", "--help", action=SettingsHelp)
        if backend:
            settings[name].add_argument("--backend", metavar="NAME",
                                        help="the robot: " + ", ".join(options("backend"))
                                        + " (as backend=NAME)")
        settings[name].add_argument("--show-config", action="store_true",
                                    help="print the settings it would run with, as YAML, "
                                    "and exit")
    p_eval = sub.add_parser("eval", help="evaluate a run's deterministic policy")
    p_eval.add_argument("run_dir", type=Path)
    p_eval.add_argument("--episodes", type=int, default=10)
    p_eval.add_argument("--json", action="store_true", help="print one JSON object")
    p_eval.add_argument("--video", type=Path, help="record a .gif or .mp4 from the twin")
    p_eval.add_argument("--device", default="cpu")
    sub.add_parser("dataset", help="dataset info, import (run, rosbag2, Minari), export",
                   add_help=False)
    return p


def show_config(command: str, overrides: list[str]) -> str:
    """The checked settings ``command`` would run with, as YAML; nothing is built."""
    loader = importlib.import_module("mbpo_arm.configs.loader")
    own = COMMAND_KEYS.get(command, ())
    overrides = [o for o in overrides if o.partition("=")[0] not in own]
    if command == "calibrate":
        overrides = ["backend=serial", *overrides]
    return loader.config_yaml(loader.load_run_config(overrides)[0])


def arguments(args: argparse.Namespace, rest: list[str]) -> tuple[Any, ...]:
    """The command function's arguments from the parsed command line."""
    if args.command == "dataset":
        return (rest,)
    if args.command == "eval":
        if rest:
            raise ConfigError(f"unknown arguments {rest}")
        return args.run_dir, args.episodes, args.json, args.video, args.device
    bad = [r for r in rest if "=" not in r]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not an override; write key=value")
    backend = [f"backend={args.backend}"] if getattr(args, "backend", None) else []
    return (expand_shorthands(backend + rest),)


def main(argv: list[str] | None = None) -> int:
    args, rest = parser().parse_known_args(argv)
    module, _, name = COMMANDS[args.command].partition(":")
    try:  # before mujoco is imported: MUJOCO_GL checked where it renders, else off
        with use_gl(renders=args.command == "eval" and args.video is not None):
            call = arguments(args, rest)
            if getattr(args, "show_config", False):
                print(show_config(args.command, *call), end="")
                return 0
            command = getattr(importlib.import_module(f"mbpo_arm.launch.{module}"), name)
            command(*call)
    except (ConfigError, GLBackendError) as err:
        print(f"mbpo-arm: error: {err}", file=sys.stderr)
        return 2
    except RobotError as err:  # the bus or the driver failed during the run (retries spent)
        print(f"mbpo-arm: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: no final checkpoint, the last one stays
        print("mbpo-arm: aborted; resume= continues from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
