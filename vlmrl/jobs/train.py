"""``vlmrl train``: build env, reward source and agent from config and train in a run folder."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vlmrl.agents.base import Agent, TrainContext
from vlmrl.rewards.base import RewardModel
from vlmrl.runs import RunFolder

log = logging.getLogger(__name__)


def build_reward(cfg: DictConfig, run: RunFolder | None, rng: np.random.Generator) -> RewardModel | None:
    """The reward source of ``cfg.labelers`` (None when the group is unset or has no ``_target_``)."""
    if not cfg.get("labelers") or "_target_" not in cfg.labelers:
        return None
    reward = instantiate(cfg.labelers, run_dir=None if run is None else run.path, rng=rng)
    if not isinstance(reward, RewardModel):
        raise TypeError(f"labelers._target_ {cfg.labelers._target_} is not a vlmrl.rewards.base.RewardModel")
    return reward


def build_agent(cfg: DictConfig) -> Agent:
    """The agent of ``cfg.agents``."""
    agent = instantiate(cfg.agents)
    if not isinstance(agent, Agent):
        raise TypeError(f"agents._target_ {cfg.agents._target_} is not a vlmrl.agents.base.Agent")
    return agent


def main(cfg: DictConfig) -> dict[str, Any]:
    """Train; returns the agent's summary (also written to ``<run_dir>/result.json``)."""
    from vlmrl.report.video import RolloutVideos

    run = RunFolder.for_job(cfg)
    resuming = bool(cfg.get("resume")) and run.started
    run.save_config(cfg, resuming=resuming)
    log.info("run folder: %s", run.path)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    env_fn = instantiate(cfg.envs, _partial_=True) if cfg.get("envs") else None
    agent = build_agent(cfg)
    reward = build_reward(cfg, run, rng) if agent.uses_reward_source else None
    try:
        videos = RolloutVideos(env_fn, reward) if env_fn is not None else None
        ctx = TrainContext(env_fn, reward, run, rng, resume=bool(cfg.resume), videos=videos, cfg=cfg)
        result = agent.train(ctx)
    finally:
        if reward is not None:
            reward.close()
    result = run.write_result(result)
    try:
        from vlmrl.report.run_report import write_report

        result["report"] = str(write_report(run.path))
    except Exception as err:  # a report must never fail a finished run
        log.warning("could not write the run report: %s", err)
    return result
