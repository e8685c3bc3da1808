"""The offline commands of ``mbpo-arm``: ``collect``, ``pretrain``, ``dataset``, and the
``init_from=`` start of ``train``.

    mbpo-arm collect task=reach policy=medium episodes=200 out=data/reach-medium.npz
    mbpo-arm collect task=hopper policy=checkpoint checkpoint=runs/hopper-sac noise=0.3 out=...
    mbpo-arm pretrain dataset=data/reach-medium.npz task=reach agent=mopo_reach run_dir=P
    mbpo-arm train task=reach agent=mbpo_reach init_from=P
    mbpo-arm dataset info data/reach-medium.npz
    mbpo-arm dataset import-run runs/x --out data/x.npz
    mbpo-arm dataset import-rosbag2 bag/ --joints a b c --hz 20 --action-scale 0.1 --out d.npz
    mbpo-arm dataset import-minari mbpo-arm/reach-v0 --root ~/.minari/datasets --out d.npz
    mbpo-arm dataset export-minari d.npz mbpo-arm/reach-v0 --root ~/.minari/datasets
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from configs.schema import ConfigError, RunConfig

COLLECT_KEYS = ("policy", "episodes", "out", "noise", "checkpoint")


def _pop(overrides: list[str], keys: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` overrides into those of ``keys`` and the rest."""
    mine = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides
            if o.split("=", 1)[0] in keys}
    return mine, [o for o in overrides if o.split("=", 1)[0] not in keys]


# ----------------------------------------------------------------------------- collect
def collect(overrides: list[str]) -> dict[str, Any]:
    """``mbpo-arm collect``: a dataset from a behaviour policy in the twin."""
    from agent.dataset import save_dataset
    from envs.factory import make_env
    from mbpo_launch import datasets
    from mbpo_launch.cli import load_run_config, start_up_errors

    args, rest = _pop(overrides, COLLECT_KEYS)
    policy = args.get("policy", "random")
    if policy not in datasets.POLICIES:
        raise ConfigError(f"policy={policy} is not allowed; choose one of "
                          f"{', '.join(datasets.POLICIES)}")
    if "out" not in args:
        raise ConfigError("collect needs out=<file.npz>, where the dataset is written")
    rc, _ = load_run_config(rest)
    with start_up_errors():
        if policy == "mixed":
            dataset = datasets.import_run(_need(args, "checkpoint", "a run directory"))
        else:
            env = make_env(rc.task, rc.backend_name, rc.backend)
            rng = np.random.default_rng(rc.seed)
            noise = float(args.get("noise", {"medium": datasets.MEDIUM_NOISE}.get(policy, 0.0)))
            act = (datasets.random_policy(env, rng) if policy == "random" else
                   datasets.checkpoint_policy(_need(args, "checkpoint", "a run directory"),
                                              env, noise, rng) if policy == "checkpoint" else
                   datasets.scripted_reach(env, noise, rng))
            meta = datasets.env_meta(env, rc.backend_name, f"collect:{policy}")
            meta.extra.update(policy=policy, noise=noise, seed=rc.seed)
            dataset = datasets.collect(env, act, int(args.get("episodes", 100)), rc.seed, meta)
            env.close()
        path = save_dataset(args["out"], dataset)
    summary = {"out": str(path), **datasets.describe(dataset)}
    datasets.print_json(summary)
    return summary


def _need(args: dict[str, str], key: str, what: str) -> str:
    if key not in args:
        raise ConfigError(f"{key}=<{what}> is needed for policy={args.get('policy')}")
    return args[key]


# ---------------------------------------------------------------------------- pretrain
def pretrain(overrides: list[str]) -> dict[str, Any]:
    """``mbpo-arm pretrain dataset=<path>``: MOPO on the dataset, no env steps."""
    from agent.dataset import load_dataset
    from agent.mopo import pretrain as mopo_pretrain
    from mbpo_launch.cli import (
        SAVED_CONFIG,
        build_run,
        default_run_dir,
        load_run_config,
        start_up_errors,
    )

    args, rest = _pop(overrides, ("dataset",))
    if "dataset" not in args:
        raise ConfigError("pretrain needs dataset=<file.npz> (make one with `mbpo-arm collect`)")
    rc, cfg = load_run_config(rest)
    if rc.agent.mopo is None or rc.agent.algo != "mbpo":
        raise ConfigError("pretrain needs agent.mopo; use agent=mopo_reach or agent=mopo_hopper")
    run_dir = Path(rc.run_dir or default_run_dir(rc).replace("-mbpo-", "-mopo-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = OmegaConf.create(OmegaConf.to_container(cfg))
    saved.backend_name, saved.run_dir = rc.backend_name, str(run_dir)
    OmegaConf.save(saved, run_dir / SAVED_CONFIG)
    with start_up_errors():
        run = build_run(rc, run_dir)
        dataset = load_dataset(args["dataset"], run.env.observation_space.shape[0],
                               run.env.action_space.shape[0], task=rc.task.id)
    try:
        result = mopo_pretrain(run, dataset, rc.agent.mopo, source=args["dataset"])
    finally:
        run.logger.close()
        run.env.close()
        run.eval_env.close()
    print(f"\npretrained: {run_dir}\nfinal eval: {json.dumps(result)}\n"
          f"fine-tune:  mbpo-arm train init_from={run_dir} ...")
    return result


# --------------------------------------------------------------------------- init_from
def finetune_config(rc: RunConfig) -> RunConfig:
    """With ``init_from``, the policy acts and the model trains from the first online step
    (no random warm-up: the pretrained agent is the warm-up)."""
    if not rc.init_from:
        return rc
    if not (Path(rc.init_from) / "checkpoints").exists():
        raise ConfigError(f"init_from={rc.init_from}: no checkpoints there; give a run "
                          "directory made by `mbpo-arm pretrain` or `mbpo-arm train`")
    sac = dataclasses.replace(rc.agent.sac, learning_starts=0)
    mbpo = rc.agent.mbpo and dataclasses.replace(rc.agent.mbpo, model_learning_starts=0)
    return dataclasses.replace(rc, agent=dataclasses.replace(rc.agent, sac=sac, mbpo=mbpo))


def load_policy(sac: Any, run_dir: str | Path) -> None:
    """The policy (actor and observation normalizer) of ``run_dir``'s newest checkpoint into
    ``sac``: the async actor's start when fine-tuning."""
    from agent.checkpoint import latest_checkpoint, load_checkpoint

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ConfigError(f"init_from={run_dir}: no checkpoint there")
    sac.load_policy_state_dict(load_checkpoint(ckpt, buffer_names=())[0]["sac"])


def init_run(run: Any, rc: RunConfig) -> None:
    """Load ``rc.init_from`` into the freshly built ``run`` (see
    :func:`agent.mopo.init_from_run`), log what was loaded, and evaluate the loaded policy:
    the online curve starts where pretraining left off (and ``trainer.stop_at`` met there
    ends the run before it takes a step)."""
    from agent.checkpoint import latest_checkpoint
    from agent.mopo import init_from_run
    from agent.train import evaluate

    info = init_from_run(run, rc.init_from, rc.agent.finetune)
    run.logger.log({"env_steps": 0, **info})
    if latest_checkpoint(run.run_dir) is None:  # not a resume, nor a restarted async learner
        evaluate(run)


# ----------------------------------------------------------------------------- dataset
def dataset_command(argv: list[str]) -> dict[str, Any]:
    """``mbpo-arm dataset info|import-run|import-rosbag2|import-minari|export-minari``."""
    from agent.dataset import load_dataset, save_dataset
    from mbpo_launch import datasets, interchange

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
    if a.action == "info":
        out = datasets.describe(load_dataset(a.path))
    elif a.action == "export-minari":
        where = interchange.export_minari(load_dataset(a.path), a.dataset_id, a.root)
        out = {"minari": a.dataset_id, "path": str(where)}
    else:
        ds = (datasets.import_run(a.run_dir) if a.action == "import-run" else
              interchange.import_minari(a.dataset_id, a.root) if a.action == "import-minari"
              else interchange.import_rosbag2(a.bag, a.joints, a.hz, a.action_scale,
                                              a.state_topic, a.command_topic, a.task))
        out = {"out": str(save_dataset(a.out, ds)), **datasets.describe(ds)}
    datasets.print_json(out)
    return out
