"""The robot interface every backend implements (``hardware.robot``) and the safety shield in
front of it (``hardware.shield``)."""
