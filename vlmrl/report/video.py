"""Rollout videos: frames with the per-step reward drawn as a curve underneath (imageio-ffmpeg mp4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

from vlmrl.agents.base import VideoRecorder
from vlmrl.rewards.base import RewardModel
from vlmrl.rollouts import Policy, iter_episodes, score_in_batches
from vlmrl.runs import atomic_path

_CURVE_BG = (250, 250, 250)
_DONE_COLOR = (31, 119, 180)
_TODO_COLOR = (200, 200, 200)


def reward_panel(
    rewards: np.ndarray, t: int, width: int, height: int, episode_starts: Sequence[int] = (), title: str = ""
) -> np.ndarray:
    """Draw the reward curve (full run in grey, up to step ``t`` in blue, a dot at ``t``) as ``uint8 (h, w, 3)``."""
    img = Image.new("RGB", (width, height), _CURVE_BG)
    draw = ImageDraw.Draw(img)
    n = len(rewards)
    lo, hi = float(np.min(rewards)), float(np.max(rewards))
    span = hi - lo if hi > lo else 1.0
    pad_top, pad_bottom, pad_x = 14, 4, 4
    xs = pad_x + np.arange(n) * (width - 2 * pad_x) / max(n - 1, 1)
    ys = pad_top + (1.0 - (np.asarray(rewards) - lo) / span) * (height - pad_top - pad_bottom)
    for s in episode_starts:
        if 0 < s < n:
            draw.line([(xs[s], pad_top), (xs[s], height - pad_bottom)], fill=(230, 180, 180))
    pts = list(zip(xs.tolist(), ys.tolist(), strict=True))
    if n > 1:
        draw.line(pts, fill=_TODO_COLOR, width=1)
        draw.line(pts[: t + 1], fill=_DONE_COLOR, width=2) if t >= 1 else None
    x, y = pts[t]
    draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(214, 39, 40))
    # ~6 px per character in PIL's default font: the longest label that fits the frame's width.
    labels = (
        f"{title}  r[{t}]={rewards[t]:.4f}  (min {lo:.3g}, max {hi:.3g})",
        f"r[{t}]={rewards[t]:.4f} (min {lo:.3g}, max {hi:.3g})",
        f"r[{t}]={rewards[t]:.3f}",
    )
    text = next((s for s in labels if len(s) * 6 <= width - 2 * pad_x), labels[-1])
    draw.text((pad_x, 1), text, fill=(0, 0, 0))
    return np.asarray(img)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    rewards: np.ndarray,
    fps: int = 30,
    title: str = "",
    episode_starts: Sequence[int] = (),
) -> Path:
    """Write frames with the reward curve under them to an mp4; returns the path.

    Args:
        path: output file (``.mp4``); parent folders are created; written atomically.
        frames: ``uint8 (T, H, W, 3)``.
        rewards: ``(T,)`` reward of each frame.
        fps: frames per second.
        title: text drawn on the curve panel.
        episode_starts: indices where a new episode begins (drawn as vertical lines).
    """
    frames = np.asarray(frames)
    rewards = np.asarray(rewards, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0 or len(rewards) != len(frames):
        raise ValueError(
            f"need one reward per frame and at least one frame: {len(frames)} frames, {len(rewards)} rewards"
        )
    _, h, w, _ = frames.shape
    panel_h = max(48, (h // 3) // 2 * 2)
    out_w, out_h = w + (w % 2), h + panel_h + (h % 2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(path) as tmp,
        imageio.get_writer(
            tmp,
            fps=fps,
            codec="libx264",
            quality=7,
            macro_block_size=1,
            ffmpeg_log_level="error",
            pixelformat="yuv420p",
        ) as writer,
    ):
        for t, frame in enumerate(frames):
            canvas = np.full((out_h, out_w, 3), 255, dtype=np.uint8)
            canvas[:h, :w] = frame
            canvas[out_h - panel_h :, :w] = reward_panel(rewards, t, w, panel_h, episode_starts, title)
            writer.append_data(canvas)
    return path


class RolloutVideos(VideoRecorder):
    """Plays a policy in a fresh ``env_fn()`` and writes an mp4 with a reward curve under the frames.

    The curve is ``reward.evaluate`` of each step's ``info[reward.input_key]``, or the env's own reward when
    ``reward`` is None. Frames are ``env.render()`` after each step (``frames="render"``) or the text envs'
    ``info["frame"]`` from the reset on (``frames="info"``, the reset frame scored too).
    """

    def __init__(self, env_fn: Callable, reward: RewardModel | None = None, fps: int = 30):
        self.env_fn, self.reward, self.fps = env_fn, reward, int(fps)

    def record(
        self,
        policy: Policy,
        path: Path,
        episodes: int,
        seed: int | None,
        title: str = "",
        frames: Literal["render", "info"] = "render",
        fps: int | None = None,
        stop: Callable[[dict], bool] | None = None,
    ) -> Path:
        """Play ``episodes`` (reset seeds ``seed``, ``seed + 1``, ...) and write them to ``path``."""
        seeds = [None if seed is None else int(seed) + ep for ep in range(int(episodes))]
        env = self.env_fn()
        try:
            played = list(iter_episodes(env, policy, seeds, frames=frames, stop=stop))
        finally:
            env.close()
        with_reset = frames == "info"
        starts = np.cumsum([0] + [len(ep.frames) for ep in played[:-1]]).tolist()
        if self.reward is not None:
            inputs = [x for ep in played for x in ep.inputs(self.reward.input_key, with_reset=with_reset)]
            curve, default_title = score_in_batches(self.reward, inputs), f"{type(self.reward).__name__} reward"
        else:
            parts = [np.concatenate([[0.0], ep.rewards]) if with_reset else ep.rewards for ep in played]
            curve, default_title = np.concatenate(parts), "env reward"
        stacked = np.stack([f for ep in played for f in ep.frames])
        return write_video(
            path, stacked, curve, fps=fps or self.fps, title=title or default_title, episode_starts=starts
        )
