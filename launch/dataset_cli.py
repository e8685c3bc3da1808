"""``mbpo-arm dataset``: inspect, import and export offline datasets. Light: ``dataset info``
loads numpy and the dataset format only (no torch, no envs).

    mbpo-arm dataset info data/reach-medium.npz
    mbpo-arm dataset import-run runs/x --out data/x.npz
    mbpo-arm dataset import-rosbag2 bag/ --joints a b c --hz 20 --action-scale 0.1 --out d.npz
    mbpo-arm dataset import-minari mbpo-arm/reach-v0 --root ~/.minari/datasets --out d.npz
    mbpo-arm dataset export-minari d.npz mbpo-arm/reach-v0 --root ~/.minari/datasets
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mbpo_arm.agent.dataset import Dataset, DatasetError, describe, load_dataset, save_dataset
from mbpo_arm.configs.schema import ConfigError
from mbpo_arm.launch import interchange


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, default=str))



def import_run(run_dir: str) -> Dataset:
    """A run's replay as a dataset; loads torch (checkpoints), so only this action pays it."""
    from mbpo_arm.launch.datasets import import_run as from_run

    return from_run(run_dir)


def dataset_command(argv: list[str]) -> dict[str, Any]:
    """``mbpo-arm dataset info|import-run|import-rosbag2|import-minari|export-minari``."""
    p = argparse.ArgumentParser(prog="mbpo-arm dataset")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("info").add_argument("path")
    p_run = sub.add_parser("import-run")
    p_run.add_argument("run_dir")
    p_bag = sub.add_parser("import-rosbag2")
    p_bag.add_argument("bag")
    p_bag.add_argument("--joints", nargs="+", required=True)
    p_bag.add_argument("--hz", type=float, required=True, help="control rate to resample at")
    p_bag.add_argument("--action-scale", type=float, default=0.1, help="rad per unit action")
    p_bag.add_argument("--state-topic", default=interchange.STATE_TOPIC)
    p_bag.add_argument("--command-topic", default=interchange.COMMAND_TOPIC)
    p_bag.add_argument("--task", default="ArmReach-v0")
    p_min = sub.add_parser("import-minari")
    p_min.add_argument("dataset_id")
    p_exp = sub.add_parser("export-minari")
    p_exp.add_argument("path")
    p_exp.add_argument("dataset_id")
    for q in (p_run, p_bag, p_min):
        q.add_argument("--out", required=True, help="dataset file to write")
    for q in (p_min, p_exp):
        q.add_argument("--root", help="Minari datasets folder (else MINARI_DATASETS_PATH)")
    a = p.parse_args(argv)
    try:
        out = _dataset_action(a)
    except (DatasetError, FileNotFoundError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    print_json(out)
    return out


def _dataset_action(a: argparse.Namespace) -> dict[str, Any]:
    if a.action == "info":
        out = describe(load_dataset(a.path))
    elif a.action == "export-minari":
        where = interchange.export_minari(load_dataset(a.path), a.dataset_id, a.root)
        out = {"minari": a.dataset_id, "path": str(where)}
    else:
        ds = (import_run(a.run_dir) if a.action == "import-run" else
              interchange.import_minari(a.dataset_id, a.root) if a.action == "import-minari"
              else interchange.import_rosbag2(a.bag, a.joints, a.hz, a.action_scale,
                                              a.state_topic, a.command_topic, a.task))
        out = {"out": str(save_dataset(a.out, ds)), **describe(ds)}
    return out
