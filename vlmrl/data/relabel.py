"""Relabel an offline dataset with a learned or zero-shot reward (Offline RL-VLM-F), resumably.

Pipeline (RL-VLM-F applied to a fixed dataset):

1. sample pairs of segments (``T`` consecutive transitions of one episode; RL-VLM-F uses ``T = 1``);
2. ask a labeler (VLM or simulated teacher) which one is closer to the goal; labels go through the
   :class:`~vlmrl.labelers.cache.LabelCache`, so a restarted run pays for no label twice;
3. fit the reward model on the labeled pairs (Bradley-Terry), saved once fitted;
4. score every transition in resumable shards (:mod:`vlmrl.data.scoring`, locally or on Ray Data);
5. write the dataset with the learned rewards (ground truth kept in ``infos["env_reward"]``), the labels used,
   and a reward-versus-ground-truth agreement report.

Without a labeler the reward model is used as is (zero-shot, e.g. CLIP) and steps 1-3 are skipped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmrl.data.dataset import DatasetError, OfflineDataset
from vlmrl.data.scoring import score_dataset
from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import LabelCache
from vlmrl.rewards.base import RewardModel
from vlmrl.types import Fragment, FragmentPair


@dataclass(frozen=True)
class PairSample:
    """Indices of labeled segment pairs: ``first``/``second`` are ``int64 (P, T)`` rows of the flat dataset."""

    first: np.ndarray
    second: np.ndarray


def sample_segment_pairs(dataset: OfflineDataset, num_pairs: int, segment: int, rng: np.random.Generator) -> PairSample:
    """Draw ``num_pairs`` pairs of ``segment``-step windows, each inside one episode, uniformly over positions."""
    if num_pairs < 1 or segment < 1:
        raise ValueError(f"num_pairs={num_pairs}, segment={segment}: both must be >= 1")
    starts = []
    for s in dataset.episode_slices():
        if s.stop - s.start >= segment:
            starts.append(np.arange(s.start, s.stop - segment + 1))
    if not starts:
        raise DatasetError(dataset.source, f"no episode is at least {segment} steps long; lower relabel.segment")
    valid = np.concatenate(starts)
    picks = valid[rng.integers(0, len(valid), size=(num_pairs, 2))]
    offsets = np.arange(segment)
    return PairSample(first=picks[:, :1] + offsets, second=picks[:, 1:] + offsets)


def fragment(dataset: OfflineDataset, rows: np.ndarray, gt: np.ndarray | None) -> Fragment:
    """A :class:`Fragment` of the given rows: frames, observations and ground-truth rewards."""
    return Fragment(
        frames=None if dataset.frames is None else dataset.frames[rows],
        observations=dataset.observations[rows],
        env_rewards=None if gt is None else gt[rows],
        meta={"rows": rows.tolist(), "source": dataset.source},
    )


def label_pairs(
    labeler: Labeler,
    dataset: OfflineDataset,
    pairs: PairSample,
    cache: LabelCache | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, list[str], dict[str, float]]:
    """Label every pair, through the cache; returns ``(labels int64 (P,), raw answers, stats)``.

    The cache key covers the labeler's name, model and prompt template and the content of both segments (frames
    and ground-truth rewards), so a label is reused only for exactly the same question.
    """
    gt = dataset.ground_truth_rewards()
    model = str(getattr(labeler, "model", ""))
    template = str(getattr(labeler, "template", getattr(labeler, "prompt", "")))
    name = getattr(labeler, "name", type(labeler).__name__)
    labels = np.full(len(pairs.first), -1, np.int64)
    raws = [""] * len(labels)
    keys = []
    for a, b in zip(pairs.first, pairs.second, strict=True):
        contents = [dataset.frames[a] if dataset.frames is not None else dataset.observations[a]]
        contents.append(dataset.frames[b] if dataset.frames is not None else dataset.observations[b])
        if gt is not None:
            contents += [gt[a], gt[b]]
        keys.append(LabelCache.key(name, model, template, contents))
    todo = []
    for i, k in enumerate(keys):
        hit = None if cache is None else cache.get(k)
        if hit is None:
            todo.append(i)
        else:
            labels[i], raws[i] = hit.value, hit.raw
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        queries = [
            FragmentPair(fragment(dataset, pairs.first[i], gt), fragment(dataset, pairs.second[i], gt)) for i in chunk
        ]
        answers = labeler(queries)
        if len(answers) != len(chunk):
            raise ValueError(f"labeler {name} returned {len(answers)} labels for {len(chunk)} queries")
        for i, lab in zip(chunk, answers, strict=True):
            labels[i], raws[i] = lab.value, lab.raw
        if cache is not None:  # stored as soon as paid for
            cache.put_many(
                (keys[i], lab, {"rows": [pairs.first[i].tolist(), pairs.second[i].tolist()]})
                for i, lab in zip(chunk, answers, strict=True)
            )
    stats = {"pairs": float(len(labels)), "paid": float(len(todo)), "cached": float(len(labels) - len(todo))}
    valid = labels >= 0
    stats["valid"] = float(valid.sum())
    if gt is not None and valid.any():  # how often the labels agree with the ground truth
        r1, r2 = gt[pairs.first].sum(1), gt[pairs.second].sum(1)
        stats["label_accuracy"] = float(((r2 > r1).astype(np.int64) == labels)[valid].mean())
    return labels, raws, stats


def dataset_fingerprint(dataset: OfflineDataset) -> str:
    """Content hash of what the reward model reads and the episode layout (cheap: one pass over the bytes)."""
    h = hashlib.sha256()
    for arr in (dataset.frames, dataset.observations, dataset.terminals, dataset.timeouts):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def reward_inputs(dataset: OfflineDataset, reward: RewardModel) -> np.ndarray:
    """What ``reward.predict`` reads: frames for ``input_key == "frame"``, else the state observations."""
    key = getattr(reward, "input_key", "frame")
    if key == "frame":
        if dataset.frames is None:
            raise DatasetError(
                dataset.source, "has no frames but the reward model reads frames; collect with collect.frames=true"
            )
        return dataset.frames
    if key in ("observation", "observations", "state"):
        return dataset.observations
    raise ValueError(
        f"reward model reads info[{key!r}], which offline datasets do not store; use a frame or state model"
    )


def relabel(
    dataset: OfflineDataset,
    reward: RewardModel,
    work_dir: str | Path,
    rng: np.random.Generator,
    labeler: Labeler | None = None,
    num_pairs: int = 2000,
    segment: int = 1,
    fit_kwargs: dict[str, Any] | None = None,
    backend: str = "local",
    shard_size: int = 4096,
    batch_size: int = 256,
    num_actors: int = 2,
    log: Callable[[str], None] = print,
) -> tuple[OfflineDataset, dict[str, Any]]:
    """Run the relabeling pipeline; every intermediate result is kept under ``work_dir`` for resuming.

    Args:
        dataset: the dataset to relabel (its ground truth, when present, feeds the teacher and the report).
        reward: the reward model; with a ``labeler`` it must have ``fit(first, second, labels, rng, **kw)``.
        work_dir: ``labels.sqlite`` (label cache), ``labels.npz``, ``reward_model.pt``, ``shards/``.
        rng: draws the pairs and the reward model's minibatches.
        labeler: preference labeler; ``None`` uses ``reward`` zero-shot.
        num_pairs: pairs to label.
        segment: steps per segment.
        fit_kwargs: extra arguments of ``reward.fit`` (``max_epochs``, ``target_acc``).
        backend: ``local`` or ``ray`` scoring.
        shard_size: transitions per scored shard.
        batch_size: transitions per ``predict`` call.
        num_actors: Ray reward-model actors.
        log: progress messages.

    Returns:
        ``(relabeled dataset, report)``; the report holds label stats, fit stats, agreement and timings.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"transitions": len(dataset), "episodes": dataset.num_episodes, "backend": backend}
    inputs = reward_inputs(dataset, reward)
    model_id = type(reward).__name__
    label_arrays = None
    if labeler is not None:
        t0 = time.perf_counter()
        pairs = sample_segment_pairs(dataset, num_pairs, segment, rng)
        cache = LabelCache(work / "labels.sqlite")
        try:
            labels, raws, label_stats = label_pairs(labeler, dataset, pairs, cache)
        finally:
            cache.close()
        report["labels"] = {**label_stats, "seconds": time.perf_counter() - t0}
        log(f"labels: {label_stats}")
        label_arrays = {"first": pairs.first, "second": pairs.second, "labels": labels, "raw": np.array(raws)}
        np.savez(work / "labels.npz", **label_arrays)
        model_file = work / "reward_model.pt"
        if model_file.exists() and hasattr(reward, "load"):
            reward.load(model_file)
            report["fit"] = json.loads((work / "fit.json").read_text()) if (work / "fit.json").exists() else {}
            log(f"reward model loaded from {model_file}")
        else:
            if not hasattr(reward, "fit"):
                raise TypeError(f"{type(reward).__name__} has no fit(): with a labeler, pass a trainable reward model")
            valid = labels >= 0
            if not valid.any():
                raise ValueError("the labeler gave no usable label (all -1); check its thresholds or prompt")
            t0 = time.perf_counter()
            first, second = inputs[pairs.first[valid]], inputs[pairs.second[valid]]  # (P, T, ...) segments
            fit = reward.fit(first, second, labels[valid].astype(np.float32), rng=rng, **(fit_kwargs or {}))
            fit = {k: float(v) for k, v in dict(fit or {}).items()}
            fit["seconds"] = time.perf_counter() - t0
            report["fit"] = fit
            log(f"reward model fit: {fit}")
            if hasattr(reward, "save"):
                reward.save(model_file)
                (work / "fit.json").write_text(json.dumps(fit))
        if model_file.exists():
            model_id = hashlib.sha256(model_file.read_bytes()).hexdigest()[:16]
    t0 = time.perf_counter()
    fingerprint = f"{dataset_fingerprint(dataset)}-{model_id}"
    learned = score_dataset(
        reward,
        inputs,
        work / "shards",
        fingerprint,
        backend=backend,
        shard_size=shard_size,
        batch_size=batch_size,
        num_actors=num_actors,
        progress=lambda done, total: log(f"scored shard {done}/{total}"),
    )
    seconds = time.perf_counter() - t0
    report["scoring"] = {"seconds": seconds, "transitions_per_s": len(dataset) / max(seconds, 1e-9)}
    gt = dataset.ground_truth_rewards()
    if gt is not None:
        from vlmrl.report.reward_quality import reward_agreement

        report["agreement"] = reward_agreement(learned, gt, dataset.episode_ids())
        log(f"agreement with ground truth: {report['agreement']}")
    source = "preference" if labeler is not None else "zero_shot"
    out = dataset.with_rewards(
        learned,
        reward_source=source,
        reward_model=type(reward).__name__,
        labeler=None if labeler is None else getattr(labeler, "name", type(labeler).__name__),
    )
    return out, report
