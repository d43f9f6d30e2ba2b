"""``vlmrl train``: build env, reward source and agent from config and train in a run folder."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vlmrl.agents.base import Agent, TrainContext
from vlmrl.rewards.base import RewardModel
from vlmrl.runs import RunFolder, job_fingerprint, refuse_if_different

log = logging.getLogger(__name__)

#: Keys a resumed run may change (besides vlmrl.runs.NOT_SHAPING): the budget of agents that continue counting
#: from their checkpoint (PPO, text PPO, GFlowNet), so a finished run can be trained for longer.
NOT_SHAPING_TRAIN = ("agents.total_timesteps", "agents.total_episodes")


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


def open_run(cfg: DictConfig) -> tuple[RunFolder, bool]:
    """The job's run folder and whether it resumes one, refusing to continue a run started with other settings.

    Raises:
        ValueError: ``run_dir`` holds a run and ``resume`` is false, or the run to resume was started with other
            settings (one line naming the differing keys).
    """
    run = RunFolder.for_job(cfg)
    resuming = bool(cfg.get("resume")) and run.started
    if run.started and not resuming:
        raise ValueError(f"run_dir={run.path} already holds a run: pass resume=true to continue it, or another run_dir")
    if resuming:
        refuse_if_different(
            job_fingerprint(run.load_config(), NOT_SHAPING_TRAIN),
            job_fingerprint(cfg, NOT_SHAPING_TRAIN),
            f"{run.path} was started with other settings",
            "pass resume=false to start a new run (or another run_dir), or set the keys back",
        )
    return run, resuming


def main(cfg: DictConfig) -> dict[str, Any]:
    """Train; returns the agent's summary (also written to ``<run_dir>/result.json``).

    A job that fails removes the run folder it created if it holds nothing but the config, and otherwise leaves
    ``FAILED`` in it with the one-line error.
    """
    run, resuming = open_run(cfg)
    parent_existed = run.path.parent.exists()
    run.clear_failure()
    run.save_config(cfg, resuming=resuming)
    try:
        result = _train(cfg, run)
    except (Exception, KeyboardInterrupt) as err:
        if run.record_failure(err, created=not resuming) is None and not parent_existed:
            with contextlib.suppress(OSError):  # runs/<name>/, made for this run alone
                run.path.parent.rmdir()
        raise
    result = run.write_result(result)
    try:
        from vlmrl.report.run_report import write_report

        result["report"] = str(write_report(run.path))
    except Exception as err:  # a report must never fail a finished run
        log.warning("could not write the run report: %s", err)
    return result


def _train(cfg: DictConfig, run: RunFolder) -> dict[str, Any]:
    """Build env, agent and reward source and run ``agent.train``; the reward source is closed in any case."""
    from vlmrl.report.video import RolloutVideos

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    env_fn = instantiate(cfg.envs, _partial_=True) if cfg.get("envs") else None
    agent = build_agent(cfg)
    reward = build_reward(cfg, run, rng) if agent.uses_reward_source else None
    try:
        videos = RolloutVideos(env_fn, reward) if env_fn is not None else None
        ctx = TrainContext(env_fn, reward, run, rng, resume=bool(cfg.resume), videos=videos, cfg=cfg)
        log.info("run folder: %s", run.path)
        return agent.train(ctx)
    finally:
        if reward is not None:
            reward.close()
