"""mbpo-arm: sim."""
