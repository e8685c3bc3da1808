"""How things start: ``mbpo-arm`` (``launch.cli``, the composition root) and the async runtime."""
