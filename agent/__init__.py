"""mbpo-arm: agent."""
