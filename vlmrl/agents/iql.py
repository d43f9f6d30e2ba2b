"""Offline IQL (Kostrikov et al. 2022) through d3rlpy, with behaviour cloning and IQL-on-ground-truth baselines.

Offline RL-VLM-F's agent: implicit Q-learning on a dataset whose rewards were relabeled by a learned reward
model (expectile ``tau = 0.7``, advantage temperature ``beta = 3.0`` as in that paper's setup). One job trains
up to three policies on the same transitions and evaluates each in the env on the ground-truth metric:

- ``iql``: IQL on the dataset's rewards (the learned ones after ``vlmrl relabel``);
- ``bc``: behaviour cloning (ignores rewards: what the data alone gives);
- ``iql_gt``: IQL on the ground-truth rewards kept in ``infos["env_reward"]`` (the upper reference).

Each variant checkpoints every epoch (``checkpoints/<variant>.d3``) and a finished variant's evaluation is
stored (``eval/<variant>.json``), so ``resume=true`` continues a killed job where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmrl.data.dataset import DatasetError, OfflineDataset
from vlmrl.data.storage import load_dataset

VARIANTS = ("iql", "bc", "iql_gt")


def _reward_scaler(name: str | None):
    from d3rlpy.preprocessing import MinMaxRewardScaler, StandardRewardScaler

    if name in (None, "none"):
        return None
    if name == "standard":
        return StandardRewardScaler()
    if name == "minmax":
        return MinMaxRewardScaler()
    raise ValueError(f"reward_scaler={name!r}: use standard, minmax or none")


class IQLAgent:
    """Offline agent: d3rlpy IQL on a dataset file, plus the BC and IQL-on-ground-truth baselines.

    Args:
        dataset: path of the (relabeled) dataset, ``.h5`` or ``.npz``.
        steps: gradient steps per IQL variant.
        bc_steps: gradient steps of behaviour cloning (default: ``steps``).
        steps_per_epoch: steps between checkpoints.
        variants: which of ``iql``, ``bc``, ``iql_gt`` to train.
        batch_size: transitions per gradient step.
        expectile: IQL's expectile ``tau`` for the value function.
        weight_temp: IQL's inverse temperature ``beta`` of advantage-weighted regression.
        max_weight: clip of the advantage weights.
        gamma: discount.
        actor_lr: actor (and BC) learning rate.
        critic_lr: critic and value learning rate.
        reward_scaler: ``standard`` (zero mean, unit std), ``minmax`` or ``none``; applied to both IQL variants
            so learned and ground-truth rewards are trained on the same scale.
        eval_episodes: evaluation episodes per variant (same seeds for every variant).
        video_episodes: episodes (the first evaluation seeds) recorded to ``videos/<variant>.mp4`` with the
            true reward under the frames; 0 records none.
        metric_goal: ``min`` if a lower ground-truth metric is better (a distance), ``max`` otherwise.
        hidden_units: hidden layer widths of every network (actor, critics, value; BC's policy too).
        device: torch device for d3rlpy (``cpu:0``, ``cuda:0``).
        num_threads: torch CPU threads while training (``None`` keeps torch's default). Small MLPs gain nothing
            from more, and on a busy machine OpenMP's spin-waiting made 2 threads ~10x slower than 1.
    """

    def __init__(
        self,
        dataset: str,
        steps: int = 20000,
        bc_steps: int | None = None,
        steps_per_epoch: int = 2000,
        variants: Sequence[str] = VARIANTS,
        batch_size: int = 256,
        expectile: float = 0.7,
        weight_temp: float = 3.0,
        max_weight: float = 100.0,
        gamma: float = 0.99,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        reward_scaler: str | None = "standard",
        eval_episodes: int = 20,
        video_episodes: int = 2,
        metric_goal: str = "min",
        hidden_units: Sequence[int] = (256, 256),
        device: str = "cpu:0",
        num_threads: int | None = 1,
        **_: Any,
    ):
        if not dataset:
            raise ValueError("agents.dataset is empty: pass agents.dataset=path/to/relabeled.h5")
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise ValueError(f"variants={list(variants)}: choose from {list(VARIANTS)}")
        if not 0.5 <= expectile < 1.0:
            raise ValueError(f"expectile={expectile}: IQL needs 0.5 <= tau < 1 (0.7 in the paper)")
        if metric_goal not in ("min", "max"):
            raise ValueError(f"metric_goal={metric_goal!r}: use min (lower metric is better) or max")
        if steps < 1 or steps_per_epoch < 1 or eval_episodes < 0 or video_episodes < 0:
            raise ValueError("steps and steps_per_epoch must be >= 1, eval_episodes and video_episodes >= 0")
        _reward_scaler(reward_scaler)  # fail fast on a bad name
        self.dataset_path = str(dataset)
        self.steps, self.bc_steps = int(steps), int(bc_steps or steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.variants = list(variants)
        self.batch_size = int(batch_size)
        self.expectile, self.weight_temp, self.max_weight = float(expectile), float(weight_temp), float(max_weight)
        self.gamma, self.actor_lr, self.critic_lr = float(gamma), float(actor_lr), float(critic_lr)
        self.reward_scaler = reward_scaler
        self.eval_episodes, self.metric_goal = int(eval_episodes), metric_goal
        self.video_episodes = int(video_episodes)
        self.hidden_units = [int(h) for h in hidden_units]
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise ValueError(f"hidden_units={list(hidden_units)}: give one or more positive layer widths")
        self.device = device
        self.num_threads = None if num_threads is None else int(num_threads)

    # ---- building ------------------------------------------------------------------------------------------
    def build(self, variant: str):
        """The d3rlpy algorithm of one variant (not yet built with a dataset)."""
        import d3rlpy
        from d3rlpy.models.encoders import VectorEncoderFactory
        from d3rlpy.preprocessing import StandardObservationScaler

        encoder = VectorEncoderFactory(hidden_units=self.hidden_units)
        if variant == "bc":
            config = d3rlpy.algos.BCConfig(
                batch_size=self.batch_size,
                learning_rate=self.actor_lr,
                encoder_factory=encoder,
                observation_scaler=StandardObservationScaler(),
            )
        else:
            config = d3rlpy.algos.IQLConfig(
                batch_size=self.batch_size,
                gamma=self.gamma,
                actor_learning_rate=self.actor_lr,
                critic_learning_rate=self.critic_lr,
                expectile=self.expectile,
                weight_temp=self.weight_temp,
                max_weight=self.max_weight,
                actor_encoder_factory=encoder,
                critic_encoder_factory=encoder,
                value_encoder_factory=encoder,
                observation_scaler=StandardObservationScaler(),
                reward_scaler=_reward_scaler(self.reward_scaler),
            )
        return config.create(device=self.device)

    def rewards_for(self, variant: str, data: OfflineDataset) -> np.ndarray:
        """The rewards a variant trains on (``bc`` ignores them)."""
        if variant == "iql_gt":
            gt = data.ground_truth_rewards()
            if gt is None:
                raise DatasetError(
                    data.source,
                    "has no ground-truth rewards (infos/env_reward) for the iql_gt baseline;"
                    " drop it with agents.variants=[iql,bc]",
                )
            return gt
        return data.rewards

    # ---- the job -------------------------------------------------------------------------------------------
    def train(
        self,
        env_fn: Callable | None = None,
        run_dir: str | Path = "runs/iql",
        rng: np.random.Generator | None = None,
        resume: bool = False,
        **_: Any,
    ) -> dict[str, Any]:
        """Train every variant, evaluate each in ``env_fn()``, write ``result.json``; returns the result.

        Args:
            env_fn: builds the evaluation env (its ``info["gt_metric"]`` and ``info["is_success"]`` are read).
            run_dir: run folder (checkpoints, metrics.jsonl, eval/, result.json).
            rng: seeds the networks and the evaluation episodes (the same for every variant).
            resume: continue from the checkpoints and evaluations already in ``run_dir``.
        """
        import d3rlpy
        import torch

        from vlmrl.report.video import rollout_video

        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        rng = np.random.default_rng(0) if rng is None else rng
        run_dir = Path(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        data = load_dataset(self.dataset_path)
        train_seed = int(rng.integers(0, 2**31 - 1))
        eval_seeds = rng.integers(0, 2**31 - 1, size=self.eval_episodes).tolist()
        metrics_file = run_dir / "metrics.jsonl"
        results: dict[str, Any] = {}
        for variant in self.variants:
            done_file = run_dir / "eval" / f"{variant}.json"
            if resume and done_file.exists():
                results[variant] = json.loads(done_file.read_text())
                continue
            d3rlpy.seed(train_seed)  # same initialisation and minibatch stream for every variant
            algo = self.build(variant)
            mdp = data.to_d3rlpy(rewards=self.rewards_for(variant, data))
            n_steps = self.bc_steps if variant == "bc" else self.steps
            ckpt, progress = run_dir / "checkpoints" / f"{variant}.d3", run_dir / "checkpoints" / f"{variant}.json"
            start = 0
            if resume and ckpt.exists() and progress.exists():
                from d3rlpy.algos.utility import build_scalers_with_transition_picker

                build_scalers_with_transition_picker(algo, mdp)  # load_model restores networks, not scalers
                algo.build_with_dataset(mdp)
                algo.load_model(str(ckpt))
                start = int(json.loads(progress.read_text())["step"])
            t0 = time.perf_counter()
            if start < n_steps:
                self._fit(algo, mdp, variant, start, n_steps, ckpt, progress, metrics_file, run_dir)
            train_seconds = time.perf_counter() - t0
            result = {"variant": variant, "steps": n_steps, "train_seconds": train_seconds}
            if env_fn is not None and self.eval_episodes > 0:
                result.update(evaluate_policy(lambda o, a=algo: a.predict(o[None])[0], env_fn, eval_seeds))
            if env_fn is not None and self.video_episodes > 0:
                video = run_dir / "videos" / f"{variant}.mp4"
                seed = eval_seeds[0] if eval_seeds else train_seed
                policy = lambda o, a=algo: a.predict(np.asarray(o, np.float32)[None])[0]  # noqa: E731
                rollout_video(policy, env_fn, video, self.video_episodes, seed, fps=10, title=variant)
                result["video"] = str(video)
            _append_jsonl(metrics_file, {"step": n_steps, "time": time.time(), "event": "eval", **result})
            done_file.write_text(json.dumps(result, indent=2))
            results[variant] = result
            print(f"iql: {variant}: {json.dumps(result)}", flush=True)
        summary = self.summarise(results)
        summary.update(
            {
                "dataset": self.dataset_path,
                "transitions": len(data),
                "episodes": data.num_episodes,
                "train_seed": train_seed,
                "eval_episodes": self.eval_episodes,
            }
        )
        _atomic_json(run_dir / "result.json", summary)
        return summary

    def _fit(self, algo, mdp, variant, start, n_steps, ckpt, progress, metrics_file, run_dir) -> None:
        from d3rlpy.logging import FileAdapterFactory

        def on_epoch(a, epoch: int, total_step: int) -> None:
            step = start + total_step
            tmp = ckpt.with_suffix(f".tmp-{os.getpid()}")
            a.save_model(str(tmp))
            os.replace(tmp, ckpt)
            _atomic_json(progress, {"step": step})
            _append_jsonl(metrics_file, {"step": step, "time": time.time(), "event": "epoch", "variant": variant})

        algo.fit(
            mdp,
            n_steps=n_steps - start,
            n_steps_per_epoch=min(self.steps_per_epoch, n_steps - start),
            experiment_name=variant,
            with_timestamp=False,
            logger_adapter=FileAdapterFactory(root_dir=str(run_dir / "d3rlpy_logs")),
            show_progress=False,
            save_interval=10**9,
            epoch_callback=on_epoch,
        )

    def summarise(self, results: dict[str, dict]) -> dict[str, Any]:
        """Put the variants side by side and say whether IQL beat BC on the ground-truth metric."""
        out: dict[str, Any] = {"variants": results, "metric_goal": self.metric_goal}
        sign = -1.0 if self.metric_goal == "min" else 1.0
        if all(v in results and "gt_metric_mean" in results[v] for v in ("iql", "bc")):
            iql, bc = results["iql"], results["bc"]
            out["iql_minus_bc"] = iql["gt_metric_mean"] - bc["gt_metric_mean"]
            # standard error of the difference of two means over independent evaluation episodes
            se = np.sqrt(sum(r["gt_metric_std"] ** 2 / max(r["episodes"] - 1, 1) for r in (iql, bc)))
            out["iql_minus_bc_se"] = float(se)
            out["iql_beats_bc"] = bool(sign * out["iql_minus_bc"] > 2 * se)  # better by more than 2 standard errors
        if all(v in results and "gt_metric_mean" in results[v] for v in ("iql", "iql_gt")):
            out["iql_minus_iql_gt"] = results["iql"]["gt_metric_mean"] - results["iql_gt"]["gt_metric_mean"]
        return out


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray], env_fn: Callable, seeds: Sequence[int]
) -> dict[str, float]:
    """Run one episode per seed; report the final ground-truth metric, success rate and env return.

    Returns:
        ``gt_metric_mean``/``gt_metric_std`` (the metric at the last step), ``success_rate`` (``is_success`` at
        the last step), ``return_mean`` (sum of ``info["env_reward"]``, else the env reward) and ``episodes``.
    """
    env = env_fn()
    metrics, successes, returns = [], [], []
    try:
        for seed in seeds:
            obs, info = env.reset(seed=int(seed))
            done, ret = False, 0.0
            while not done:
                obs, reward, terminated, truncated, info = env.step(policy(np.asarray(obs, np.float32)))
                ret += float(info.get("env_reward", reward))
                done = terminated or truncated
            returns.append(ret)
            metrics.append(float(info.get("gt_metric", np.nan)))
            successes.append(float(info.get("is_success", np.nan)))
    finally:
        env.close()
    return {
        "episodes": float(len(seeds)),
        "gt_metric_mean": float(np.mean(metrics)),
        "gt_metric_std": float(np.std(metrics)),
        "success_rate": float(np.mean(successes)),
        "return_mean": float(np.mean(returns)),
    }


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
