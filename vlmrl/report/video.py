"""Rollout videos: frames with the per-step reward drawn as a curve underneath (imageio-ffmpeg mp4)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

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
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    with imageio.get_writer(
        tmp, fps=fps, codec="libx264", quality=7, macro_block_size=1, ffmpeg_log_level="error", pixelformat="yuv420p"
    ) as writer:
        for t, frame in enumerate(frames):
            canvas = np.full((out_h, out_w, 3), 255, dtype=np.uint8)
            canvas[:h, :w] = frame
            canvas[out_h - panel_h :, :w] = reward_panel(rewards, t, w, panel_h, episode_starts, title)
            writer.append_data(canvas)
    os.replace(tmp, path)
    return path


def record_episodes(
    policy: Callable[[np.ndarray], np.ndarray], env, episodes: int, seed: int | None = None, input_key: str = "frame"
) -> tuple[np.ndarray, list, list[int], list[float]]:
    """Run ``episodes`` episodes of ``policy`` in ``env`` and keep every frame.

    Returns:
        frames ``uint8 (T, H, W, 3)`` (from ``env.render()`` after each step), the reward-model inputs
        ``info[input_key]`` of each step (list of length T), the episode start indices, and the env's own
        per-step rewards.
    """
    frames, inputs, starts, env_rewards = [], [], [], []
    for ep in range(episodes):
        obs, info = env.reset(seed=None if seed is None else seed + ep)
        starts.append(len(frames))
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            frame = env.render()
            if frame is None:
                raise ValueError("env.render() returned None: create the env with render_mode='rgb_array'")
            frames.append(np.asarray(frame))
            inputs.append(info.get(input_key, frames[-1]))
            env_rewards.append(float(reward))
            done = terminated or truncated
    return np.stack(frames), inputs, starts, env_rewards


def as_batch(items: list):
    """Frames become one ``(N, H, W, 3)`` array; text stays a list."""
    if items and isinstance(items[0], np.ndarray):
        return np.stack(items)
    return list(items)


def rollout_video(policy: Callable[[np.ndarray], np.ndarray], env_fn: Callable, path: str | Path, episodes: int,
                  seed: int | None, reward=None, fps: int = 30, title: str | None = None) -> Path:  # fmt: skip
    """Roll ``policy`` out in a fresh ``env_fn()`` and write an mp4 with a reward curve under the frames.

    The curve is ``reward``'s score of each step's ``info[reward.input_key]`` (its ``evaluate`` if it has one),
    or the env's own reward when ``reward`` is None; ``title`` defaults to naming which.
    """
    env = env_fn()
    try:
        key = getattr(reward, "input_key", "frame")
        frames, inputs, starts, env_rewards = record_episodes(policy, env, episodes, seed=seed, input_key=key)
    finally:
        env.close()
    if reward is not None:
        score = getattr(reward, "evaluate", reward.predict)
        rewards, default_title = score(as_batch(inputs)), f"{type(reward).__name__} reward"
    else:
        rewards, default_title = np.asarray(env_rewards), "env reward"
    return write_video(path, frames, rewards, fps=fps, title=title or default_title, episode_starts=starts)
