"""mbpo-arm: envs."""
