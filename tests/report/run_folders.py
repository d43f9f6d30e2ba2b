"""Run folders laid out as docs/CONTRACTS.md says, written by hand: metrics, videos, config, result, labels."""

import json
from pathlib import Path

import imageio.v2 as iio
import numpy as np

from vlmrl.runs import LabelStats, RunFolder

STEPS = [256 * (i + 1) for i in range(8)]  # 256 ... 2048


def tiny_video(path: Path, color, frames: int = 12, size: int = 64) -> None:
    """An H.264 mp4 of a square moving across a coloured background."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    video[:] = color
    for t in range(frames):
        x = 4 + 3 * t
        video[t, 20:40, x : x + 16] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.mimwrite(path, video, fps=10, macro_block_size=16)


def make_run(
    root: Path,
    name: str = "humanoid_kneel",
    stamp: str = "20261130-010000",
    preference: bool = False,
    anti: bool = False,
) -> Path:
    run = root / name / stamp
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"name: {name}\nseed: 0\ndevice: cpu\n"
        "envs:\n  _target_: vlmrl.envs.humanoid.make_humanoid\n  episode_length: 100\n"
        "agents:\n  _target_: vlmrl.agents.ppo.PPOAgent\n  total_timesteps: 2048\n  gamma: 0.95\n"
        "labelers:\n  _target_: vlmrl.rewards.clip.CLIPReward\n  model: vlmrl-tiny\n  alpha: 0.5\n"
        "  goal_prompts: [a humanoid robot kneeling]\n  baseline_prompts: [a humanoid robot]\n"
    )
    lines = []
    for i, step in enumerate(STEPS):
        rec = {
            "step": step,
            "time": 10.0 * (i + 1),
            "env_reward_mean": 0.5 + 0.1 * i,
            "model_reward_mean": 0.2 + (-0.01 if anti else 0.01) * i,
            "ep_env_return_mean": 50.0 + 10 * i,
            "ep_model_return_mean": 20.0 + (-1 if anti else 1) * i,
            "episodes": 2,
            "clip_ms_per_frame": 1.5 + 0.01 * i,
        }
        if preference:
            rec.update({"labels_total": 10 * (i + 1), "label_accuracy": 0.6 + 0.03 * i})
        lines.append(json.dumps(rec))
    lines.append('{"step": 2304, "env_rew')  # a line cut by a crash
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    tiny_video(run / "videos" / "step_1024.mp4", (40, 40, 160))
    tiny_video(run / "videos" / "step_2048.mp4", (40, 120, 40))
    tiny_video(run / "videos" / "final.mp4", (150, 60, 40))
    (run / "result.json").write_text(json.dumps({"total_timesteps": 2048, "final_ep_env_return_mean": 120.0}))
    if preference:
        RunFolder(run).write_label_stats(
            LabelStats(
                labeler="vlm:gpt-4o",
                queries=40,
                paid=30,
                cache_hits=10,
                valid=36,
                judged=32,
                correct=30,
                budget=100,
                extra={
                    "cost_usd": 0.12,
                    "history": [{"step": 512, "train_loss": 0.6}, {"step": 1024, "train_loss": 0.4}],
                },
            )
        )
    return run
