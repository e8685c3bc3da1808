"""How things start: `mbpo-arm` (`mbpo_launch.cli`, the composition root) and the async runtime."""
