"""The robot's link to a learner on Ray (``runtime=ray``): helper threads, never the tick.

The actor runs as in ``runtime=async``: it writes every transition to its replay log on this
computer (the source of truth) and reads weights from its local double buffer. Two helper
threads connect those to the learner's host (:class:`~launch.ray_actors.LearnerHost`):

- the *shipper* reads the log's records after the host's acknowledgement and sends them in
  batches (``runtime.ray.batch_records``, every ``ship_every_s``) with the seq they start
  from; the reply is the new acknowledgement (everything below it is on the learner's disk).
  A call that fails or takes longer than ``call_timeout_s`` is simply tried again from the
  acknowledgement: the host skips what it already has, so a re-send never duplicates, and
  nothing is dropped, because the log is read again;
- the *poller* asks for the learner's status and newer weights every ``weights_every_s``,
  writes the weights into the local double buffer (the actor picks them up between ticks as
  before) and copies the status (updates, checkpoint, ready, target reached) into the local
  control block.

Every call has a timeout, so a partition or a stopped learner never blocks a thread for long
and never the tick; :attr:`Link.lost` says the learner has not answered for
``lost_after_s`` (the supervisor then acts or holds: ``runtime.on_learner_death``). When it
answers again the link is back at once (at most ``call_timeout_s + ship_every_s`` later). A
learner host restarted by Ray is a new *instance*: its weights are taken whatever their
version.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from mbpo_arm.agent.runtime import control as ctl
from mbpo_arm.agent.runtime.actor import percentiles
from mbpo_arm.agent.runtime.config import RayConfig
from mbpo_arm.agent.runtime.replay_log import ReplayLog, read_log
from mbpo_arm.agent.runtime.weights import WeightsPublisher

STATUS = {"learner_steps": ctl.LEARNER_STEPS, "updates": ctl.UPDATES,
          "checkpoint_step": ctl.CHECKPOINT_STEP, "ready": ctl.READY, "reached": ctl.REACHED}


def call(ref: Any, timeout_s: float) -> Any:
    """``ray.get(ref)`` within ``timeout_s``; ``None`` when it did not answer in time or its
    actor is dead or restarting (the caller tries again later)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayError

    try:
        return ray.get(ref, timeout=timeout_s)
    except (GetTimeoutError, RayError, TimeoutError):
        return None


class Link:
    """The shipper and the poller of one source (see the module docstring).

    Args:
        host: the learner host's Ray handle; ``source``: this robot's name.
        log: the actor's replay log (read, never written here).
        publisher: the local weights double buffer the actor reads.
        control: the local control block (the status words are written here).
        cfg: ``runtime.ray``.
    """

    def __init__(self, host: Any, source: str, log: ReplayLog, publisher: WeightsPublisher,
                 control: Any, cfg: RayConfig) -> None:
        self.host, self.source, self.log, self.cfg = host, source, log, cfg
        self.publisher, self.control = publisher, control
        self.acked = -1  # unknown until the host says
        self.instance: str | None = None
        self.remote_version = -1
        self.status: dict[str, Any] = {}
        self.t_contact, self.contacts = time.monotonic(), 0
        self.lost_since: float | None = None  # wall clock (time.time) the learner went quiet
        self.outages: list[tuple[float, float]] = []  # (lost, back) wall-clock pairs
        self.instances: list[str] = []  # every learner host instance seen, in order
        self.batches = self.failed_calls = self.refused = self.weights = 0
        self.weight_age: list[float] = []  # s from the host's publish to the local one
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=fn, daemon=True, name=f"mbpo-link-{name}")
                         for name, fn in (("ship", self._ship_loop), ("poll", self._poll_loop))]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2 * self.cfg.call_timeout_s + 1.0)

    @property
    def lost(self) -> bool:
        """The learner answered once and not for ``lost_after_s`` since (while it is coming
        up the actor acts as before its first weights)."""
        return self.contacts > 0 and time.monotonic() - self.t_contact > self.cfg.lost_after_s

    def _answered(self, reply: Any) -> bool:
        now = time.monotonic()
        if reply is None:
            self.failed_calls += 1
            if self.lost and self.lost_since is None:
                self.lost_since = time.time() - (now - self.t_contact)
            return False
        if self.lost_since is not None:
            self.outages.append((self.lost_since, time.time()))
            self.lost_since = None
        self.t_contact, self.contacts = now, self.contacts + 1
        return True

    # --------------------------------------------------------------------- shipping
    def _ship_loop(self) -> None:
        while not self._stop.is_set():
            if not self.ship_once():
                self._stop.wait(self.cfg.ship_every_s)

    def ship_once(self) -> bool:
        """Send the next batch after the acknowledgement; ``True`` when more is waiting."""
        timeout = self.cfg.call_timeout_s
        if self.acked < 0:
            reply = call(self.host.hello.remote(self.source, os.getpid()), timeout)
            if not self._answered(reply):
                return False
            self.acked = int(reply["acked"])
        written = self.log.written
        if self.acked >= written:
            return False
        since = self.acked
        records = read_log(self.log.path, self.log.obs_dim, self.log.act_dim, start=since,
                           stop=min(written, since + self.cfg.batch_records))
        reply = call(self.host.append.remote(self.source, since, records), timeout)
        if not self._answered(reply):
            self.acked = -1  # ask again: the host may have restarted with less
            return False
        self.batches += 1
        if int(reply) <= since and len(records):
            self.refused += 1  # it has less than we thought: re-send from its number
        self.acked = int(reply)
        return self.acked < written

    def flush(self, timeout_s: float) -> bool:
        """Wait until the learner has acknowledged every written record; ``False`` on
        timeout (the log still has them: a resume sends them)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.acked >= self.log.written:
                return True
            time.sleep(0.01)
        return False

    # ---------------------------------------------------------------------- polling
    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.cfg.weights_every_s)

    def poll_once(self) -> None:
        """The learner's status into the control block; newer weights into the buffer."""
        t0 = time.monotonic()
        status = call(self.host.poll.remote(self.instance, self.remote_version, self.source),
                      self.cfg.call_timeout_s)
        if not self._answered(status):
            return
        self.status = status
        for key, word in STATUS.items():
            self.control[word] = status[key]
        if status["instance"] not in self.instances:
            self.instances.append(status["instance"])
        if "weights" in status:
            vector, version, age_s = status["weights"]
            local = max(version, self.publisher.version + 1)  # a new instance may count lower
            self.publisher.publish(vector, local)
            self.control[ctl.PUBLISHED] = local
            self.instance, self.remote_version = status["instance"], version
            self.weights += 1
            self.weight_age.append(age_s + (time.monotonic() - t0) / 2)

    def figures(self) -> dict[str, Any]:
        """What the link did, for ``runtime_stats.json``."""
        back = [b - a for a, b in self.outages]
        return {"source": self.source, "acked": self.acked, "batches": self.batches,
                "failed_calls": self.failed_calls, "refused_batches": self.refused,
                "weights_fetched": self.weights, "learner_instances": len(self.instances),
                "outages": [[round(a, 3), round(b, 3)] for a, b in self.outages],
                "longest_outage_s": max(back) if back else 0.0,
                "weight_age_s": percentiles(self.weight_age)}
