"""The online RL-VLM-F loop as a reward source for PPO: label pairs from recent rollouts, retrain, predict.

Every ``label_every`` env steps (seen through ``observe_rollout`` at rollout end) it samples candidate segment
pairs from the last few rollouts, picks ``queries_per_update`` of them (uniform / disagreement / entropy),
asks the labeler (a VLM or a simulated teacher), adds the valid labels to its dataset and retrains the
:class:`~vlmrl.rewards.preference.PreferenceRewardModel` ensemble; PPO then rewards the whole rollout with the
retrained model. Label accuracy against the ground truth (the env reward) is logged for the labeler and
written to ``<run_dir>/labels/stats.json``; the labeled pairs are saved beside it after every update.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from vlmrl.labelers.base import Labeler
from vlmrl.rewards.base import RewardModel
from vlmrl.rewards.preference import QUERY_SELECTIONS, PreferenceRewardModel, downsample_frames
from vlmrl.types import Fragment, FragmentPair

log = logging.getLogger(__name__)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        seed: initial weights of the ensemble.
    """

    input_key = "frame"

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
        seed: int = 0,
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
        self.labeler = labeler
        self.labeler_name = getattr(labeler, "name", type(labeler).__name__)
        self.model = PreferenceRewardModel(ensemble_size, image_size, lr, batch_size, device=device, seed=seed)
        self.label_every, self.queries_per_update = int(label_every), int(queries_per_update)
        self.max_labels, self.segment_length = int(max_labels), int(segment_length)
        self.sampling, self.candidate_factor = sampling, max(1, int(candidate_factor))
        self.max_epochs, self.target_acc = int(max_epochs), float(target_acc)
        self.max_train_steps = None if max_train_steps is None else int(max_train_steps)
        self.recent: deque[dict[str, np.ndarray]] = deque(maxlen=int(recent_rollouts))
        self.labels_dir = None if run_dir is None else Path(run_dir) / "labels"
        if self.labels_dir is not None:
            self.labels_dir.mkdir(parents=True, exist_ok=True)
        # Labeled dataset (downsampled frames) and bookkeeping.
        s, t = self.model.image_size, self.segment_length
        self.first = np.zeros((0, t, s, s, 3), np.uint8)
        self.second = np.zeros((0, t, s, s, 3), np.uint8)
        self.targets = np.zeros(0, np.float32)
        self.next_update = 0
        self.updates = 0
        self.counts = {"queries": 0, "valid": 0, "correct": 0, "judged": 0, "cached": 0}
        self.last_train: dict[str, float] = {}
        self.last_spearman = float("nan")
        self.history: list[dict[str, Any]] = []

    # ---- RewardModel ---------------------------------------------------------------------------------------
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Ensemble-mean reward of ``uint8 (N, H, W, 3)`` frames, ``float32 (N,)``."""
        return self.model.predict(batch)

    def evaluate(self, batch: np.ndarray) -> np.ndarray:
        """Side-effect-free scoring (videos, reports); same as :meth:`predict`."""
        return self.model.predict(batch)

    # ---- online loop ---------------------------------------------------------------------------------------
    @property
    def budget_left(self) -> int:
        """Queries the run may still send."""
        exhausted = bool(getattr(self.labeler, "exhausted", False))
        return 0 if exhausted else max(0, self.max_labels - self.counts["queries"])

    def observe_rollout(
        self, inputs: Sequence[np.ndarray], env_rewards: np.ndarray, dones: np.ndarray, num_timesteps: int
    ) -> None:
        """Keep the rollout; every ``label_every`` steps label new pairs and retrain.

        Args:
            inputs: ``T * n_envs`` frames ``uint8 (H, W, 3)`` in step-major order (t0e0, t0e1, ...).
            env_rewards: ``float32 (T, n_envs)`` ground-truth rewards (for teachers and accuracy logs).
            dones: ``bool (T, n_envs)`` episode ends.
            num_timesteps: env steps so far.
        """
        env_rewards = np.asarray(env_rewards, np.float32)
        t_len, n_envs = env_rewards.shape
        frames = np.stack(inputs) if not isinstance(inputs, np.ndarray) else inputs
        if len(frames) != t_len * n_envs:
            raise ValueError(f"got {len(frames)} frames for a rollout of {t_len} steps x {n_envs} envs")
        self.recent.append(
            {
                "frames": frames.reshape(t_len, n_envs, *frames.shape[1:]),
                "rewards": env_rewards,
                "dones": np.asarray(dones, bool),
            }
        )
        if num_timesteps >= self.next_update and self.budget_left > 0:
            self.update(num_timesteps)
            self.next_update = num_timesteps + self.label_every
        sample = self.rng.choice(len(frames), size=min(256, len(frames)), replace=False)
        rewards = env_rewards.reshape(-1)[sample]
        if np.ptp(rewards) > 0:
            self.last_spearman = float(spearmanr(self.model.predict(frames[sample]), rewards).statistic)

    def _segments(self) -> list[tuple[int, int, int]]:
        """(rollout, start step, env) of every segment inside one episode of the recent rollouts."""
        out = []
        length = self.segment_length
        for r, roll in enumerate(self.recent):
            t_len, n_envs = roll["rewards"].shape
            for e in range(n_envs):
                for t in range(t_len - length + 1):
                    if length == 1 or not roll["dones"][t : t + length - 1, e].any():
                        out.append((r, t, e))
        return out

    def _gather(self, segs: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
        frames = np.stack([self.recent[r]["frames"][t : t + self.segment_length, e] for r, t, e in segs])
        rewards = np.stack([self.recent[r]["rewards"][t : t + self.segment_length, e] for r, t, e in segs])
        return frames, rewards

    def update(self, num_timesteps: int = 0) -> dict[str, float]:
        """Sample, label and retrain once; returns this update's stats."""
        segs = self._segments()
        n_query = min(self.queries_per_update, self.budget_left)
        if len(segs) < 2 or n_query == 0:
            return {}
        active = self.sampling != "uniform" and len(self.targets) > 0
        n_cand = n_query * (self.candidate_factor if active else 1)
        i = self.rng.integers(0, len(segs), n_cand)
        j = (i + self.rng.integers(1, len(segs), n_cand)) % len(segs)  # j != i
        f1, r1 = self._gather([segs[k] for k in i])
        f2, r2 = self._gather([segs[k] for k in j])
        if active:
            pick = self.model.select_queries(f1, f2, n_query, self.sampling, self.rng)
            f1, r1, f2, r2 = f1[pick], r1[pick], f2[pick], r2[pick]
        pairs = [
            FragmentPair(Fragment(frames=f1[k], env_rewards=r1[k]), Fragment(frames=f2[k], env_rewards=r2[k]))
            for k in range(len(f1))
        ]
        t0 = time.perf_counter()
        labels = self.labeler(pairs)
        label_s = time.perf_counter() - t0
        values = np.array([lab.value for lab in labels], np.int64)
        valid = values != -1
        gt1, gt2 = r1.sum(1), r2.sum(1)
        judged = valid & (gt1 != gt2)
        correct = judged & (values == (gt2 > gt1).astype(np.int64))
        batch = {
            "queries": len(labels),
            "valid": int(valid.sum()),
            "judged": int(judged.sum()),
            "correct": int(correct.sum()),
            "cached": int(sum(lab.cached for lab in labels)),
        }
        for k, v in batch.items():
            self.counts[k] += v
        if valid.any():
            s = self.model.image_size
            self.first = np.concatenate([self.first, downsample_frames(f1[valid], s)])
            self.second = np.concatenate([self.second, downsample_frames(f2[valid], s)])
            self.targets = np.concatenate([self.targets, values[valid].astype(np.float32)])
        t0 = time.perf_counter()
        if len(self.targets):
            self.last_train = self.model.fit(
                self.first,
                self.second,
                self.targets,
                rng=self.rng,
                max_epochs=self.max_epochs,
                target_acc=self.target_acc,
                max_steps=self.max_train_steps,
            )
        train_s = time.perf_counter() - t0
        self.updates += 1
        entry = {
            "step": int(num_timesteps),
            "update": self.updates,
            **batch,
            "label_acc": batch["correct"] / batch["judged"] if batch["judged"] else None,
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
        return self.counts["correct"] / self.counts["judged"] if self.counts["judged"] else float("nan")

    def metrics(self) -> dict[str, float]:
        """Per-rollout numbers for TensorBoard and metrics.jsonl."""
        out = {
            "pref_labels": float(self.counts["queries"]),
            "pref_labels_valid": float(self.counts["valid"]),
            "pref_label_acc": self.label_accuracy(),
            "pref_updates": float(self.updates),
            "pref_reward_gt_spearman": self.last_spearman,
        }
        for k in ("loss", "acc", "epochs"):
            if k in self.last_train:
                out[f"pref_train_{k}"] = float(self.last_train[k])
        return out

    def stats(self) -> dict[str, Any]:
        """What ``labels/stats.json`` holds: per-labeler totals and accuracy, and the per-update history."""
        labeler_stats = dict(getattr(self.labeler, "stats", {}) or {})
        return {
            "labelers": {
                self.labeler_name: {
                    **self.counts,
                    "label_acc": None if not self.counts["judged"] else self.label_accuracy(),
                    "endpoint": {k: int(v) for k, v in labeler_stats.items()},
                }
            },
            "dataset_pairs": int(len(self.targets)),
            "updates": self.updates,
            "next_update": self.next_update,
            "history": self.history,
        }

    def _write_labels(self) -> None:
        if self.labels_dir is None:
            return
        self._save_pairs(self.labels_dir / "pairs.npz")
        _atomic_write_text(self.labels_dir / "stats.json", json.dumps(self.stats(), indent=2))

    def _save_pairs(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, first=self.first, second=self.second, targets=self.targets)
        os.replace(tmp, path)

    def save_state(self, directory: str | Path) -> None:
        """Write the ensemble, the labeled pairs and the loop's counters to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "reward_model.pt")
        self._save_pairs(directory / "pairs.npz")
        _atomic_write_text(
            directory / "preference_state.json",
            json.dumps(
                {
                    "counts": self.counts,
                    "updates": self.updates,
                    "next_update": self.next_update,
                    "last_train": self.last_train,
                    "history": self.history,
                }
            ),
        )

    def load_state(self, directory: str | Path) -> None:
        """Restore what :meth:`save_state` wrote (on resume)."""
        directory = Path(directory)
        self.model.load(directory / "reward_model.pt")
        with np.load(directory / "pairs.npz") as data:
            self.first, self.second, self.targets = data["first"], data["second"], data["targets"]
        state = json.loads((directory / "preference_state.json").read_text())
        self.counts.update(state["counts"])
        self.updates, self.next_update = int(state["updates"]), int(state["next_update"])
        self.last_train, self.history = state["last_train"], state["history"]

    def close(self) -> None:
        """Write the final stats and release the labeler (threads, cache)."""
        self._write_labels()
        if hasattr(self.labeler, "close"):
            self.labeler.close()
