"""Tasks as ``gymnasium.Env`` over any robot backend (:mod:`.reach`), their settings
(:mod:`.config`), the pure reward and termination functions (:mod:`.tasks`) and the factory
that builds an env from the config (:mod:`.factory`).

Importing :mod:`mbpo_arm.envs.reach` registers ``ArmReach-v0``; ``gymnasium.make(
"mbpo_arm.envs.reach:ArmReach-v0")`` imports it first.
"""
