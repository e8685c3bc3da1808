"""The interface every backend implements (``hardware.robot``), the one control loop that
drives it (``hardware.loop``) and the safety shield inside that loop (``hardware.shield``)."""
