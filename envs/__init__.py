"""Tasks as ``gymnasium.Env`` over any robot backend, and the factory that builds them.

Importing this package registers ``ArmReach-v0``.
"""

import gymnasium as gym

if "ArmReach-v0" not in gym.registry:
    gym.register(id="ArmReach-v0", entry_point="envs.reach:ArmReachEnv", max_episode_steps=100)
