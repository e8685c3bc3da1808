"""Learning: SAC, the dynamics ensemble, rollouts, the training loop, replay, checkpoints."""
