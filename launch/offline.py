"""The offline commands of ``mbpo-arm``: ``collect`` and ``pretrain`` (``dataset`` is in
:mod:`.dataset_cli`; the ``init_from=`` start of ``train`` is built in :mod:`.build`).

    mbpo-arm collect task=reach policy=medium episodes=200 out=data/reach-medium.npz
    mbpo-arm collect task=hopper policy=checkpoint checkpoint=runs/hopper-sac noise=0.3 out=...
    mbpo-arm pretrain dataset=data/reach-medium.npz task=reach agent=mopo_reach run_dir=P
    mbpo-arm train task=reach agent=mbpo_reach init_from=P
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from mbpo_arm.agent.dataset import describe, load_dataset, save_dataset
from mbpo_arm.agent.mopo import pretrain as mopo_pretrain
from mbpo_arm.agent.replay import ReplayBuffer
from mbpo_arm.configs.loader import load_run_config, save_config
from mbpo_arm.configs.schema import ConfigError
from mbpo_arm.envs.factory import make_env
from mbpo_arm.launch import datasets
from mbpo_arm.launch.build import build_run, checked, default_run_dir, start_up_errors
from mbpo_arm.launch.dataset_cli import print_json

COLLECT_KEYS = ("policy", "episodes", "out", "noise", "checkpoint")


def _pop(overrides: list[str], keys: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` overrides into those of ``keys`` and the rest."""
    mine = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides
            if o.split("=", 1)[0] in keys}
    return mine, [o for o in overrides if o.split("=", 1)[0] not in keys]


# ----------------------------------------------------------------------------- collect
def collect(overrides: list[str]) -> dict[str, Any]:
    """``mbpo-arm collect``: a dataset from a behaviour policy in the twin."""
    args, rest = _pop(overrides, COLLECT_KEYS)
    policy = args.get("policy", "random")
    if policy not in datasets.POLICIES:
        raise ConfigError(f"policy={policy} is not allowed; choose one of "
                          f"{', '.join(datasets.POLICIES)}")
    if "out" not in args:
        raise ConfigError("collect needs out=<file.npz>, where the dataset is written")
    rc = checked(load_run_config(rest)[0])
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
    summary = {"out": str(path), **describe(dataset)}
    print_json(summary)
    return summary


def _need(args: dict[str, str], key: str, what: str) -> str:
    if key not in args:
        raise ConfigError(f"{key}=<{what}> is needed for policy={args.get('policy')}")
    return args[key]


# ---------------------------------------------------------------------------- pretrain
def pretrain(overrides: list[str]) -> dict[str, Any]:
    """``mbpo-arm pretrain dataset=<path>``: MOPO on the dataset, no env steps."""
    args, rest = _pop(overrides, ("dataset",))
    if "dataset" not in args:
        raise ConfigError("pretrain needs dataset=<file.npz> (make one with `mbpo-arm collect`)")
    rc = checked(load_run_config(rest)[0])
    if rc.agent.algo != "mbpo":
        raise ConfigError("pretrain needs an MBPO agent with MOPO settings; use agent=mopo_reach "
                          "or agent=mopo_hopper")
    run_dir = Path(rc.run_dir or default_run_dir(rc).replace("-mbpo-", "-mopo-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(rc, run_dir)
    with start_up_errors():
        run = build_run(rc, run_dir)
        dataset = load_dataset(args["dataset"], run.env.observation_space.shape[0],
                               run.env.action_space.shape[0], task=rc.task.id)
    replay = ReplayBuffer.from_dataset(dataset)
    run = dataclasses.replace(run, agent=dataclasses.replace(run.agent, replay=replay))
    try:
        result = mopo_pretrain(run, dataset, rc.agent.mopo, source=args["dataset"])
    finally:
        run.logger.close()
        run.env.close()
        run.eval_env.close()
    print(f"\npretrained: {run_dir}\nfinal eval: {json.dumps(result)}\n"
          f"fine-tune:  mbpo-arm train init_from={run_dir} ...")
    return result
