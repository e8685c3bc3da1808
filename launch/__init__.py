"""How things start: `mbpo-arm` (`mbpo_arm.launch.cli`, the composition root) and the async
runtime."""
