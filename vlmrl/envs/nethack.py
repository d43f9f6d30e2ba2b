"""NetHack tasks from NLE as gymnasium envs that expose the game message as text and the tty screen as an image.

ONI's intrinsic reward reads the one-line game message (``info["message"]``); videos and image reward
models read the 24x80 terminal drawn as RGB (``info["frame"]``, ``render()``). The policy sees a compact
``float32`` vector (an egocentric crop of the map characters plus the bottom-line stats) so that
stable-baselines3's ``MlpPolicy`` trains on it directly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

TASKS = {
    "score": "NetHackScore-v0",
    "staircase": "NetHackStaircase-v0",
    "stairs": "NetHackStaircase-v0",
    "pet": "NetHackStaircasePet-v0",
    "oracle": "NetHackOracle-v0",
    "gold": "NetHackGold-v0",
    "eat": "NetHackEat-v0",
    "scout": "NetHackScout-v0",
    "challenge": "NetHackChallenge-v0",
}

# The 16 curses colours NetHack's tty uses (index = tty_colors value; bit 3 = bright).
TTY_PALETTE = np.array(
    [
        [0, 0, 0], [170, 0, 0], [0, 170, 0], [170, 85, 0], [0, 0, 170], [170, 0, 170], [0, 170, 170],
        [170, 170, 170], [85, 85, 85], [255, 85, 85], [85, 255, 85], [255, 255, 85], [85, 85, 255],
        [255, 85, 255], [85, 255, 255], [255, 255, 255],
    ],
    dtype=np.uint8,
)  # fmt: skip

CELL_H, CELL_W = 12, 6  # pixels per terminal character: a 24x80 tty becomes a 288x480 frame
OBSERVATION_KEYS = ("chars", "blstats", "message", "tty_chars", "tty_colors")
BLSTATS_SCALE = np.array(
    [79, 21, 25, 25, 25, 25, 25, 25, 1e4, 30, 30, 1e3, 1e3, 30, 30, 50, 40, 1e5, 1e5, 5, 5, 5, 5, 1, 8, 1, 1],
    dtype=np.float32,
)  # rough ranges of NLE's 27 bottom-line stats, to keep policy inputs near [0, 1]


@lru_cache(maxsize=1)
def glyph_atlas() -> np.ndarray:
    """Bitmaps of the 256 byte values drawn with Pillow's built-in font: ``bool (256, CELL_H, CELL_W)``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") else None
    font = font or ImageFont.load_default()
    atlas = np.zeros((256, CELL_H, CELL_W), dtype=bool)
    for code in range(33, 127):
        img = Image.new("L", (CELL_W, CELL_H), 0)
        ImageDraw.Draw(img).text((0, 0), chr(code), fill=255, font=font)
        atlas[code] = np.asarray(img) > 96
    return atlas


def render_tty(tty_chars: np.ndarray, tty_colors: np.ndarray) -> np.ndarray:
    """Draw a terminal screen as an RGB image.

    Args:
        tty_chars: ``uint8 (rows, cols)`` character codes.
        tty_colors: ``int8 (rows, cols)`` curses colour indices (0-15).

    Returns:
        ``uint8 (rows * 12, cols * 6, 3)``; white-on-black for colour 0 so plain text stays visible.

    Example:
        >>> render_tty(np.full((24, 80), ord("@"), np.uint8), np.full((24, 80), 15, np.int8)).shape
        (288, 480, 3)
    """
    rows, cols = tty_chars.shape
    colors = np.asarray(tty_colors, dtype=np.int64) & 15
    colors[colors == 0] = 7
    mask = glyph_atlas()[tty_chars]  # (rows, cols, CELL_H, CELL_W)
    rgb = TTY_PALETTE[colors][:, :, None, None, :] * mask[..., None]  # (rows, cols, CELL_H, CELL_W, 3)
    return np.ascontiguousarray(rgb.transpose(0, 2, 1, 3, 4)).reshape(rows * CELL_H, cols * CELL_W, 3)


def decode_message(message: np.ndarray) -> str:
    """NLE's null-padded ``uint8 (256,)`` message as a ``str`` (empty when the game said nothing)."""
    return bytes(message).split(b"\0", 1)[0].decode("latin-1").strip()


class NetHackText(gym.Wrapper):
    """Wraps an NLE task: vector observations for the policy, message text and tty frame in ``info``.

    Every step's ``info`` carries ``"message"`` (``str``), ``"frame"`` (``uint8 (288, 480, 3)``, if
    ``frame_in_info``) and ``"env_reward"`` (the task's own reward, kept unchanged as the step reward).

    Args:
        env: an NLE env created with at least the keys in :data:`OBSERVATION_KEYS`.
        crop: side of the egocentric window of map characters around the hero (odd).
        frame_in_info: draw the tty into ``info["frame"]`` at every step (videos, image rewards).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, env: gym.Env, crop: int = 9, frame_in_info: bool = True):
        super().__init__(env)
        missing = [k for k in OBSERVATION_KEYS if k not in env.observation_space.spaces]
        if missing:
            raise ValueError(f"NLE env lacks observation keys {missing}: create it with observation_keys={OBSERVATION_KEYS}")
        if crop % 2 != 1 or crop < 1:
            raise ValueError(f"crop must be a positive odd number, got {crop}: pass envs.crop=9")
        self.crop = crop
        self.frame_in_info = frame_in_info
        self.render_mode = "rgb_array"
        size = crop * crop + len(BLSTATS_SCALE)
        self.observation_space = gym.spaces.Box(-1.0, 10.0, shape=(size,), dtype=np.float32)
        self._last: dict[str, np.ndarray] | None = None

    def _vector(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        chars, stats = obs["chars"], obs["blstats"]
        half = self.crop // 2
        x, y = int(stats[0]), int(stats[1])
        padded = np.pad(chars, half, constant_values=ord(" "))
        window = padded[y : y + self.crop, x : x + self.crop]
        out = np.empty(self.observation_space.shape, dtype=np.float32)
        out[: self.crop * self.crop] = window.reshape(-1) / 127.0
        out[self.crop * self.crop :] = np.clip(stats / BLSTATS_SCALE, -1.0, 10.0)
        return out

    def _info(self, obs: dict[str, np.ndarray], info: dict[str, Any], reward: float) -> dict[str, Any]:
        info = dict(info)
        info["message"] = decode_message(obs["message"])
        info["env_reward"] = float(reward)
        if self.frame_in_info:
            info["frame"] = render_tty(obs["tty_chars"], obs["tty_colors"])
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a new game; ``info`` carries the opening message and frame."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._last = obs
        return self._vector(obs), self._info(obs, info, 0.0)

    def step(self, action):
        """One game action; the reward is the task's own reward (also in ``info["env_reward"]``)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last = obs
        return self._vector(obs), reward, terminated, truncated, self._info(obs, info, reward)

    def render(self) -> np.ndarray:
        """The current tty screen as ``uint8 (288, 480, 3)``."""
        if self._last is None:
            raise RuntimeError("render() before reset(): call env.reset() first")
        return render_tty(self._last["tty_chars"], self._last["tty_colors"])


def make_nethack(
    task: str = "score",
    max_episode_steps: int = 1000,
    crop: int = 9,
    frame_in_info: bool = True,
    render_mode: str | None = "rgb_array",
    **nle_kwargs: Any,
) -> NetHackText:
    """Create an NLE task wrapped by :class:`NetHackText`.

    Args:
        task: one of :data:`TASKS` (``score``, ``gold``, ``eat``, ``staircase``, ``oracle``...) or an NLE env id.
        max_episode_steps: NLE's own step limit (episodes end truncated).
        crop: egocentric window size of the policy observation.
        frame_in_info: draw the tty into every step's info.
        render_mode: only ``"rgb_array"`` (or ``None``) is supported; frames come from the tty.
        **nle_kwargs: passed to NLE (e.g. ``character="mon-hum-neu-mal"``).
    """
    try:
        import nle  # noqa: F401  (registers the NetHack* envs)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("NetHack needs NLE: pip install -e '.[nethack]'") from e
    env_id = TASKS.get(task.lower(), task)
    if env_id not in gym.registry:
        raise ValueError(f"unknown NetHack task {task!r}: pass envs.task= one of {sorted(TASKS)}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode {render_mode!r} unsupported: pass envs.render_mode=rgb_array")
    env = gym.make(env_id, observation_keys=OBSERVATION_KEYS, max_episode_steps=max_episode_steps, **nle_kwargs)
    return NetHackText(env, crop=crop, frame_in_info=frame_in_info)
