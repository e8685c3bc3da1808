"""mbpo-arm: hardware."""
