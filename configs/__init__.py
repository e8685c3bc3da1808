"""mbpo-arm: configs."""
