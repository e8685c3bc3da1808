"""``mbpo-arm``: the command line. Parses the command and hands it to the module that runs it
(:mod:`.commands`, :mod:`.offline`); imports nothing heavy itself, so ``--help`` is instant.

    mbpo-arm train --backend mujoco task=reach agent=sac trainer.total_steps=N seed=S run_dir=P
    mbpo-arm train resume=P [trainer.total_steps=N]
    mbpo-arm eval P --episodes N --json [--video out.mp4]
    mbpo-arm train --backend serial robot=so101 port=/dev/ttyACM0
    mbpo-arm calibrate robot=so101 port=/dev/ttyACM0
    mbpo-arm collect / pretrain / dataset ...    (offline data and MOPO)
    mbpo-arm train init_from=P ...               (fine-tune a pretrained run)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from mbpo_arm.configs.schema import ConfigError, options
from mbpo_arm.hardware.serial_bus import BusError

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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbpo-arm", description="Model-based RL (MBPO, MOPO) for "
                                "robot arms: real hardware, a MuJoCo twin, a safety shield.")
    sub = p.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train an agent (key=value Hydra overrides follow)")
    p_train.add_argument("--backend", help="robot backend: " + ", ".join(options("backend")))
    sub.add_parser("calibrate", help="calibrate a serial arm interactively (robot=<preset> "
                   "port=<device> [backend.calibration=<file>])")
    p_eval = sub.add_parser("eval", help="evaluate a run's deterministic policy")
    p_eval.add_argument("run_dir", type=Path)
    p_eval.add_argument("--episodes", type=int, default=10)
    p_eval.add_argument("--json", action="store_true", help="print one JSON object")
    p_eval.add_argument("--video", type=Path, help="record a .gif or .mp4 from the twin")
    p_eval.add_argument("--device", default="cpu")
    for name, text in (("collect", "make a dataset in the twin (policy=random|medium|expert|"
                        "checkpoint|mixed out=PATH)"),
                       ("pretrain", "MOPO on a dataset, no robot time (dataset=PATH)")):
        sub.add_parser(name, help=text).add_argument("--backend")
    sub.add_parser("dataset", help="dataset info, import (run, rosbag2, Minari), export",
                   add_help=False)
    return p


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
    if args.command == "eval" and args.video is not None:
        os.environ.setdefault("MUJOCO_GL", "egl")
    module, _, name = COMMANDS[args.command].partition(":")
    try:
        call = arguments(args, rest)
        command = getattr(importlib.import_module(f"mbpo_arm.launch.{module}"), name)
        command(*call)
    except ConfigError as err:
        print(f"mbpo-arm: error: {err}", file=sys.stderr)
        return 2
    except BusError as err:  # the serial bus failed during the run (every retry spent)
        print(f"mbpo-arm: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
