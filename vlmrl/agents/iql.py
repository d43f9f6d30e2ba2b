"""Offline IQL (Kostrikov et al. 2022) through d3rlpy, with behaviour cloning and IQL-on-ground-truth baselines.

Offline RL-VLM-F's agent: implicit Q-learning on a dataset whose rewards were relabeled by a learned reward
model (expectile ``tau = 0.7``, advantage temperature ``beta = 3.0`` as in that paper's setup). One job trains
up to three policies on the same transitions and evaluates each in the env on the ground-truth metric:

- ``iql``: IQL on the dataset's rewards (the learned ones after ``vlmrl relabel``);
- ``bc``: behaviour cloning (ignores rewards: what the data alone gives);
- ``iql_gt``: IQL on the ground-truth rewards kept in ``infos["env_reward"]`` (the upper reference).

Each variant checkpoints every epoch (``checkpoints/<variant>.d3``: d3rlpy's ``algo.save``, so config, fitted
scalers and weights load without the dataset) and a finished variant's evaluation is stored
(``eval/<variant>.json``), so ``resume=true`` continues a killed job where it stopped and ``vlmrl rollout``
replays a variant from its checkpoint alone.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmrl.agents.base import Agent, RolloutContext, TrainContext
from vlmrl.data.dataset import DatasetError, OfflineDataset
from vlmrl.data.storage import load_dataset
from vlmrl.rollouts import (
    Episode,
    Policy,
    episode_env_rewards,
    episode_seeds,
    evaluation_episodes,
    summarise_evaluation,
)
from vlmrl.runs import RunFolder, atomic_path, write_json

VARIANTS = ("iql", "bc", "iql_gt")
REWARD_SCALERS = ("standard", "minmax", "return_range", "none")
#: The IQL paper's reward scale: rewards times 1000 / (max - min episode return of the dataset).
RETURN_RANGE_SCALE = 1000.0


def _reward_scaler(name: str | None, episode_returns: np.ndarray | None = None):
    """d3rlpy's reward scaler of that name; ``return_range`` is fixed from ``episode_returns`` when given."""
    from d3rlpy.preprocessing import MinMaxRewardScaler, ReturnBasedRewardScaler, StandardRewardScaler

    if name in (None, "none"):
        return None
    if name == "standard":
        return StandardRewardScaler()
    if name == "minmax":
        return MinMaxRewardScaler()
    if name == "return_range":
        if episode_returns is None:
            return ReturnBasedRewardScaler(multiplier=RETURN_RANGE_SCALE)  # fitted by d3rlpy on the dataset
        low, high = float(np.min(episode_returns)), float(np.max(episode_returns))
        if not high > low:
            raise ValueError(
                f"reward_scaler=return_range: every episode returns {high:.6g}, so the return range is 0;"
                " use agents.reward_scaler=standard"
            )
        return ReturnBasedRewardScaler(return_max=high, return_min=low, multiplier=RETURN_RANGE_SCALE)
    raise ValueError(f"reward_scaler={name!r}: use {', '.join(REWARD_SCALERS)}")


def load_variant(path: str | Path, device: str = "cpu:0"):
    """The d3rlpy algorithm saved in ``checkpoints/<variant>.d3`` (config, fitted scalers, weights, optimizers).

    Raises:
        ValueError: when the file holds weights only (a checkpoint written before checkpoints kept the config).
    """
    import d3rlpy

    try:
        return d3rlpy.load_learnable(str(path), device=device)
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as err:
        raise ValueError(
            f"{path} is not a d3rlpy learnable (algo.save): it holds weights only; delete it and"
            f" eval/{Path(path).stem}.json, then train again with resume=true"
        ) from err


def variant_policy(algo, deterministic: bool = True) -> Policy:
    """``policy(obs, info) -> action`` of a d3rlpy algorithm: its greedy action, or a sampled one."""
    act = algo.predict if deterministic else algo.sample_action
    return lambda obs, info: act(np.asarray(obs, np.float32)[None])[0]


class IQLAgent(Agent):
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
        reward_scaler: ``standard`` (zero mean, unit std), ``minmax``, ``return_range`` (the IQL paper's
            ``r * 1000 / (max - min episode return)`` of the dataset: a pure scale, so episodes that end at real
            terminals keep their sign) or ``none``; applied to both IQL variants alike, each on its own rewards.
            ``standard`` is the default: on push_offline's learned reward it ended 0.113 m from the goal against
            0.130 m for ``return_range`` (3 seeds, ``benchmarks/iql_reward_scale.py``).
        eval_episodes: evaluation episodes per variant (same seeds for every variant).
        video_episodes: episodes (the first evaluation seeds) recorded to ``videos/<variant>.mp4`` with the
            true reward under the frames; 0 records none.
        metric_goal: ``min`` if a lower ground-truth metric is better (a distance), ``max`` otherwise.
        hidden_units: hidden layer widths of every network (actor, critics, value; BC's policy too).
        device: torch device for d3rlpy (``cpu:0``, ``cuda:0``).
        num_threads: torch CPU threads while training (``None`` keeps torch's default). Small MLPs gain nothing
            from more, and on a busy machine OpenMP's spin-waiting made 2 threads ~10x slower than 1.
    """

    checkpoint_suffixes = (".d3",)
    uses_reward_source = False  # trains on the dataset's stored (relabeled) rewards

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
    def build(self, variant: str, episode_returns: np.ndarray | None = None):
        """The d3rlpy algorithm of one variant (not yet built with a dataset).

        ``episode_returns`` (``(E,)``, of the rewards the variant trains on) fixes the ``return_range`` scale.
        """
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
                reward_scaler=_reward_scaler(self.reward_scaler, episode_returns),
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

    # ---- the Agent interface ------------------------------------------------------------------------------
    def train(self, ctx: TrainContext) -> dict[str, Any]:
        """Train every variant, evaluate each in ``ctx.env_fn()``; returns the summary (the job's ``result.json``).

        ``ctx.env_fn`` builds the evaluation env (its ``info["gt_metric"]`` and ``info["is_success"]`` are read;
        None skips evaluation and videos); ``ctx.rng`` seeds the networks and the evaluation episodes (the same
        for every variant); ``ctx.resume`` continues from the checkpoints and evaluations already in the run.
        """
        import d3rlpy
        import torch

        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        run, env_fn = ctx.run, ctx.env_fn
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        data = load_dataset(self.dataset_path)
        train_seed = int(ctx.rng.integers(0, 2**31 - 1))
        eval_seeds = episode_seeds(ctx.rng, self.eval_episodes)
        results: dict[str, Any] = {}
        for variant in self.variants:
            done_file = run.path / "eval" / f"{variant}.json"
            if ctx.resume and done_file.exists():
                results[variant] = json.loads(done_file.read_text())
                continue
            d3rlpy.seed(train_seed)  # same initialisation and minibatch stream for every variant
            rewards = self.rewards_for(variant, data)
            mdp = data.to_d3rlpy(rewards=rewards)
            n_steps = self.bc_steps if variant == "bc" else self.steps
            ckpt, progress = run.checkpoints / f"{variant}.d3", run.checkpoints / f"{variant}.json"
            start = 0
            if ctx.resume and ckpt.exists() and progress.exists():
                algo = load_variant(ckpt, self.device)
                saved = json.loads(progress.read_text())
                start = int(saved["step"])
                if "rng" in saved:  # continue the minibatch stream where the killed job stopped
                    _set_global_rng_state(saved["rng"])
            else:
                algo = self.build(variant, data.episode_returns(rewards))
            t0 = time.perf_counter()
            if start < n_steps:
                self._fit(algo, mdp, variant, start, n_steps, run)
            train_seconds = time.perf_counter() - t0
            result: dict[str, Any] = {"variant": variant, "steps": n_steps, "train_seconds": train_seconds}
            episodes: list[Episode] = []
            if env_fn is not None and self.eval_episodes > 0:
                episodes = evaluation_episodes(variant_policy(algo), env_fn, eval_seeds)
                result.update(summarise_evaluation(episodes))
            if ctx.videos is not None and self.video_episodes > 0:
                seed = eval_seeds[0] if eval_seeds else train_seed
                path = run.videos / f"{variant}.mp4"
                video = ctx.videos.record(variant_policy(algo), path, self.video_episodes, seed, title=variant, fps=10)
                result["video"] = str(video)
            self._log_evaluation(run, n_steps, result, episodes)
            write_json(done_file, result)
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
        return summary

    def _fit(self, algo, mdp, variant: str, start: int, n_steps: int, run: RunFolder) -> None:
        from d3rlpy.logging import FileAdapterFactory

        ckpt, progress = run.checkpoints / f"{variant}.d3", run.checkpoints / f"{variant}.json"

        def on_epoch(a, epoch: int, total_step: int) -> None:
            step = start + total_step
            with atomic_path(ckpt) as tmp:
                a.save(str(tmp))
            write_json(progress, {"step": step, "rng": _global_rng_state()}, indent=None)
            # a training epoch plays no episodes: no env or model reward to report
            run.log_metrics(step, float("nan"), float("nan"), 0, event="epoch", variant=variant)

        algo.fit(
            mdp,
            n_steps=n_steps - start,
            n_steps_per_epoch=min(self.steps_per_epoch, n_steps - start),
            experiment_name=variant,
            with_timestamp=False,
            logger_adapter=FileAdapterFactory(root_dir=str(run.path / "d3rlpy_logs")),
            show_progress=False,
            save_interval=10**9,
            epoch_callback=on_epoch,
        )

    @staticmethod
    def _log_evaluation(run: RunFolder, step: int, result: dict[str, Any], episodes: list[Episode]) -> None:
        """The variant's ``"event": "eval"`` metrics row: per-step and per-episode env reward of its evaluation.

        Offline evaluation episodes are not scored by a reward model, so ``model_reward_mean`` is NaN.
        """
        per_step = [r for ep in episodes for r in episode_env_rewards(ep)]
        run.log_metrics(
            step,
            env_reward_mean=float(np.mean(per_step)) if per_step else float("nan"),
            model_reward_mean=float("nan"),
            episodes=len(episodes),
            returns={"ep_env_return_mean": result["return_mean"]} if episodes else None,
            event="eval",
            **{k: v for k, v in result.items() if k != "episodes"},
        )

    def find_checkpoint(self, run: RunFolder) -> Path | None:
        """The ``iql`` variant's checkpoint (the learned-reward policy), else the first other variant's."""
        found = [run.checkpoints / f"{v}.d3" for v in VARIANTS if (run.checkpoints / f"{v}.d3").exists()]
        return found[0] if found else None

    def rollout(self, ctx: RolloutContext) -> Path:
        """Load one variant's checkpoint (no dataset needed) and write ``ctx.episodes`` of it to ``ctx.out``.

        Actions are greedy unless ``ctx.deterministic`` is False (then sampled from the policy).
        """
        ckpt = ctx.checkpoint or self.find_checkpoint(ctx.run)
        if ckpt is None:
            raise FileNotFoundError(f"{ctx.run.path} has no IQL checkpoint (checkpoints/<variant>.d3)")
        algo = load_variant(ckpt, self.device)
        policy = variant_policy(algo, deterministic=ctx.deterministic is not False)
        return ctx.videos.record(policy, ctx.out, ctx.episodes, ctx.seed, title=Path(ckpt).stem, fps=10)

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


def _global_rng_state() -> dict[str, Any]:
    """The global numpy and torch generator states (d3rlpy samples minibatches from numpy's), JSON-ready."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }


def _set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`_global_rng_state` returned."""
    import torch

    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
