"""The frames of ``mbpo-arm eval --video``: each with a caption band (episode, step, distance to
the target, success), each episode's last frame held so that its result can be read, and a GIF
palette that keeps the small vivid things (the target marker, the caption's colours).

The scene itself (the arm, the target marker, the camera) is the env's ``render()``
(:meth:`envs.reach.ArmReachEnv.render`); this module only writes on it, with Pillow's default
font (no new dependency). Frames are ``[H, W, 3]`` uint8 throughout.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BAND = 0.12  # caption band height, a fraction of the frame (the camera leaves it free)
HOLD_S = 1.0  # an episode's last frame stays this long in the video
WHITE, GREEN, RED = (255, 255, 255), (90, 230, 110), (255, 120, 100)


def caption(frame: np.ndarray, left: str, right: str = "",
            colour: tuple[int, int, int] = WHITE) -> np.ndarray:
    """``frame`` ``[H, W, 3]`` with a dark band at the top: ``left`` in white, ``right``
    right-aligned in ``colour``. Returns a new array."""
    image = Image.fromarray(np.ascontiguousarray(frame))
    h, w = frame.shape[:2]
    band = max(16, round(BAND * h))
    draw = ImageDraw.Draw(image, "RGBA")
    draw.rectangle((0, 0, w, band), fill=(0, 0, 0, 170))
    font = ImageFont.load_default(size=max(10, round(band * 0.42)))
    y = band // 2
    draw.text((band // 3, y), left, fill=WHITE, font=font, anchor="lm")
    if right:
        draw.text((w - band // 3, y), right, fill=colour, font=font, anchor="rm")
    return np.asarray(image)


class CaptionedVideo(gym.Wrapper):
    """``env`` whose ``render()`` frames carry a caption from its ``info`` (``distance``,
    ``is_success``) and the episode count, e.g. ``episode 2/5  step 37  distance 0.034 m``
    and, right, ``reached`` / ``success`` / ``missed``.

    Attributes:
        ends: indices of the frames rendered after an episode's last step (see
            :func:`hold_episode_ends`).
    """

    def __init__(self, env: gym.Env, episodes: int) -> None:
        super().__init__(env)
        self.episodes = episodes
        self.ends: list[int] = []
        self._episode, self._step, self._frames = 0, 0, 0
        self._info: dict[str, Any] = {}
        self._done = False

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._episode, self._step, self._info, self._done = self._episode + 1, 0, info, False
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._step, self._info, self._done = self._step + 1, info, terminated or truncated
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        frame = self.env.render()
        left = f"episode {self._episode}/{self.episodes}  step {self._step}"
        if "distance" in self._info:
            left += f"  distance {self._info['distance']:.3f} m"
        success = self._info.get("is_success")
        if success is None:
            right, colour = "", WHITE
        elif self._done:
            right, colour = ("success", GREEN) if success else ("missed", RED)
        else:
            right, colour = ("reached", GREEN) if success else ("", WHITE)
        if self._done:
            self.ends.append(self._frames)
        self._frames += 1
        return caption(frame, left, right, colour)


def hold_episode_ends(frames: list[np.ndarray], ends: list[int], fps: int,
                      hold_s: float = HOLD_S) -> list[np.ndarray]:
    """``frames`` with each frame in ``ends`` repeated to last ``hold_s`` seconds at ``fps``."""
    repeat = max(1, round(hold_s * fps))
    held = set(ends)
    out: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        out.extend([frame] * (repeat if i in held else 1))
    return out


def gif_palette(frames: list[np.ndarray], colours: int = 256, accents: int = 24) -> Image.Image:
    """One palette for a whole GIF: ``colours - accents`` adaptive colours from a sample of
    ``frames`` and ``accents`` more from their vivid pixels only. A per-frame adaptive palette
    spends its colours on the table and the sky, and the few pixels of the target marker come
    out grey-green."""
    step = max(1, len(frames) // 16)
    sample = np.concatenate([f.reshape(-1, 3) for f in frames[::step]])
    vivid = sample[np.ptp(sample.astype(np.int16), axis=1) > 100]
    palette: list[int] = []
    for pixels, n in ((sample, colours - accents), (vivid, accents)):
        if len(pixels):
            image = Image.fromarray(np.ascontiguousarray(pixels[None]))
            palette += image.quantize(n, method=Image.Quantize.MEDIANCUT).getpalette()[:3 * n]
    out = Image.new("P", (1, 1))
    out.putpalette(palette + [0] * (768 - len(palette)))
    return out


def write_gif(path: Any, frames: list[np.ndarray], fps: int) -> None:
    """``frames`` as a looping GIF at ``fps`` with :func:`gif_palette` (no dithering: crisp
    text). Pillow merges identical consecutive frames into one longer one."""
    palette = gif_palette(frames)
    images = [Image.fromarray(np.ascontiguousarray(f)).quantize(palette=palette,
                                                                dither=Image.Dither.NONE)
              for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0)
