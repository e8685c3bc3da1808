"""How things start: the `mbpo-arm` command line (`mbpo_arm.launch.cli`), the builders that
wire config, backend, env and agent (`.build`), the commands, and the async runtime."""
