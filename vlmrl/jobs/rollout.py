"""``vlmrl rollout checkpoint=...``: render a trained policy's episodes to an mp4 with the reward curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlmrl.agents.base import RolloutContext
from vlmrl.jobs.train import build_agent, build_reward
from vlmrl.runs import RunFolder


def find_run(spec: str) -> tuple[RunFolder, Path | None]:
    """(run folder, checkpoint file or None for the agent's newest) from a checkpoint path or a run folder."""
    if spec in ("", "None", "null"):
        raise FileNotFoundError("no checkpoint given: pass checkpoint=runs/<name>/<timestamp> (or a checkpoint file)")
    path = Path(spec)
    if path.is_dir():
        return RunFolder.open(path), None
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {spec} does not exist; pass checkpoint=runs/<name>/<timestamp>")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return RunFolder(run_dir), path


def main(cfg: DictConfig) -> dict[str, Any]:
    """Write ``cfg.episodes`` episodes of the checkpoint's policy to an mp4."""
    from vlmrl.report.video import RolloutVideos

    run, ckpt = find_run("" if OmegaConf.is_missing(cfg, "checkpoint") else str(cfg.checkpoint))
    run_cfg = run.load_config()
    agent = build_agent(run_cfg)
    ckpt = ckpt or agent.find_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"{run.path} has no checkpoint of a {type(agent).__name__} yet")
    rng = np.random.default_rng(cfg.seed)
    env_fn = instantiate(run_cfg.envs, _partial_=True)
    reward = build_reward(run_cfg, run, rng) if agent.uses_reward_source else None
    out = Path(cfg.out) if cfg.out else run.videos / f"rollout_{ckpt.stem}.mp4"
    try:
        ctx = RolloutContext(
            run=run,
            checkpoint=ckpt,
            env_fn=env_fn,
            reward=reward,
            videos=RolloutVideos(env_fn, reward),
            out=out,
            episodes=int(cfg.episodes),
            seed=int(cfg.seed),
            deterministic=None if cfg.get("deterministic") is None else bool(cfg.deterministic),
        )
        video = agent.rollout(ctx)
    finally:
        if reward is not None:
            reward.close()
    return {"video": str(video), "checkpoint": str(ckpt)}
