"""``ArmReach-v0``: move the end effector to a random target, a thin task over the control
loop (:class:`hardware.loop.ControlLoop`) of any backend.

Observation ``[2 J + 9]``: joint positions ``[J]``, joint velocities ``[J]``, end-effector
position ``[3]``, target position ``[3]``, and the offset target - end effector ``[3]`` (see
:class:`envs.tasks.ReachLayout`).
Action ``[J]`` in ``[-1, 1]``: joint-position deltas, scaled by ``action_scale`` rad per step,
added to the previous command (not to the measured position: a position servo sags under
gravity, so adding to the measured position would make a zero action drift downwards).
Reward: minus the distance to the target minus a small action cost. Success: within
``success_threshold`` of the target. The episode ends only by its time limit (``truncated``,
set by gymnasium's ``TimeLimit``), never by ``terminated``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from mbpo_arm.envs.config import ReachConfig
from mbpo_arm.envs.tasks import (
    ReachLayout,
    TaskFunctions,
    never_terminates,
    reach_derive,
    reach_distance,
    reach_relabel,
    reach_reward,
)
from mbpo_arm.hardware.loop import ControlLoop
from mbpo_arm.sim.config import TwinConfig
from mbpo_arm.sim.kinematics import ArmKinematics
from mbpo_arm.sim.twin import Marker, TwinRobot

VIDEO_CAMERA = "workspace"  # the MJCF camera that frames the reach workspace
VIDEO_SIZE = (480, 360)  # width, height of a rendered frame (px)
TARGET_RGB = (0.1, 0.85, 0.25)  # the target marker's colour: green, unlike any part of the arm
TARGET_DOT_RADIUS = 0.008  # the target's dot (m); the sphere around it is the success radius


class ArmReachEnv(gym.Env):
    """Reach a random target with the end effector of the arm ``loop`` drives.

    Args:
        loop: the control loop of any backend (:func:`envs.factory.make_loop` builds it with
            the shield inside); ``None``: the MuJoCo twin at 20 Hz, unshielded, placed at
            each reset pose.
        kinematics: forward kinematics of the arm; ``None`` builds it from the twin's model.
        config: the task; ``None`` for the defaults.
        render_mode: ``"rgb_array"`` renders the twin offscreen.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, loop: ControlLoop | None = None,
                 kinematics: ArmKinematics | None = None, config: ReachConfig | None = None,
                 render_mode: str | None = None) -> None:
        self.config = config or ReachConfig()
        self.loop = loop if loop is not None else ControlLoop(
            TwinRobot(TwinConfig()), None, 20.0, place_resets=True)
        self.loop.connect()
        backend = self.loop.backend
        names = list(backend.joint_names)
        missing = [j for j in self.config.joints if j not in names]
        if missing:
            raise ValueError(f"task.reach.joints {missing} are not joints of the backend; "
                             f"it has {names}")
        self._idx = np.array([names.index(j) for j in self.config.joints])
        self.kinematics = kinematics or ArmKinematics.from_config(
            backend.config if isinstance(backend, TwinRobot) else TwinConfig())
        self.layout = ReachLayout(len(self._idx))
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1 / self.loop.period)}
        limits = backend.limits
        self._lower, self._upper = limits.lower[self._idx], limits.upper[self._idx]
        self._home_all = np.array(backend.home_position, dtype=np.float64)
        if self.config.home is not None:
            self._home_all[self._idx] = self.config.home
        j = len(self._idx)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (j,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.layout.obs_dim,),
                                                np.float64)
        self._command = self._home_all.copy()
        self._target = np.zeros(3)
        self._obs = np.zeros(self.layout.obs_dim)

    # --------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = self._home_all.copy()
        noise = self.np_random.uniform(-1, 1, len(self._idx)) * self.config.init_noise
        start[self._idx] = np.clip(start[self._idx] + noise, self._lower, self._upper)
        state = self.loop.reset(start)
        self._command = np.array(state.position, dtype=np.float64)
        self._target = self._sample_target() if not options or "target" not in options \
            else np.asarray(options["target"], dtype=np.float64)
        obs = self._observe(state.position, state.velocity)
        return obs, {"distance": float(reach_distance(obs, self.layout))}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action has shape {action.shape}, expected "
                             f"{self.action_space.shape} for joints {self.config.joints}")
        clipped = np.clip(action, -1.0, 1.0)
        base, idx = self._command, self._idx
        proposed = base.copy()
        proposed[idx] = np.clip(base[idx] + clipped * self.config.action_scale,
                                self._lower, self._upper)
        tick = self.loop.tick(proposed)
        sent, state = tick.sent, tick.state
        self._command = sent
        # The transition stores the executed action: what the shield let through and the
        # backend actually sent, normalized back into [-1, 1].
        executed = np.where(sent[idx] == base[idx] + clipped * self.config.action_scale, clipped,
                            (sent[idx] - base[idx]) / self.config.action_scale)
        executed = np.clip(executed, -1.0, 1.0).astype(np.float32)
        obs_prev = self._obs
        obs = self._observe(state.position, state.velocity)
        reward = float(reach_reward(obs_prev, executed, obs, layout=self.layout,
                                    action_cost=self.config.action_cost))
        terminated = bool(never_terminates(obs_prev, executed, obs))
        distance = float(reach_distance(obs, self.layout))
        info = {"distance": distance, "is_success": distance < self.config.success_threshold,
                "executed_action": executed}
        if self.loop.shield is not None:
            info["shield"] = tick.reasons  # the rules that changed the command, if any
        return obs, reward, terminated, False, info

    def hold(self) -> np.ndarray:
        """One control period holding the last command: no new motion, but the command
        stream goes on (the servos keep getting goals). No step of the episode
        (the time limit does not count it, no reward); returns the observation ``[2 J + 9]``
        after it. The async actor holds this way while an episode gate waits."""
        tick = self.loop.hold()
        self._command = tick.sent
        return self._observe(tick.state.position, tick.state.velocity)

    def render(self) -> np.ndarray | None:
        """``[360, 480, 3]`` uint8 from the twin's ``workspace`` camera, the target drawn as a
        green dot inside a translucent sphere of the success radius (more opaque once the end
        effector is within it); ``None`` unless ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        twin = self.loop.backend
        if not isinstance(twin, TwinRobot):
            raise RuntimeError("this backend cannot render; use backend=mujoco for video")
        reached = bool(reach_distance(self._obs, self.layout) < self.config.success_threshold)
        region = (*TARGET_RGB, 0.45 if reached else 0.2)
        markers = (Marker(self._target, TARGET_DOT_RADIUS, (*TARGET_RGB, 1.0)),
                   Marker(self._target, self.config.success_threshold, region, glow=0.4))
        return twin.render(*VIDEO_SIZE, camera=VIDEO_CAMERA, markers=markers)

    def close(self) -> None:
        self.loop.close()

    # ------------------------------------------------------------------------- helpers
    def task_functions(self) -> TaskFunctions:
        """The pure reward, termination and observation completion of this env, for model
        rollouts (torch ``[B, D]``; see :func:`envs.tasks.reach_derive`)."""
        layout, cost = self.layout, self.config.action_cost
        chain = self.kinematics.torch_chain(self.config.joints)

        def reward(obs: Any, action: Any, next_obs: Any) -> Any:
            return reach_reward(obs, action, next_obs, layout=layout, action_cost=cost)

        def derive(obs: Any, next_obs: Any) -> Any:
            return reach_derive(obs, next_obs, layout=layout, ee_fn=chain)

        return TaskFunctions(reward, never_terminates, derive,
                             partial(reach_relabel, layout=layout))

    def _observe(self, position: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        q = np.asarray(position, dtype=np.float64)
        ee = self.kinematics.ee_position(q)
        obs = np.concatenate([q[self._idx], np.asarray(velocity)[self._idx], ee, self._target,
                              self._target - ee])
        self._obs = obs
        return obs.copy()

    def _sample_target(self) -> np.ndarray:
        """A reachable target: the end effector of a random joint configuration in the middle
        ``target_fraction`` of each controlled joint's range, above ``min_target_height``."""
        mid, half = (self._lower + self._upper) / 2, (self._upper - self._lower) / 2
        for _ in range(1000):
            q = self._home_all.copy()
            q[self._idx] = mid + self.np_random.uniform(-1, 1, len(mid)) * half \
                * self.config.target_fraction
            ee = self.kinematics.ee_position(q)
            if ee[2] >= self.config.min_target_height:
                return ee
        raise RuntimeError("no reachable target above task.reach.min_target_height in 1000 "
                           "draws; lower it or widen task.reach.target_fraction")


if "ArmReach-v0" not in gym.registry:
    gym.register(id="ArmReach-v0", entry_point="mbpo_arm.envs.reach:ArmReachEnv",
                 max_episode_steps=100)
