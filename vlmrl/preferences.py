"""One preference pipeline, in imitation's shape: Fragmenter -> cached Labeler -> RewardTrainer.

A :class:`Fragmenter` draws segment pairs (:class:`~vlmrl.types.FragmentPairs`) from recent rollouts
(:class:`RolloutFragmenter`, online RL-VLM-F) or from an offline dataset (:class:`DatasetFragmenter`, Offline
RL-VLM-F); a labeler answers them through the one cache layer (:class:`~vlmrl.labelers.cache.CachedLabeler`);
the :class:`RewardTrainer` counts the labels against the ground truth (:func:`label_stats`, the one place label
accuracy is computed), keeps the valid pairs and fits the :class:`~vlmrl.rewards.preference.PreferenceRewardModel`
ensemble with the Bradley-Terry loss. :class:`~vlmrl.rewards.online_preference.OnlinePreferenceReward` and
:func:`vlmrl.data.relabel.relabel` are the two compositions.
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vlmrl.data.dataset import DatasetError, OfflineDataset
from vlmrl.labelers.cache import CachedLabeler
from vlmrl.rewards.preference import (
    QUERY_SELECTIONS,
    PreferenceRewardModel,
    bradley_terry_loss,
    downsample_frames,
    frames_to_tensor,
    torch_threads,
)
from vlmrl.runs import LabelStats, atomic_path
from vlmrl.types import Fragment, FragmentPair, FragmentPairs, Label

log = logging.getLogger(__name__)

__all__ = [
    "CachedLabeler",
    "DatasetFragmenter",
    "Fragmenter",
    "RewardTrainer",
    "RolloutFragmenter",
    "TooFewLabelsError",
    "add_label_stats",
    "failure_detail",
    "label_stats",
]


# ---- fragmenters ---------------------------------------------------------------------------------------------
class Fragmenter(abc.ABC):
    """Draws the segment pairs to label (imitation's ``Fragmenter``)."""

    @abc.abstractmethod
    def __call__(self, num_pairs: int, rng: np.random.Generator) -> FragmentPairs:
        """Draw up to ``num_pairs`` pairs.

        Returns:
            The pairs (fragments carry ``frames``, ``env_rewards`` and what else the source has) and the positions
            of their steps in the source; empty when the source cannot make a pair yet.
        """


#: Episodes whose mean true return sets the simulated teacher's margin online (PEBBLE averages the last 10).
MARGIN_EPISODES = 10


def _empty_pairs(segment: int) -> FragmentPairs:
    empty = np.zeros((0, segment), np.int64)
    return FragmentPairs((), empty, empty.copy())


class RolloutFragmenter(Fragmenter):
    """Pairs of segments from the last few rollouts, optionally picked by the ensemble's uncertainty.

    A segment is ``segment_length`` consecutive steps of one env inside one episode. Candidates are drawn uniformly
    (two distinct segments per pair); with ``disagreement`` or ``entropy`` sampling ``candidate_factor`` times as
    many are drawn and the ``model`` picks the most uncertain ones (:meth:`PreferenceRewardModel.select_queries`).

    Args:
        segment_length: steps per segment (RL-VLM-F: 1).
        recent_rollouts: how many past rollouts pairs are drawn from.
        sampling: ``uniform``, ``disagreement`` or ``entropy``.
        candidate_factor: candidates scored per pair returned, for active sampling.
        model: the ensemble that scores candidates (needed unless ``sampling="uniform"``).
    """

    def __init__(
        self,
        segment_length: int = 1,
        recent_rollouts: int = 2,
        sampling: str = "uniform",
        candidate_factor: int = 10,
        model: PreferenceRewardModel | None = None,
    ):
        if sampling not in QUERY_SELECTIONS:
            raise ValueError(f"sampling={sampling!r}: use one of {', '.join(QUERY_SELECTIONS)}")
        if sampling != "uniform" and model is None:
            raise ValueError(f"sampling={sampling!r} picks pairs by the ensemble's uncertainty: pass model=")
        for name, value in (("segment_length", segment_length), ("recent_rollouts", recent_rollouts)):
            if int(value) < 1:
                raise ValueError(f"{name}={value}: must be >= 1")
        self.segment_length, self.sampling = int(segment_length), sampling
        self.candidate_factor, self.model = max(1, int(candidate_factor)), model
        self.recent: deque[dict[str, np.ndarray]] = deque(maxlen=int(recent_rollouts))
        self.finished: deque[tuple[float, int]] = deque(maxlen=MARGIN_EPISODES)  # (true return, length)
        self._running: tuple[np.ndarray, np.ndarray] | None = None  # per env: current episode's return, length

    def add_rollout(self, frames: np.ndarray, env_rewards: np.ndarray, dones: np.ndarray) -> None:
        """Keep one rollout: ``uint8 (T, n_envs, H, W, 3)`` frames, ``float32 (T, n_envs)`` rewards, ``bool`` dones."""
        self.recent.append({"frames": frames, "rewards": env_rewards, "dones": np.asarray(dones, bool)})
        n_envs = env_rewards.shape[1]
        if self._running is None or len(self._running[0]) != n_envs:
            self._running = (np.zeros(n_envs), np.zeros(n_envs, np.int64))
        ret, length = self._running
        for rewards, ends in zip(env_rewards, np.asarray(dones, bool), strict=True):
            ret += rewards
            length += 1
            for e in np.flatnonzero(ends):
                self.finished.append((float(ret[e]), int(length[e])))
                ret[e], length[e] = 0.0, 0

    def episode_scale(self) -> dict[str, float]:
        """``mean_episode_return`` and ``episode_length`` of the last finished episodes (the running ones before
        any ended): the fragments' margin meta for the simulated teacher.
        """  # noqa: D205
        if self.finished:
            returns, lengths = np.array(self.finished).T
        elif self._running is not None and self._running[1].max() > 0:
            returns, lengths = self._running[0][self._running[1] > 0], self._running[1][self._running[1] > 0]
        else:
            return {}
        return {"mean_episode_return": float(np.mean(returns)), "episode_length": float(np.mean(lengths))}

    def segments(self) -> list[tuple[int, int, int]]:
        """``(rollout, start step, env)`` of every segment inside one episode of the recent rollouts."""
        out = []
        length = self.segment_length
        for r, roll in enumerate(self.recent):
            t_len, n_envs = roll["rewards"].shape
            for e in range(n_envs):
                for t in range(t_len - length + 1):
                    if length == 1 or not roll["dones"][t : t + length - 1, e].any():
                        out.append((r, t, e))
        return out

    def __call__(self, num_pairs: int, rng: np.random.Generator, select: bool = True) -> FragmentPairs:
        """Draw ``num_pairs`` pairs; ``select=False`` skips the uncertainty selection (an untrained ensemble)."""
        segs = self.segments()
        if len(segs) < 2 or num_pairs < 1:
            return _empty_pairs(self.segment_length)
        active = select and self.sampling != "uniform"
        n_cand = num_pairs * (self.candidate_factor if active else 1)
        i = rng.integers(0, len(segs), n_cand)
        j = (i + rng.integers(1, len(segs), n_cand)) % len(segs)  # j != i
        f1, r1 = self._gather([segs[k] for k in i])
        f2, r2 = self._gather([segs[k] for k in j])
        if active:
            pick = self.model.select_queries(f1, f2, num_pairs, self.sampling, rng)
            f1, r1, f2, r2, i, j = f1[pick], r1[pick], f2[pick], r2[pick], i[pick], j[pick]
        meta = self.episode_scale()
        pairs = tuple(
            FragmentPair(
                Fragment(frames=f1[k], env_rewards=r1[k], meta=meta),
                Fragment(frames=f2[k], env_rewards=r2[k], meta=meta),
            )
            for k in range(len(f1))
        )
        return FragmentPairs(pairs, self._positions(segs, i), self._positions(segs, j))

    def _gather(self, segs: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
        frames = np.stack([self.recent[r]["frames"][t : t + self.segment_length, e] for r, t, e in segs])
        rewards = np.stack([self.recent[r]["rewards"][t : t + self.segment_length, e] for r, t, e in segs])
        return frames, rewards

    def _positions(self, segs: list[tuple[int, int, int]], picks: np.ndarray) -> np.ndarray:
        """``int64 (P, T)`` step-major positions (t * n_envs + e, rollouts back to back) of the picked segments."""
        sizes = [roll["rewards"].size for roll in self.recent]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        steps = np.arange(self.segment_length)
        rows = []
        for k in picks:
            r, t, e = segs[k]
            rows.append(offsets[r] + (t + steps) * self.recent[r]["rewards"].shape[1] + e)
        return np.asarray(rows, np.int64).reshape(len(picks), self.segment_length)


class DatasetFragmenter(Fragmenter):
    """Pairs of ``segment``-step windows of an offline dataset, each inside one episode, uniform over positions.

    Fragments carry the rows' frames (if stored), observations and ground-truth rewards (if any), and
    ``meta={"rows", "source"}`` plus, with ground truth, the dataset's ``mean_episode_return`` and mean
    ``episode_length`` (the simulated teacher's margin); the positions are dataset rows.

    Args:
        dataset: the dataset.
        segment: steps per segment (RL-VLM-F compares single frames: 1).
    """

    def __init__(self, dataset: OfflineDataset, segment: int = 1):
        if segment < 1:
            raise ValueError(f"segment={segment}: must be >= 1")
        self.dataset, self.segment = dataset, int(segment)
        starts = [
            np.arange(s.start, s.stop - segment + 1) for s in dataset.episode_slices() if s.stop - s.start >= segment
        ]
        if not starts:
            raise DatasetError(dataset.source, f"no episode is at least {segment} steps long; lower relabel.segment")
        self.starts = np.concatenate(starts)
        self.ground_truth = dataset.ground_truth_rewards()
        self.scale: dict[str, float] = {}
        episodes = list(dataset.episode_slices())
        if self.ground_truth is not None and episodes:
            returns = [self.ground_truth[s].astype(np.float64).sum() for s in episodes]
            lengths = [s.stop - s.start for s in episodes]
            self.scale = {"mean_episode_return": float(np.mean(returns)), "episode_length": float(np.mean(lengths))}

    def __call__(self, num_pairs: int, rng: np.random.Generator) -> FragmentPairs:
        """Draw ``num_pairs`` pairs (with replacement)."""
        if num_pairs < 1:
            raise ValueError(f"num_pairs={num_pairs}: must be >= 1")
        picks = self.starts[rng.integers(0, len(self.starts), size=(num_pairs, 2))]
        offsets = np.arange(self.segment)
        first, second = picks[:, :1] + offsets, picks[:, 1:] + offsets
        pairs = tuple(FragmentPair(self.fragment(a), self.fragment(b)) for a, b in zip(first, second, strict=True))
        return FragmentPairs(pairs, first, second)

    def fragment(self, rows: np.ndarray) -> Fragment:
        """A :class:`Fragment` of the given rows: frames, observations and ground-truth rewards."""
        data, gt = self.dataset, self.ground_truth
        return Fragment(
            frames=None if data.frames is None else data.frames[rows],
            observations=data.observations[rows],
            env_rewards=None if gt is None else gt[rows],
            meta={"rows": rows.tolist(), "source": data.source, **self.scale},
        )


# ---- label statistics ----------------------------------------------------------------------------------------
def ground_truth_return(fragment: Fragment) -> float | None:
    """The fragment's undiscounted ground-truth return (``None`` without ``env_rewards``)."""
    if fragment.env_rewards is None or len(fragment.env_rewards) == 0:
        return None
    return float(np.asarray(fragment.env_rewards).sum())


def label_stats(pairs: Sequence[FragmentPair], labels: Sequence[Label], labeler: str = "") -> LabelStats:
    """Count one batch of preference labels and how many agree with the ground truth.

    A label is *judged* when it is valid, not a tie (0.5, counted in ``ties``) and both fragments have
    ground-truth rewards with different returns; it is *correct* when it names the fragment with the higher
    return. Cached labels count as cache hits, failed ones as failures, the rest as paid; a failed answer that
    cost something (unparseable) counts as paid too. The tokens and money of the paid answers are summed once
    per answer (a pair asked twice in one batch shares one), and swap-inconsistent ones are counted.

    Args:
        pairs: the queries.
        labels: one label per query.
        labeler: name written into the record.

    Returns:
        A :class:`~vlmrl.runs.LabelStats` of this batch (``accuracy`` = correct / judged).
    """
    if len(pairs) != len(labels):
        raise ValueError(f"got {len(labels)} labels for {len(pairs)} pairs")
    stats = LabelStats(labeler=labeler, queries=len(labels))
    counted: set[int] = set()
    for pair, label in zip(pairs, labels, strict=True):
        if label.cached:
            stats.cache_hits += 1
        else:
            stats.failures += int(label.failed)
            stats.paid += int(not label.failed or label.spend is not None)
        if label.spend is not None and not label.cached and id(label) not in counted:
            counted.add(id(label))
            stats.prompt_tokens += label.spend.prompt_tokens
            stats.completion_tokens += label.spend.completion_tokens
            stats.cost_usd += label.spend.cost_usd
        stats.inconsistent += int(label.inconsistent)
        if not label.valid:
            continue
        stats.valid += 1
        if label.value == 0.5:
            stats.ties += 1
            continue
        r1, r2 = ground_truth_return(pair.first), ground_truth_return(pair.second)
        if r1 is None or r2 is None or r1 == r2:
            continue
        stats.judged += 1
        stats.correct += int(label.value == int(r2 > r1))
    return stats


def add_label_stats(total: LabelStats, batch: LabelStats) -> LabelStats:
    """Add ``batch``'s counters into ``total`` (in place; ``labeler``, ``budget``, ``spend_total``, ``warnings``
    and ``extra`` are kept).
    """  # noqa: D205
    total.queries += batch.queries
    total.paid += batch.paid
    total.cache_hits += batch.cache_hits
    total.valid += batch.valid
    total.ties += batch.ties
    total.judged += batch.judged
    total.correct += batch.correct
    total.failures += batch.failures
    total.prompt_tokens += batch.prompt_tokens
    total.completion_tokens += batch.completion_tokens
    total.cost_usd += batch.cost_usd
    total.inconsistent += batch.inconsistent
    return total


def failure_detail(endpoint: dict[str, int]) -> str:
    """A labeler's failure counters (``endpoint_stats``) in words: ``"errors 3, unparseable 12"`` ("" if none)."""
    kinds = ("errors", "unparseable", "over_budget")
    return ", ".join(f"{kind} {endpoint[kind]}" for kind in kinds if endpoint.get(kind))


class TooFewLabelsError(ValueError):
    """The labeler gave too few valid labels to train the reward model on."""


#: What ``on_few_labels`` accepts: stop the run, or continue with a warning in the log and the label stats.
FEW_LABELS_ACTIONS = ("error", "warn")
_FEW_LABELS = "too few valid labels: "


# ---- reward trainer ------------------------------------------------------------------------------------------
class RewardTrainer:
    """Fits a :class:`PreferenceRewardModel` ensemble on labeled pairs with the Bradley-Terry loss.

    It keeps the labeled dataset (the valid pairs' frames and targets) and the label statistics of everything
    it was given; each member trains on its own shuffle of the data (a cheap bootstrap) with the model's Adam
    optimizer and batch size until the epoch's training accuracy reaches ``target_acc``.

    Args:
        model: the ensemble (its ``optimizer`` and ``batch_size`` are used).
        max_epochs: upper bound on passes over the data per :meth:`train`.
        target_acc: stop once an epoch's mean training accuracy reaches this (RL-VLM-F: 0.97).
        max_steps: cap on gradient steps per :meth:`train` (None: no cap), so an update's cost stays flat.
        store_size: frames are downsampled to this square side when stored (None: kept as given).
        labeler: labeler name in the statistics.
        min_valid_fraction: the share of the queries asked so far that must come back valid (not failed, not
            "can't tell"), checked by :meth:`check_labels`; at least one must, once no more labels will come.
        on_few_labels: ``error`` (:class:`TooFewLabelsError`) or ``warn`` (log it, note it in
            ``stats.warnings`` and go on with what there is).
    """

    def __init__(
        self,
        model: PreferenceRewardModel,
        max_epochs: int = 50,
        target_acc: float = 0.97,
        max_steps: int | None = None,
        store_size: int | None = None,
        labeler: str = "",
        min_valid_fraction: float = 0.1,
        on_few_labels: str = "error",
    ):
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs={max_epochs}: must be >= 1")
        if on_few_labels not in FEW_LABELS_ACTIONS:
            raise ValueError(f"on_few_labels={on_few_labels!r}: use one of {', '.join(FEW_LABELS_ACTIONS)}")
        if not 0.0 <= float(min_valid_fraction) <= 1.0:
            raise ValueError(f"min_valid_fraction={min_valid_fraction}: must be in [0, 1]")
        self.min_valid_fraction, self.on_few_labels = float(min_valid_fraction), on_few_labels
        self.model = model
        self.max_epochs, self.target_acc = int(max_epochs), float(target_acc)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.store_size = None if store_size is None else int(store_size)
        self.stats = LabelStats(labeler=labeler)
        self.first: np.ndarray | None = None
        self.second: np.ndarray | None = None
        self.targets = np.zeros(0, np.float32)

    def __len__(self) -> int:
        """Labeled pairs kept for training."""
        return len(self.targets)

    def add(self, query: FragmentPairs | Sequence[FragmentPair], labels: Sequence[Label]) -> LabelStats:
        """Count ``labels`` (:func:`label_stats`) and keep the valid pairs; returns this batch's statistics."""
        pairs = query.pairs if isinstance(query, FragmentPairs) else tuple(query)
        batch = label_stats(pairs, labels, self.stats.labeler)
        add_label_stats(self.stats, batch)
        keep = [k for k, label in enumerate(labels) if label.valid]
        if keep:
            first = self._frames([pairs[k].first for k in keep])
            second = self._frames([pairs[k].second for k in keep])
            targets = np.array([labels[k].value for k in keep], np.float32)
            self.first = first if self.first is None else np.concatenate([self.first, first])
            self.second = second if self.second is None else np.concatenate([self.second, second])
            self.targets = np.concatenate([self.targets, targets])
        return batch

    def check_labels(self, detail: str = "", final: bool = False) -> bool:
        """Whether the labeler gives enough valid labels to train on: ``min_valid_fraction`` of the queries asked.

        A labeler that answers garbage, fails or only says "can't tell" is caught at the first update instead of
        leaving the reward model untrained for the whole run.

        Args:
            detail: the labeler's own account of its failures, added to the message (e.g. ``"errors 3"``).
            final: no more labels will come (budget used up, all asked): at least one valid label is needed.

        Returns:
            True when there are enough; False (after a warning, with ``on_few_labels="warn"``) when not.

        Raises:
            TooFewLabelsError: too few, with ``on_few_labels="error"``; one line naming the counts and the fix.
        """
        asked, valid = self.stats.queries, len(self)
        if valid >= self.min_valid_fraction * asked and (valid > 0 or not (final or asked)):
            return True
        stats = self.stats
        msg = (
            f"{_FEW_LABELS}labeler {stats.labeler or 'unnamed'} gave {valid} valid labels for {asked} queries"
            f" ({stats.failures} failed, {stats.inconsistent} inconsistent{', ' + detail if detail else ''}),"
            f" under min_valid_fraction={self.min_valid_fraction:g} (and at least one) needed to train the reward"
            " model: check the labeler (endpoint, model, prompt, budget)"
        )
        msg += (
            ", or set labelers.on_few_labels=warn to continue anyway"
            if self.on_few_labels == "error"
            else "; continuing with what there is (on_few_labels=warn)"
        )
        if self.on_few_labels == "error":
            raise TooFewLabelsError(msg)
        earlier = [k for k, w in enumerate(stats.warnings) if w.startswith(_FEW_LABELS)]
        if earlier:  # one warning, kept up to date
            stats.warnings[earlier[0]] = msg
        else:
            log.warning(msg)
            stats.warnings.append(msg)
        return False

    def _frames(self, fragments: list[Fragment]) -> np.ndarray:
        if any(f.frames is None for f in fragments):
            raise ValueError(
                "a fragment has no frames: the preference reward model learns from frames uint8 (T, H, W, 3)"
            )
        frames = np.stack([np.asarray(f.frames) for f in fragments])
        return frames if self.store_size is None else downsample_frames(frames, self.store_size)

    def train(self, rng: np.random.Generator) -> dict[str, float]:
        """Fit the ensemble on every kept pair (see :meth:`fit`)."""
        if not len(self):
            raise ValueError("no labeled pair to train on: every label was -1 (check the labeler's thresholds)")
        return self.fit(self.first, self.second, self.targets, rng)

    def fit(
        self, first: np.ndarray, second: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> dict[str, float]:
        """Train every member on labeled pairs until its training accuracy reaches ``target_acc``.

        Args:
            first: ``uint8 (P, T, H, W, 3)`` first segments.
            second: ``uint8 (P, T, H, W, 3)`` second segments.
            labels: ``(P,)`` targets: 0 = first preferred, 1 = second, 0.5 = equal.
            rng: shuffles each member's minibatches independently.

        Returns:
            ``{"loss", "acc", "epochs", "steps", "pairs"}`` of the last (possibly partial) epoch.
        """
        with torch_threads(self.model.num_threads):
            return self._fit(first, second, labels, rng)

    def _fit(self, first, second, labels, rng) -> dict[str, float]:
        model, max_steps = self.model, self.max_steps
        n = len(labels)
        if not (len(first) == len(second) == n) or n == 0:
            raise ValueError(f"fit needs equally many first/second/labels (>0), got {len(first)}/{len(second)}/{n}")
        y = torch.as_tensor(np.asarray(labels, np.float32), device=model.device)
        xf = frames_to_tensor(first.reshape(-1, *first.shape[2:]), model.image_size, model.device)
        xs = frames_to_tensor(second.reshape(-1, *second.shape[2:]), model.image_size, model.device)
        t = first.shape[1]
        xf = xf.reshape(n, t, *xf.shape[1:])
        xs = xs.reshape(n, t, *xs.shape[1:])
        model.train()
        k, batch_size = len(model.members), model.batch_size
        loss_sum = acc_sum = 0.0
        epochs = steps = seen = 0
        for epochs in range(1, self.max_epochs + 1):  # noqa: B007 (reported after the loop)
            perms = [rng.permutation(n) for _ in range(k)]
            loss_sum = correct = total = 0.0
            seen = 0
            for start in range(0, n, batch_size):
                if max_steps is not None and steps >= max_steps:
                    break
                loss = 0.0
                for member, perm in zip(model.members, perms, strict=True):
                    idx = torch.as_tensor(perm[start : start + batch_size], device=model.device)
                    bf, bs = xf[idx], xs[idx]
                    r1 = member(bf.flatten(0, 1)).reshape(len(idx), t).sum(-1)  # segment returns R1, R2
                    r2 = member(bs.flatten(0, 1)).reshape(len(idx), t).sum(-1)
                    target = y[idx]
                    loss = loss + bradley_terry_loss(r1, r2, target)
                    hard = target != 0.5
                    correct += float(((r2 > r1).float() == target)[hard].sum())
                    total += float(hard.sum())
                model.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                model.optimizer.step()
                loss_sum += float(loss.detach()) / k * len(idx)
                steps += 1
                seen += len(idx)
            acc_sum = correct / max(total, 1.0)
            if acc_sum >= self.target_acc or (max_steps is not None and steps >= max_steps):
                break
        return {
            "loss": loss_sum / max(seen, 1),
            "acc": acc_sum,
            "epochs": float(epochs),
            "steps": float(steps),
            "pairs": float(n),
        }

    # ---- persistence -----------------------------------------------------------------------------------------
    def save_pairs(self, path: str | Path) -> None:
        """Write the kept pairs to an ``.npz`` (``first``, ``second``, ``targets``; atomic)."""
        empty = np.zeros((0,), np.uint8)
        with atomic_path(path) as tmp:
            np.savez_compressed(
                tmp,
                first=empty if self.first is None else self.first,
                second=empty if self.second is None else self.second,
                targets=self.targets,
            )

    def load_pairs(self, path: str | Path) -> None:
        """Restore the pairs :meth:`save_pairs` wrote."""
        with np.load(path) as data:
            self.targets = data["targets"].astype(np.float32, copy=False)
            has = len(self.targets) > 0
            self.first = data["first"] if has else None
            self.second = data["second"] if has else None

    def state(self) -> dict:
        """JSON-ready label statistics (for a checkpoint)."""
        return self.stats.to_dict()

    def load_state(self, state: dict) -> None:
        """Restore what :meth:`state` returned."""
        self.stats = LabelStats.from_dict(state)
