"""``runtime=ray``: the fixed-rate actor on the robot's computer, the learner (and any twins)
as Ray actors wherever the cluster places them. :func:`run_ray` is what ``mbpo-arm train
runtime=ray`` calls.

The actor is ``runtime=async``'s, unchanged: its tick never calls Ray, its log on this disk
stays the source of truth. :class:`RaySupervisor` connects it: it joins the cluster
(``runtime.ray.address``; ``null`` starts a local instance), finds or creates the named
learner host (:class:`~launch.ray_actors.LearnerHost`, placed by ``runtime.ray.learner_*``),
starts ``runtime.ray.twins`` twin actors (and, with ``runtime.ray.evaluate_on=twin``, the
evaluation actor of :mod:`launch.ray_eval`), and runs the :class:`~agent.runtime.ray_link.Link`'s
helper threads. Another ``mbpo-arm`` process with the same ``runtime.ray.learner_name`` (on a
second arm's computer, ``runtime.ray.source=arm2``) joins that learner as one more source;
the process that created the learner ends the run.

A learner that stops answering for ``runtime.ray.lost_after_s`` counts as a death: the actor
acts with the last weights or holds (``runtime.on_learner_death``) until it answers again;
Ray restarts a dead host, which restores from its checkpoint, and the link re-sends what the
new one lacks.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from functools import partial
from pathlib import Path
from typing import Any

from mbpo_arm.agent.planning import acting_state
from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.actor import Actor
from mbpo_arm.agent.runtime.config import RuntimeConfig
from mbpo_arm.agent.runtime.ray_link import Link, call
from mbpo_arm.agent.runtime.supervisor import Supervisor
from mbpo_arm.agent.runtime.weights import WeightsPublisher, flatten
from mbpo_arm.configs.schema import ConfigError, RunConfig
from mbpo_arm.launch.build import (
    build_learner_run,
    slow_resets,
    thread_policy,
    twin_run_config,
)
from mbpo_arm.launch.ray_eval import start_eval_twin, stop_eval_twin
from mbpo_arm.launch.runtime import run_with_actor

INTAKE_DIR = "intake"  # in the learner's run directory: the merged log and its ledger


def import_ray() -> Any:
    """``ray``, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("runtime=ray needs Ray: pip install 'mbpo-arm[ray]' (or "
                          "pip install 'ray>=2.40'), or use runtime=async") from None
    return ray


def run_ray(rc: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Run ``rc`` with the actor here and the learner on Ray until ``trainer.total_steps``
    transitions of this source; returns the runtime figures."""
    import_ray()
    if rc.runtime.ray.twins and rc.agent.act.planner is not None:
        raise ConfigError("runtime.ray.twins act with the policy; agent.act.planner="
                          f"{rc.agent.act.planner} plans on the robot only: set "
                          "runtime.ray.twins=0, or plan on the robot without twins")
    if rc.runtime.ray.evaluate_on == "twin" and rc.agent.act.planner is not None:
        raise ConfigError("runtime.ray.evaluate_on=twin evaluates the policy, not agent.act."
                          f"planner={rc.agent.act.planner}: set runtime.ray.evaluate_on=learner")

    def supervise(actor: Actor, runtime: RuntimeConfig, block: Any) -> dict[str, Any]:
        return RaySupervisor(rc, actor, runtime, block, Path(run_dir)).run(
            rc.trainer.total_steps)

    return run_with_actor(rc, run_dir, supervise, mp.get_context("spawn"))


class RaySupervisor(Supervisor):
    """:class:`~agent.runtime.supervisor.Supervisor` with the learner on Ray (see the module
    docstring): the same run, watch and report, another learner and another stop."""

    def __init__(self, rc: RunConfig, actor: Actor, runtime: RuntimeConfig, block: Any,
                 run_dir: Path) -> None:
        learner_dir = runtime.ray.learner_dir or str(run_dir)
        make_run = partial(build_learner_run, slow_resets(rc), learner_dir)
        super().__init__(actor, runtime, make_run, run_dir, block.name, mp.get_context("spawn"),
                         threads=thread_policy(rc))
        self.rc, self.cfg, self.block = rc, runtime.ray, block
        self.learner_dir = learner_dir
        self.host: Any = None
        self.link: Link | None = None
        self.twins: list[Any] = []
        self.evaluator: Any = None  # runtime.ray.evaluate_on=twin: the EvalTwin
        self.owner = False  # this process created the learner (and ends it)
        self.away = False  # the learner is not answering
        self.started_ray = False

    # ------------------------------------------------------------------- the learner
    def start_learner(self) -> None:
        """Join the cluster, find or create the learner host, start twins and the link."""
        ray = import_ray()
        cfg = self.cfg
        if not ray.is_initialized():
            ray.init(address=cfg.address, namespace=cfg.namespace, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            self.started_ray = cfg.address is None
        try:
            self.host = ray.get_actor(cfg.learner_name, namespace=cfg.namespace)
        except ValueError:
            self.host, self.owner = self._create_host(ray), True
        refused = None if self.owner else call(self.host.admits.remote(cfg.source), 60.0)
        if refused:
            raise ConfigError(refused)
        self.control[ctl.READY] = 0
        self.link = Link(self.host, cfg.source, self.actor.log, WeightsPublisher(self.block),
                         self.control, cfg)
        if self.owner:
            self.twins = [self._twin(ray, i) for i in range(cfg.twins)]
            self.evaluator = start_eval_twin(ray, self.rc, self.host)
        self.link.start()

    def _create_host(self, ray: Any) -> Any:
        from mbpo_arm.launch.ray_actors import LearnerHost

        cfg, env = self.cfg, self.actor.env
        dims = (env.observation_space.shape[0], env.action_space.shape[0])
        size = len(flatten(acting_state(self.actor.policy, self.actor.ensemble)))
        runtime = dataclasses.replace(self.runtime, learner_cpus=None)
        return ray.remote(LearnerHost).options(
            name=cfg.learner_name, namespace=cfg.namespace, get_if_exists=True,
            max_restarts=-1, max_concurrency=8, num_cpus=cfg.learner_num_cpus,
            num_gpus=cfg.learner_num_gpus, resources=dict(cfg.learner_resources),
        ).remote(self.make_run, runtime, self.threads,
                 str(Path(self.learner_dir) / INTAKE_DIR), dims, size,
                 self.rc.trainer if cfg.evaluate_on == "twin" else None)

    def _twin(self, ray: Any, index: int) -> Any:
        from mbpo_arm.launch.ray_actors import TwinActor

        rc = twin_run_config(self.rc)
        return ray.remote(TwinActor).options(
            max_restarts=-1, max_concurrency=2, num_cpus=self.cfg.twin_num_cpus,
            resources=dict(self.cfg.twin_resources)).remote(rc, index, self.host)

    def watch(self) -> None:
        """Between ticks: a learner gone quiet is a death (act or hold); its answer again
        ends it; a learner that gave up stops the run."""
        link = self.link
        if link is None:
            return
        failure = link.status.get("failure")
        if failure and self.failure is None:
            self.failure, self.stopping = tuple(failure), True
        if link.lost and not self.away:
            self.away, self.deaths = True, self.deaths + 1
            self.learner_events.append(("death", self.actor.ticks))
            self.actor.hold = self.runtime.on_learner_death == "hold"
        elif self.away and not link.lost and self.control[ctl.READY]:
            self.away, self.restarts = False, self.restarts + 1
            self.learner_events.append(("restart", self.actor.ticks))
            self.actor.hold = False

    def stop_learner(self) -> bool:
        """Ship the rest of the log, stop the twins and, in the process that created the
        learner, have it checkpoint everything; ``True`` when the final checkpoint holds every
        transition of this source."""
        link, timeout = self.link, self.runtime.stop_timeout_s
        shipped = link.flush(timeout)
        self.twin_figures = [call(t.stats.remote(), self.cfg.call_timeout_s) for t in self.twins]
        self.eval_figures = stop_eval_twin(self.evaluator, self.cfg.call_timeout_s)
        for twin in self.twins:
            call(twin.stop.remote(), self.cfg.call_timeout_s)
        if self.cfg.robots and shipped:
            call(self.host.finished.remote(self.cfg.source), self.cfg.call_timeout_s)
        if not self.owner or self.failure is not None:
            return shipped and self.failure is None
        self.wait_for_arms()
        finished = call(self.host.finish.remote(timeout), timeout + 10.0)
        link.poll_once()  # the final status: checkpoint step, updates
        return bool(shipped and finished)

    def wait_for_arms(self) -> None:
        """With ``runtime.ray.robots``: before the learner ends, let the other listed arms
        that joined finish (a second signal stops the wait)."""
        said, self.stopping = False, False
        heard = time.monotonic()
        while not self.stopping and time.monotonic() - heard < 10 * self.cfg.lost_after_s:
            waiting = call(self.host.waiting_for.remote(), self.cfg.call_timeout_s)
            if waiting is not None and not waiting:
                return
            heard = time.monotonic() if waiting is not None else heard
            if waiting and not said:
                print(f"runtime=ray: waiting for {', '.join(waiting)} to finish before the "
                      "learner ends (Ctrl-C again to end it now)", flush=True)
                said = True
            time.sleep(0.5)

    def run(self, total_steps: int) -> dict[str, Any]:
        try:
            return super().run(total_steps)
        finally:
            self.disconnect()

    def disconnect(self) -> None:
        """Stop the link's threads; end the twins and a local Ray instance started here."""
        if self.link is not None:
            self.link.close()
        ray = import_ray()
        for twin in [*self.twins, *([self.evaluator] if self.evaluator else [])]:
            ray.kill(twin)
        if self.owner and self.host is not None:
            ray.kill(self.host)
        if self.started_ray:
            ray.shutdown()

    def extra_figures(self) -> dict[str, Any]:
        status = self.link.status if self.link is not None else {}
        return {"queue_dropped": None,  # no queue: the link ships from the log
                "ray": {**(self.link.figures() if self.link else {}),
                        "owner": self.owner, "merged_records": status.get("merged"),
                        "learner_placed": status.get("placed"),
                        "sources": status.get("sources"), "starts": status.get("starts"),
                        "learner_processes": status.get("learner_starts"),
                        "twins": getattr(self, "twin_figures", []),
                        "evaluator": getattr(self, "eval_figures", None)}}
