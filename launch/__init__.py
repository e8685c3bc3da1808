"""mbpo-arm: launch."""
