"""The MuJoCo twin's settings, as a typed dataclass: the only source of its defaults.

Light on purpose (no mujoco): the config layer and ``mbpo-arm --help`` import it without
loading the physics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from mbpo_arm.hardware.config import JOINTS

# The shipped SO-101-class arm, found inside the installed package.
ASSET = Path(str(files("mbpo_arm.sim") / "assets" / "so101_arm.xml"))


@dataclass
class TwinConfig:
    """The MuJoCo twin backend (``--backend mujoco``, the default)."""

    model_path: str | None = None  # MJCF of the arm; None: the shipped SO-101-class arm
    joint_names: tuple[str, ...] = JOINTS  # joints the twin drives, in command order
    actuator_names: tuple[str, ...] = tuple(f"{j}_act" for j in JOINTS)  # one per joint
    ee_site: str = "ee_site"  # site at the end effector (between the gripper jaws)
    timestep: float | None = None  # physics step (s); None: the model's own (2 ms)

    def __post_init__(self) -> None:
        # Hydra/OmegaConf hands over ListConfig: store plain tuples of str.
        self.joint_names = _str_tuple(self.joint_names, "joint_names")
        self.actuator_names = _str_tuple(self.actuator_names, "actuator_names")
        self.ee_site = str(self.ee_site)
        if self.model_path is not None:
            self.model_path = str(self.model_path)
        if self.timestep is not None:
            self.timestep = float(self.timestep)
            if not self.timestep > 0:
                raise ValueError(f"backend.timestep must be > 0 or null, got {self.timestep}")
        if not self.joint_names:
            raise ValueError("backend.joint_names is empty; name the joints the twin drives")
        if len(self.joint_names) != len(self.actuator_names):
            raise ValueError(f"backend.joint_names has {len(self.joint_names)} entries but "
                             f"backend.actuator_names has {len(self.actuator_names)}; give one "
                             "actuator per joint, in the same order")
        for field_name in ("joint_names", "actuator_names"):
            names = getattr(self, field_name)
            if len(set(names)) != len(names):
                raise ValueError(f"backend.{field_name} has duplicates: {list(names)}")

    @property
    def path(self) -> Path:
        """The MJCF file this config loads."""
        return Path(self.model_path).expanduser() if self.model_path else ASSET



def _str_tuple(value: Sequence[str] | str, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"backend.{name} must be a list of names, got the string {value!r}")
    return tuple(str(v) for v in value)

