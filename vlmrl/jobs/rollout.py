"""``vlmrl rollout checkpoint=...``: render a trained policy's episodes to an mp4 with the reward curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from vlmrl.jobs.train import build_reward
from vlmrl.runs import latest_checkpoint, load_config


def find_checkpoint(spec: str) -> tuple[Path, Path]:
    """(checkpoint file, run folder) from a checkpoint path or a run folder."""
    path = Path(spec)
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise FileNotFoundError(f"{path} has no checkpoints/step_*.zip or step_*.pt")
        return ckpt, path
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {spec} does not exist")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path, run_dir


def main(cfg: DictConfig) -> dict[str, Any]:
    """Write ``cfg.episodes`` episodes of the checkpoint's policy to an mp4."""
    ckpt, run_dir = find_checkpoint(str(cfg.checkpoint))
    run_cfg = load_config(run_dir)
    rng = np.random.default_rng(cfg.seed)
    env_fn = instantiate(run_cfg.envs, _partial_=True)
    reward = build_reward(run_cfg, run_dir, rng)
    agent = instantiate(run_cfg.agents)
    out = Path(cfg.out) if cfg.out else run_dir / "videos" / f"rollout_{ckpt.stem}.mp4"
    try:
        video = agent.rollout(
            checkpoint=ckpt,
            env_fn=env_fn,
            reward=reward,
            out=out,
            episodes=int(cfg.episodes),
            seed=int(cfg.seed),
            deterministic=bool(cfg.deterministic),
        )
    finally:
        if reward is not None and hasattr(reward, "close"):
            reward.close()
    return {"video": str(video), "checkpoint": str(ckpt)}
