"""``vlmrl train``: build env, reward source and agent from config and train in a run folder."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vlmrl.runs import resolve_run_dir, save_config

log = logging.getLogger(__name__)


def build_reward(cfg: DictConfig, run_dir, rng: np.random.Generator):
    """The reward source of ``cfg.labelers`` (None when the group is unset or has no ``_target_``)."""
    if not cfg.get("labelers") or "_target_" not in cfg.labelers:
        return None
    return instantiate(cfg.labelers, run_dir=run_dir, rng=rng)


def main(cfg: DictConfig) -> dict[str, Any]:
    """Train; returns the agent's summary (also written to ``<run_dir>/result.json``)."""
    run_dir = resolve_run_dir(cfg)
    resuming = bool(cfg.get("resume")) and (run_dir / "config.yaml").exists()
    save_config(cfg, run_dir, "config.resume.yaml" if resuming else "config.yaml")
    log.info("run folder: %s", run_dir)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    env_fn = instantiate(cfg.envs, _partial_=True) if cfg.get("envs") else None
    reward = build_reward(cfg, run_dir, rng)
    agent = instantiate(cfg.agents)
    try:
        result = agent.train(env_fn=env_fn, reward=reward, run_dir=run_dir, rng=rng, resume=bool(cfg.resume), cfg=cfg)
    finally:
        if reward is not None and hasattr(reward, "close"):
            reward.close()
    result = {"run_dir": str(run_dir), **result}
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    try:
        from vlmrl.report.run_report import write_report

        result["report"] = str(write_report(run_dir))
    except Exception as err:  # a report must never fail a finished run
        log.warning("could not write the run report: %s", err)
    return result
