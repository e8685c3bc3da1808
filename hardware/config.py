"""The settings of the hardware layer, as typed dataclasses: the only source of their defaults.

Light on purpose (no serial port, no numpy): the config layer (:mod:`mbpo_arm.configs.schema`)
and ``mbpo-arm --help`` import this module without loading any driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

# The shield's limits files shipped with the package (configs/limits/<name>.yaml).
LIMITS_DIR = Path(str(files("mbpo_arm.configs") / "limits"))


def limits_path(name: str) -> Path:
    """``so101`` -> the shipped ``configs/limits/so101.yaml``; a path stays a path."""
    path = Path(name).expanduser()
    if path.suffix or len(path.parts) > 1:
        return path
    return LIMITS_DIR / f"{name}.yaml"


# The joints of the SO-101-class arm (the shipped twin), in command order.
JOINTS = ("base_yaw", "shoulder_pitch", "elbow_pitch", "wrist_pitch", "wrist_roll", "gripper")

PROTOCOLS = ("feetech", "dynamixel")  # serial-bus protocols (hardware/feetech.py, dynamixel.py)
SIGNALS = ("SIGUSR1", "SIGUSR2")

ON_TIMEOUT = ("hold", "release")



@dataclass
class SerialConfig:
    """A serial servo-bus arm (``--backend serial`` plus a ``robot=`` preset)."""

    port: str = "/dev/ttyACM0"  # the bus adapter's device
    protocol: str = "feetech"  # feetech (STS3215, SO-100/SO-101) or dynamixel (Protocol 2.0)
    baudrate: int = 1_000_000  # what the servos are set to
    ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # servo ids, one per joint, in joint order
    joint_names: tuple[str, ...] = JOINTS  # joints in command order
    calibration: str = "~/.config/mbpo-arm/so101.json"  # written by `mbpo-arm calibrate`
    timeout: float = 0.02  # seconds to wait for each servo's reply
    retries: int = 2  # extra tries of a transaction with a missing or corrupt reply
    velocity_limit: float = 4.7  # rad/s per joint (STS3215 no-load speed at 12 V)
    effort_limit: float = 3.0  # N m per joint (STS3215 stall torque at 12 V)
    limit_margin: float = 0.02  # rad kept free inside the calibrated range
    home: tuple[float, ...] | None = None  # rest pose (rad); None: the middle of each range
    hold_s: float = 0.5  # seconds close() holds position before releasing torque
    watchdog: float = 0.1  # Dynamixel Bus Watchdog (s, multiples of 20 ms); 0 turns it off
    # the pose `mbpo-arm calibrate` asks for as the zero of every joint
    zero_pose: str = "upper arm vertical, forearm and gripper level, pointing forward"
    model_path: str | None = None  # the arm's MJCF (kinematics, emulator); None: SO-101 twin
    actuator_names: tuple[str, ...] | None = None  # MJCF actuators; None: <joint>_act
    ee_site: str = "ee_site"  # end-effector site of the MJCF

    def __post_init__(self) -> None:
        self.ids = tuple(int(i) for i in self.ids)
        self.joint_names = tuple(str(j) for j in self.joint_names)
        if self.actuator_names is not None:
            self.actuator_names = tuple(str(a) for a in self.actuator_names)
        if self.home is not None:
            self.home = tuple(float(h) for h in self.home)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"backend.protocol={self.protocol!r} is not supported; choose "
                             f"one of {list(PROTOCOLS)}")
        if len(self.ids) != len(self.joint_names) or len(set(self.ids)) != len(self.ids):
            raise ValueError(f"backend.ids {list(self.ids)} must be distinct, one per joint "
                             f"of backend.joint_names {list(self.joint_names)}")
        if any(not 0 <= i < 0xFD for i in self.ids):
            raise ValueError(f"backend.ids {list(self.ids)}: servo ids are 0..252")
        if self.home is not None and len(self.home) != len(self.joint_names):
            raise ValueError(f"backend.home has {len(self.home)} values for "
                             f"{len(self.joint_names)} joints")
        for name in ("baudrate", "timeout", "velocity_limit", "effort_limit"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"backend.{name} must be > 0, got {getattr(self, name)}")
        if self.retries < 0 or self.limit_margin < 0 or self.hold_s < 0 or self.watchdog < 0:
            raise ValueError("backend.retries, limit_margin, hold_s and watchdog must be >= 0")
        if self.protocol == "dynamixel" and self.watchdog > 127 * 0.02:
            raise ValueError(f"backend.watchdog={self.watchdog} s is beyond the Dynamixel "
                             "Bus Watchdog's 2.54 s; lower it (or 0 to turn it off)")



@dataclass
class WatchdogSettings:
    """Rule 7: stale state holds position, then may release; a stalled loop is reported."""

    state_timeout_periods: float = 3.0  # state older than this many control periods: hold
    command_timeout_periods: float = 5.0  # no tick for this many periods: a stalled loop
    on_timeout: str = "hold"  # hold, or release: also release torque after release_after_s
    release_after_s: float = 1.0  # on_timeout=release: seconds of holding before releasing
    # report a stalled loop from a thread that reads its heartbeat only; null: on hardware
    stall_monitor: bool | None = None

    def __post_init__(self) -> None:
        for name in ("state_timeout_periods", "command_timeout_periods"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"shield.watchdog.{name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.on_timeout not in ON_TIMEOUT:
            raise ValueError(f"shield.watchdog.on_timeout={self.on_timeout!r} is not allowed; "
                             f"choose one of {', '.join(ON_TIMEOUT)}")
        if self.release_after_s < 0:
            raise ValueError(f"shield.watchdog.release_after_s must be >= 0, got "
                             f"{self.release_after_s}")



@dataclass
class EStopSettings:
    """Rule 8: the latched emergency stop's triggers (a ROS 2 topic is added by that backend)."""

    key: str | None = "e"  # a key in the terminal (read only when stdin is a TTY); r resets
    signal: str | None = "SIGUSR1"  # `kill -USR1 <pid>` triggers it; null: no signal
    file: str | None = None  # a path: the stop triggers while this file exists

    def __post_init__(self) -> None:
        if self.key is not None and (len(str(self.key)) != 1 or str(self.key) in "r\n"):
            raise ValueError(f"shield.estop.key={self.key!r} must be one character other than "
                             "r (reset) or null")
        if self.signal is not None and self.signal not in SIGNALS:
            raise ValueError(f"shield.estop.signal={self.signal!r} is not allowed; choose one "
                             f"of {', '.join(SIGNALS)} or null")



@dataclass
class ShieldSettings:
    """The run's ``shield:`` section (``configs/train.yaml``)."""

    enabled: bool = True  # false only for simulated backends; hardware refuses to start
    limits_file: str | None = "so101"  # a name under configs/limits/ (so101) or a path; null:
    #   the twin's own model limits (simulated backends only)
    collision: bool = True  # rule 6, the collision check against the table and the arm
    slow_reset: bool | None = None  # move to reset poses through the shield; null: hardware
    #   backends and runtime=async do, the twin in runtime=sync teleports
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    estop: EStopSettings = field(default_factory=EStopSettings)

