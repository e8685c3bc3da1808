"""The robot interface every backend implements (``hardware.robot``)."""
