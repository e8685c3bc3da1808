"""The asynchronous runtime: a fixed-rate actor and a background learner (issue 4).

:mod:`~agent.runtime.replay_log` (crash-safe transition log), :mod:`~agent.runtime.weights`
(versioned policy weights in shared memory), :mod:`~agent.runtime.actor` (the fixed-rate
loop), :mod:`~agent.runtime.learner` (the learner process) and
:mod:`~agent.runtime.supervisor` (starts, watches and restarts the learner).
"""
