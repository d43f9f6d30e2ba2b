"""The online RL-VLM-F loop as a reward source for PPO: label pairs from recent rollouts, retrain, predict.

One composition of the preference pipeline (:mod:`vlmrl.preferences`): every ``label_every`` env steps (seen
through ``observe_rollout`` at rollout end) the :class:`~vlmrl.preferences.RolloutFragmenter` draws
``queries_per_update`` segment pairs from the last few rollouts (uniform / disagreement / entropy), the labeler
(a VLM or a simulated teacher, through the label cache when ``label_cache`` is set) answers them, and the
:class:`~vlmrl.preferences.RewardTrainer` counts them against the ground truth (the env reward), keeps the valid
ones and retrains the :class:`~vlmrl.rewards.preference.PreferenceRewardModel` ensemble; PPO then rewards the
whole rollout with the retrained model. The label statistics go to ``<run_dir>/labels/stats.json``
(:class:`~vlmrl.runs.LabelStats`, per-update history in ``extra``) and the labeled pairs beside it.

Failed labels (endpoint errors, unparseable answers, budget refusals) are counted, never cached and never
trained on; a run whose labeler gives too few valid ones (under ``min_valid_fraction`` of its queries) stops
with one error (or goes on with a warning, ``on_few_labels="warn"``). The labeler's spend budget is read from
the label cache, where every paid answer's cost is recorded: a resumed run continues from what was paid.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import CachedLabeler, LabelCache
from vlmrl.preferences import RewardTrainer, RolloutFragmenter, failure_detail
from vlmrl.rewards.base import RewardModel
from vlmrl.rewards.preference import QUERY_SELECTIONS, PreferenceRewardModel
from vlmrl.runs import LabelStats, RunFolder, write_json

log = logging.getLogger(__name__)


class OnlinePreferenceReward(RewardModel):
    """Learned image reward trained online from preference labels (``input_key="frame"``).

    Args:
        labeler: a :class:`~vlmrl.labelers.base.Labeler`, or a factory (e.g. a Hydra ``_partial_``) that is
            called with ``rng=`` to build one.
        run_dir: run folder; labels, stats and labeled pairs go to ``<run_dir>/labels/`` (None: not written).
        rng: randomness for pair sampling, minibatches and the labeler (passed in by the train job).
        device: torch device of the reward model.
        ensemble_size: reward nets in the ensemble.
        image_size: frames are resized to this square size for the nets (and stored at it).
        lr: Adam learning rate.
        batch_size: pairs per gradient step.
        label_every: env steps between label-and-retrain updates (the first update is at the first rollout).
        queries_per_update: pairs sent to the labeler per update.
        max_labels: total query budget of the run (pairs sent, valid or not).
        segment_length: frames per segment (1 = RL-VLM-F's single-frame comparisons).
        sampling: query selection: ``uniform``, ``disagreement`` or ``entropy``.
        candidate_factor: for active sampling, candidates scored per query sent.
        recent_rollouts: how many past rollouts pairs are drawn from.
        max_epochs: cap on training epochs per update.
        target_acc: stop training an update once the training accuracy reaches this (RL-VLM-F: 0.97).
        max_train_steps: cap on gradient steps per update (None: none); keeps an update's cost flat.
        label_cache: SQLite label cache shared across runs (a path, ``~`` expanded, or an open
            :class:`~vlmrl.labelers.cache.LabelCache`); the labeler is wrapped in a
            :class:`~vlmrl.labelers.cache.CachedLabeler` over it, which also keeps the labeler's spend record
            (its budget then holds across resumes). None: answers are not cached, spend is counted in memory.
        min_valid_fraction: share of the run's queries that must come back valid, checked after each update
            (and at least one valid label when the budget is used up).
        on_few_labels: ``error`` (stop with one line naming the counts and the fix) or ``warn`` (log it, write
            it to the label stats' ``warnings`` and train on what there is).
        seed: initial weights of the ensemble.
        net: the ensemble's per-frame net, ``cnn`` (PEBBLE's) or ``keypoints`` (spatial softmax; see
            :class:`~vlmrl.rewards.preference.KeypointRewardNet`).
        output: the net's last activation, ``tanh`` (PEBBLE) or ``linear``
            (:data:`~vlmrl.rewards.preference.REWARD_OUTPUTS`).
        normalize: after every retrain, standardise the reward to mean 0 and standard deviation 1 over the
            labelled frames. The Bradley-Terry loss fixes neither offset nor scale; a linear output drifts to
            hundreds, and SAC's entropy bonus is set against the reward's scale. PEBBLE does not (its tanh bounds
            it); off by default.
    """

    input_key = "frame"
    learns_online = True

    def __init__(
        self,
        labeler: Labeler | Callable[..., Labeler],
        run_dir: str | Path | None = None,
        rng: np.random.Generator | None = None,
        device: str = "cpu",
        ensemble_size: int = 3,
        image_size: int = 64,
        lr: float = 3e-4,
        batch_size: int = 64,
        label_every: int = 2048,
        queries_per_update: int = 50,
        max_labels: int = 500,
        segment_length: int = 1,
        sampling: str = "uniform",
        candidate_factor: int = 10,
        recent_rollouts: int = 2,
        max_epochs: int = 50,
        target_acc: float = 0.97,
        max_train_steps: int | None = None,
        label_cache: str | Path | LabelCache | None = None,
        min_valid_fraction: float = 0.1,
        on_few_labels: str = "error",
        seed: int = 0,
        net: str = "cnn",
        output: str = "tanh",
        normalize: bool = False,
        **_: Any,
    ):
        if sampling not in QUERY_SELECTIONS:
            raise ValueError(f"sampling={sampling!r}: use one of {', '.join(QUERY_SELECTIONS)}")
        for name, value in (
            ("label_every", label_every),
            ("queries_per_update", queries_per_update),
            ("segment_length", segment_length),
            ("recent_rollouts", recent_rollouts),
        ):
            if int(value) < 1:
                raise ValueError(f"{name}={value}: must be >= 1")
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        if not isinstance(labeler, Labeler):
            if not callable(labeler):
                raise TypeError(f"labeler must be a Labeler or a factory of one, got {type(labeler).__name__}")
            labeler = labeler(rng=np.random.default_rng(int(self.rng.integers(2**63))))
        if label_cache is not None:
            labeler = CachedLabeler(labeler, label_cache)
        self.labeler = labeler
        self.model = PreferenceRewardModel(
            ensemble_size, image_size, lr, batch_size, device=device, seed=seed, net=net, output=output
        )
        self.fragmenter = RolloutFragmenter(segment_length, recent_rollouts, sampling, candidate_factor, self.model)
        self.trainer = RewardTrainer(
            self.model,
            max_epochs=max_epochs,
            target_acc=target_acc,
            max_steps=max_train_steps,
            store_size=self.model.image_size,
            labeler=labeler.name,
            min_valid_fraction=min_valid_fraction,
            on_few_labels=on_few_labels,
        )
        self.label_every, self.queries_per_update = int(label_every), int(queries_per_update)
        self.max_labels = int(max_labels)
        self.run = None if run_dir is None else RunFolder(run_dir)
        if self.run is not None:
            self.run.labels.mkdir(parents=True, exist_ok=True)
        self.next_update = 0
        self.updates = 0
        self.normalize = bool(normalize)
        self.reward_offset, self.reward_scale = 0.0, 1.0  # predict() = (ensemble mean - offset) / scale
        self.last_train: dict[str, float] = {}
        self.last_spearman = float("nan")
        self.history: list[dict[str, Any]] = []

    # ---- RewardModel ---------------------------------------------------------------------------------------
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Ensemble-mean reward of ``uint8 (N, H, W, 3)`` frames, ``float32 (N,)`` (standardised if ``normalize``)."""
        raw = self.model.predict(batch)
        if not self.normalize:
            return raw
        return ((raw - self.reward_offset) / self.reward_scale).astype(np.float32)

    def _fit_normalization(self) -> None:
        """Offset and scale that standardise the reward over the labelled frames (after a retrain)."""
        frames = np.concatenate([self.trainer.first, self.trainer.second]).reshape(-1, *self.trainer.first.shape[2:])
        raw = self.model.predict(frames).astype(np.float64)
        self.reward_offset, self.reward_scale = float(raw.mean()), float(max(raw.std(), 1e-6))

    # ---- online loop ---------------------------------------------------------------------------------------
    @property
    def label_stats(self) -> LabelStats:
        """Counts of every label asked for so far (accuracy against the env reward included)."""
        return self.trainer.stats

    @property
    def budget_left(self) -> int:
        """Queries the run may still send."""
        return 0 if self.labeler.exhausted else max(0, self.max_labels - self.label_stats.queries)

    def observe_rollout(
        self, inputs: Sequence[np.ndarray], env_rewards: np.ndarray, dones: np.ndarray, num_timesteps: int
    ) -> bool:
        """Keep the rollout; every ``label_every`` steps label new pairs and retrain.

        Args:
            inputs: ``T * n_envs`` frames ``uint8 (H, W, 3)`` in step-major order (t0e0, t0e1, ...).
            env_rewards: ``float32 (T, n_envs)`` ground-truth rewards (for teachers and accuracy logs).
            dones: ``bool (T, n_envs)`` episode ends.
            num_timesteps: env steps so far.

        Returns:
            True when the ensemble was retrained.
        """
        env_rewards = np.asarray(env_rewards, np.float32)
        t_len, n_envs = env_rewards.shape
        frames = np.stack(inputs) if not isinstance(inputs, np.ndarray) else inputs
        if len(frames) != t_len * n_envs:
            raise ValueError(f"got {len(frames)} frames for a rollout of {t_len} steps x {n_envs} envs")
        self.fragmenter.add_rollout(frames.reshape(t_len, n_envs, *frames.shape[1:]), env_rewards, dones)
        retrained = False
        if num_timesteps >= self.next_update:
            if self.budget_left > 0:
                retrained = bool(self.update(num_timesteps)) and len(self.trainer) > 0
                self.next_update = num_timesteps + self.label_every
            else:  # no label will come any more: the labels so far must be enough
                self.trainer.check_labels(failure_detail(self.labeler.endpoint_stats()), final=True)
        sample = self.rng.choice(len(frames), size=min(256, len(frames)), replace=False)
        rewards = env_rewards.reshape(-1)[sample]
        if np.ptp(rewards) > 0:
            self.last_spearman = float(spearmanr(self.model.predict(frames[sample]), rewards).statistic)
        return retrained

    def update(self, num_timesteps: int = 0) -> dict[str, Any]:
        """Sample, label and retrain once; returns this update's history entry (empty when nothing was asked)."""
        n_query = min(self.queries_per_update, self.budget_left)
        query = self.fragmenter(n_query, self.rng, select=len(self.trainer) > 0)
        if len(query) == 0:
            return {}
        t0 = time.perf_counter()
        labels = self.labeler(list(query.pairs))
        label_s = time.perf_counter() - t0
        batch = self.trainer.add(query, labels)
        self.updates += 1
        self.trainer.check_labels(failure_detail(self.labeler.endpoint_stats()))
        t0 = time.perf_counter()
        if len(self.trainer):
            self.last_train = self.trainer.train(self.rng)
            if self.normalize:
                self._fit_normalization()
        train_s = time.perf_counter() - t0
        entry = {
            "step": int(num_timesteps),
            "update": self.updates,
            "queries": batch.queries,
            "valid": batch.valid,
            "ties": batch.ties,
            "judged": batch.judged,
            "correct": batch.correct,
            "cached": batch.cache_hits,
            "failures": batch.failures,
            "inconsistent": batch.inconsistent,
            "cost_usd": batch.cost_usd,
            "label_acc": batch.correct / batch.judged if batch.judged else None,
            "label_s": round(label_s, 3),
            "train_s": round(train_s, 3),
            **{f"train_{k}": v for k, v in self.last_train.items()},
        }
        self.history.append(entry)
        log.info("preference update %d at step %d: %s", self.updates, num_timesteps, entry)
        self._write_labels()
        return entry

    # ---- logging and persistence ---------------------------------------------------------------------------
    def label_accuracy(self) -> float:
        """Fraction of valid labels (with distinct ground-truth returns) that agree with the ground truth."""
        return self.label_stats.accuracy

    def metrics(self) -> dict[str, float]:
        """Per-rollout numbers for TensorBoard and metrics.jsonl."""
        out = {
            "pref_labels": float(self.label_stats.queries),
            "pref_labels_valid": float(self.label_stats.valid),
            "pref_label_failures": float(self.label_stats.failures),
            "pref_cost_usd": float(self.label_stats.cost_usd),
            "pref_label_acc": self.label_accuracy(),
            "pref_updates": float(self.updates),
            "pref_reward_gt_spearman": self.last_spearman,
        }
        for k in ("loss", "acc", "epochs"):
            if k in self.last_train:
                out[f"pref_train_{k}"] = float(self.last_train[k])
        return out

    def stats(self) -> LabelStats:
        """What ``labels/stats.json`` holds: the label counts and this run's spend, the spend recorded under the
        labeler's budget key, the endpoint counters and the per-update history.
        """  # noqa: D205
        return dataclasses.replace(
            self.label_stats,
            budget=self.max_labels,
            spend_total=self.labeler.spend_total(),
            warnings=list(self.label_stats.warnings),
            extra={
                "endpoint": self.labeler.endpoint_stats(),
                "dataset_pairs": len(self.trainer),
                "updates": self.updates,
                "next_update": self.next_update,
                "history": self.history,
            },
        )

    def _write_labels(self) -> None:
        if self.run is None:
            return
        self.trainer.save_pairs(self.run.labels / "pairs.npz")
        self.run.write_label_stats(self.stats())

    def save_state(self, directory: str | Path) -> None:
        """Write the ensemble, the labeled pairs and the loop's counters to ``directory``."""
        directory = Path(directory)
        self.model.save_state(directory)
        self.trainer.save_pairs(directory / "pairs.npz")
        write_json(
            directory / "preference_state.json",
            {
                "label_stats": self.trainer.state(),
                "updates": self.updates,
                "next_update": self.next_update,
                "last_train": self.last_train,
                "history": self.history,
                "reward_offset": self.reward_offset,
                "reward_scale": self.reward_scale,
            },
            indent=None,
        )

    def load_state(self, directory: str | Path) -> None:
        """Restore what :meth:`save_state` wrote (on resume)."""
        directory = Path(directory)
        self.model.load_state(directory)
        self.trainer.load_pairs(directory / "pairs.npz")
        state = json.loads((directory / "preference_state.json").read_text())
        if "label_stats" in state:
            self.trainer.load_state(state["label_stats"])
        else:  # written before the label statistics had their own record
            counts = state["counts"]
            self.trainer.load_state(
                {
                    "labeler": self.label_stats.labeler,
                    **{k: int(counts[k]) for k in ("queries", "valid", "judged", "correct")},
                    "cache_hits": int(counts.get("cached", 0)),
                    "paid": int(counts["queries"]) - int(counts.get("cached", 0)),
                }
            )
        self.updates, self.next_update = int(state["updates"]), int(state["next_update"])
        self.last_train, self.history = state["last_train"], state["history"]
        self.reward_offset = float(state.get("reward_offset", 0.0))  # absent: written before normalisation
        self.reward_scale = float(state.get("reward_scale", 1.0))

    def close(self) -> None:
        """Write the final stats (if anything was labeled) and release the labeler (threads, cache)."""
        if self.updates or self.label_stats.queries:
            self._write_labels()
        self.labeler.close()
