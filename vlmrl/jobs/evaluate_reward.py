"""``vlmrl evaluate-reward``: how well does a reward source rank an env's rollouts, against the ground truth?

Builds the env (``envs``) and reward source (``labelers``) the way ``vlmrl train`` does, rolls out random
actions or a checkpoint's policy, and writes ``reward_eval.{json,html}``, ``extremes.png`` and ``scores.npz``
(see :mod:`vlmrl.report.reward_eval`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def _policy(cfg: DictConfig):
    """(policy callable or None, checkpoint path or None) from ``cfg.policy``."""
    spec = str(cfg.policy)
    if spec in ("random", "", "None"):
        return None, None
    from stable_baselines3 import PPO

    from vlmrl.jobs.rollout import find_checkpoint

    ckpt, _ = find_checkpoint(spec)
    model = PPO.load(ckpt, device=cfg.device)
    deterministic = bool(cfg.get("deterministic", True))
    return (lambda obs: model.predict(obs, deterministic=deterministic)[0]), ckpt


def _setup(cfg: DictConfig, ckpt: Path | None) -> dict[str, Any]:
    """The settings a reader needs to reproduce or compare evaluations."""
    lab = OmegaConf.to_container(cfg.labelers, resolve=True) if cfg.get("labelers") else {}
    env = OmegaConf.to_container(cfg.envs, resolve=True) if cfg.get("envs") else {}
    rows: dict[str, Any] = {
        "name": cfg.name,
        "seed": cfg.seed,
        "policy": str(ckpt) if ckpt else "random",
        "episodes": cfg.episodes,
        "max_steps": cfg.max_steps,
    }
    rows.update({f"labelers.{k}": v for k, v in lab.items() if isinstance(v, str | int | float | bool | list)})
    rows.update({f"envs.{k}": v for k, v in env.items() if isinstance(v, str | int | float | bool)})
    return rows


def main(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.episodes`` rollouts with ``cfg.labelers`` and compare with the env's reward."""
    from vlmrl.jobs.train import build_reward
    from vlmrl.report.reward_eval import evaluate_reward

    out = (
        Path(cfg.out)
        if cfg.get("out")
        else (Path(cfg.runs_root) / "reward_eval" / str(cfg.name) / time.strftime("%Y%m%d-%H%M%S"))
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    if not cfg.get("envs"):
        raise ValueError("no env configured; choose one with envs=<name> (e.g. envs=humanoid)")
    env_fn = instantiate(cfg.envs, _partial_=True)
    policy, ckpt = _policy(cfg)
    reward = build_reward(cfg, out, rng)
    if reward is None:
        raise ValueError(
            "labelers= builds no reward model, so there is nothing to evaluate; "
            "choose a reward source, e.g. labelers=clip"
        )
    try:
        state = Path(cfg.reward_state) if cfg.get("reward_state") else (ckpt.with_suffix("") if ckpt else None)
        if state is not None and hasattr(reward, "load_state"):
            if state.is_dir():
                reward.load_state(state)
            elif cfg.get("reward_state"):
                raise FileNotFoundError(f"reward_state={state} is not a folder; pass checkpoints/step_<N>/")
        result = evaluate_reward(
            env_fn,
            reward,
            out,
            rng,
            policy=policy,
            episodes=int(cfg.episodes),
            max_steps=int(cfg.max_steps),
            top_k=int(cfg.top_k),
            batch_size=int(cfg.batch_size),
            title=str(cfg.name),
            setup=_setup(cfg, ckpt),
            truth_key=str(cfg.get("truth_key", "env_reward")),
            max_per_episode=cfg.get("max_per_episode", 2),
        )
    finally:
        if hasattr(reward, "close"):
            reward.close()
    keys = (
        "spearman",
        "kendall",
        "pearson",
        "epic",
        "episode_spearman",
        "transitions",
        "html",
        "extremes_png",
    )
    return {"out": str(out), **{k: result[k] for k in keys if k in result}}
