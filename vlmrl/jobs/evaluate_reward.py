"""``vlmrl evaluate-reward``: how well does a reward source rank an env's rollouts, against the ground truth?

Builds the env (``envs``) and reward source (``labelers``) the way ``vlmrl train`` does, rolls out random
actions or a checkpoint's policy, and writes ``reward_eval.{json,html}``, ``extremes.png`` and ``scores.npz``
(see :mod:`vlmrl.report.reward_eval`).

``variants`` compares several settings of the reward source on the same rollouts (rendering is the slow part,
and identical frames make the comparison fair): each entry overrides keys of ``labelers``, e.g.
``vlmrl evaluate-reward experiments=humanoid_kneel 'variants=[{alpha:0.0},{alpha:0.5},{alpha:1.0}]'`` writes one
sub-folder per setting and ``comparison.{html,json}`` ranking them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from vlmrl.rewards.base import RewardModel
from vlmrl.rollouts import Policy
from vlmrl.runs import RunFolder


def _policy(cfg: DictConfig) -> tuple[Policy | None, RunFolder | None, Path | None]:
    """(``policy(obs, info) -> action`` or None for random actions, its run folder, its checkpoint) from
    ``cfg.policy``: a checkpoint file, or a run folder for its newest checkpoint.
    """  # noqa: D205
    spec = str(cfg.policy)
    if spec in ("random", "", "None"):
        return None, None, None
    from stable_baselines3 import PPO

    from vlmrl.jobs.rollout import find_run

    run, ckpt = find_run(spec)
    ckpt = ckpt or run.latest_checkpoint()
    if ckpt is None:
        raise FileNotFoundError(f"{run.path} has no checkpoints/step_*.zip or step_*.pt")
    model = PPO.load(ckpt, device=cfg.device)
    deterministic = bool(cfg.get("deterministic", True))
    return (lambda obs, info: model.predict(obs, deterministic=deterministic)[0]), run, ckpt


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


def _variant_name(variant: dict) -> str:
    """A short readable name of a labelers override, e.g. ``alpha=0.5``."""
    if not variant:
        return "as configured"
    return ", ".join(f"{k}={v}" for k, v in variant.items())[:80]


def _variant_cfg(cfg: DictConfig, variant: dict) -> DictConfig:
    """``cfg`` with ``variant`` merged into ``cfg.labelers``."""
    vcfg = cfg.copy()
    try:
        with open_dict(vcfg):
            vcfg.labelers = OmegaConf.merge(cfg.labelers, variant)
    except OmegaConfBaseException as err:
        raise ValueError(f"variant {variant} does not fit labelers: {err}; list its keys with --cfg") from None
    return vcfg


def _load_reward_state(cfg: DictConfig, reward: RewardModel, run: RunFolder | None, ckpt: Path | None) -> None:
    """A trained reward's state: ``cfg.reward_state``, else the one saved beside the policy's checkpoint."""
    state = Path(cfg.reward_state) if cfg.get("reward_state") else (run.state_dir(ckpt) if ckpt else None)
    if state is not None:
        if state.is_dir():
            reward.load_state(state)
        elif cfg.get("reward_state"):
            raise FileNotFoundError(f"reward_state={state} is not a folder; pass checkpoints/step_<N>/")


def main(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.episodes`` rollouts with ``cfg.labelers`` (or each of ``cfg.variants``) against the ground truth."""
    from vlmrl.jobs.train import build_reward
    from vlmrl.report.reward_eval import collect_rollouts, evaluate_reward, write_comparison

    out = (
        Path(cfg.out)
        if cfg.get("out")
        else (Path(cfg.runs_root) / "reward_eval" / str(cfg.name) / time.strftime("%Y%m%d-%H%M%S"))
    )
    RunFolder(out).save_config(cfg)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    if not cfg.get("envs"):
        raise ValueError("no env configured; choose one with envs=<name> (e.g. envs=humanoid)")
    env_fn = instantiate(cfg.envs, _partial_=True)
    policy, policy_run, ckpt = _policy(cfg)
    variants = [
        OmegaConf.to_container(v, resolve=True) if not isinstance(v, dict) else v for v in (cfg.get("variants") or [])
    ]
    if any(not isinstance(v, dict) for v in variants):
        raise ValueError("variants must be a list of labelers overrides, e.g. 'variants=[{alpha:0.0},{alpha:1.0}]'")
    truth_key = str(cfg.get("truth_key", "env_reward"))
    common = dict(
        policy=policy,
        episodes=int(cfg.episodes),
        max_steps=int(cfg.max_steps),
        top_k=int(cfg.top_k),
        batch_size=int(cfg.batch_size),
        truth_key=truth_key,
        max_per_episode=cfg.get("max_per_episode", 2),
    )
    results: dict[str, dict[str, Any]] = {}
    rollouts = None
    for i, variant in enumerate(variants or [{}]):
        vcfg = _variant_cfg(cfg, variant) if variants else cfg
        vout = out / f"variant_{i}" if variants else out
        reward = build_reward(vcfg, RunFolder(vout), rng)
        if reward is None:
            raise ValueError(
                "labelers= builds no reward model, so there is nothing to evaluate; "
                "choose a reward source, e.g. labelers=clip"
            )
        try:
            _load_reward_state(cfg, reward, policy_run, ckpt)
            key = reward.input_key
            if variants and rollouts is None:  # collect once, score every variant on the same transitions
                rollouts = collect_rollouts(env_fn, policy, int(cfg.episodes), int(cfg.max_steps), key, rng, truth_key)
            name = _variant_name(variant)
            results[name] = evaluate_reward(
                env_fn,
                reward,
                vout,
                rng,
                title=f"{cfg.name} ({name})" if variants else str(cfg.name),
                setup=_setup(vcfg, ckpt),
                rollouts=rollouts,
                **common,
            )
        finally:
            reward.close()
    keys = ("spearman", "kendall", "pearson", "epic", "episode_spearman", "transitions", "html", "extremes_png")
    if not variants:
        (result,) = results.values()
        return {"out": str(out), **{k: result[k] for k in keys if k in result}}
    page = write_comparison(results, out, str(cfg.name))
    return {
        "out": str(out),
        "comparison": str(page),
        "variants": {n: {k: r[k] for k in ("spearman", "kendall", "epic") if k in r} for n, r in results.items()},
    }
