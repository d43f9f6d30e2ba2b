"""Relabel an offline dataset with a learned or zero-shot reward (Offline RL-VLM-F), resumably.

Pipeline (RL-VLM-F applied to a fixed dataset; the offline composition of :mod:`vlmrl.preferences`):

1. sample pairs of segments (``T`` consecutive transitions of one episode; RL-VLM-F uses ``T = 1``) with the
   :class:`~vlmrl.preferences.DatasetFragmenter`;
2. ask a labeler (VLM or simulated teacher) which one is closer to the goal, through the one label cache
   (:class:`~vlmrl.labelers.cache.CachedLabeler`), so a restarted run pays for no label twice;
3. fit the reward model on the labeled pairs (Bradley-Terry, :class:`~vlmrl.preferences.RewardTrainer`),
   saved once fitted;
4. score every transition in resumable shards (:mod:`vlmrl.data.scoring`, locally or on Ray Data);
5. write the dataset with the learned rewards (ground truth kept in ``infos["env_reward"]``), the labels used,
   and a reward-versus-ground-truth agreement report.

Without a labeler the reward model is used as is (zero-shot, e.g. CLIP) and steps 1-3 are skipped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vlmrl.data.dataset import DatasetError, OfflineDataset
from vlmrl.data.scoring import score_dataset
from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import CachedLabeler, LabelCache
from vlmrl.preferences import DatasetFragmenter, RewardTrainer, failure_detail
from vlmrl.rewards.base import RewardModel
from vlmrl.rewards.preference import STATE_FILE, PreferenceRewardModel
from vlmrl.runs import LabelStats, atomic_path, write_json

#: Where the label cache lives inside the work folder unless another file is given.
LABEL_CACHE = "labels.sqlite"


def report_labels(stats: LabelStats) -> dict[str, float]:
    """The report's ``labels`` entry: pairs, paid, cached, valid, ties (when any) and label_accuracy (when judged)."""
    out = {
        "pairs": float(stats.queries),
        "paid": float(stats.paid),
        "cached": float(stats.cache_hits),
        "valid": float(stats.valid),
    }
    if stats.ties:
        out["ties"] = float(stats.ties)
    if stats.judged:
        out["label_accuracy"] = float(stats.accuracy)
    return out


def dataset_fingerprint(dataset: OfflineDataset) -> str:
    """Content hash of what the reward model reads and the episode layout (cheap: one pass over the bytes)."""
    h = hashlib.sha256()
    for arr in (dataset.frames, dataset.observations, dataset.terminals, dataset.timeouts):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def reward_inputs(dataset: OfflineDataset, reward: RewardModel) -> np.ndarray:
    """What ``reward.predict`` reads: frames for ``input_key == "frame"``, else the state observations."""
    key = reward.input_key
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
    label_cache: str | Path | LabelCache | None = None,
    backend: str = "local",
    shard_size: int = 4096,
    batch_size: int = 256,
    num_actors: int = 2,
    log: Callable[[str], None] = print,
) -> tuple[OfflineDataset, dict[str, Any]]:
    """Run the relabeling pipeline; every intermediate result is kept under ``work_dir`` for resuming.

    Args:
        dataset: the dataset to relabel (its ground truth, when present, feeds the teacher and the report).
        reward: the reward model; with a ``labeler`` it must be a trainable
            :class:`~vlmrl.rewards.preference.PreferenceRewardModel`, without one any model scores zero-shot.
        work_dir: ``labels.sqlite`` (label cache), ``labels.npz``, ``reward_model.pt``, ``fit.json``, ``shards/``.
        rng: draws the pairs and the reward model's minibatches.
        labeler: preference labeler (a :class:`~vlmrl.labelers.cache.CachedLabeler` is used as is, any other is
            wrapped in one over ``label_cache``); ``None`` uses ``reward`` zero-shot.
        num_pairs: pairs to label.
        segment: steps per segment.
        fit_kwargs: :class:`~vlmrl.preferences.RewardTrainer` settings (``max_epochs``, ``target_acc``, ``max_steps``,
            ``min_valid_fraction``, ``on_few_labels``): too few valid labels stop the run with one error, or with
            ``on_few_labels="warn"`` go on with a warning in the log and in the report's ``warnings``.
        label_cache: the label cache (path or open cache) for an uncached labeler; default ``<work_dir>/labels.sqlite``.
        backend: ``local`` or ``ray`` scoring.
        shard_size: transitions per scored shard.
        batch_size: transitions per ``predict`` call.
        num_actors: Ray reward-model actors.
        log: progress messages.

    Returns:
        ``(relabeled dataset, report)``; the report holds the label summary (``labels``) and the full record
        (``label_stats``: failures, this run's spend, the budget key's recorded spend, warnings), fit stats,
        agreement and timings. Failed labels (errors, unparseable answers, budget refusals) are not cached: a
        later run asks them again, and refits when the labels changed.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"transitions": len(dataset), "episodes": dataset.num_episodes, "backend": backend}
    inputs = reward_inputs(dataset, reward)
    model_id = type(reward).__name__
    if labeler is not None:
        if not isinstance(reward, PreferenceRewardModel):
            raise TypeError(
                f"{type(reward).__name__} cannot be fit to preference labels: with a labeler, pass a"
                " PreferenceRewardModel (labelers=teacher or rlvlmf); without one the reward scores zero-shot"
            )
        report["labels"], report["fit"], stats = _fit_from_preferences(
            dataset, reward, work, rng, labeler, num_pairs, segment, fit_kwargs or {}, label_cache, log
        )
        report["label_stats"] = stats.to_dict()
        if stats.warnings:
            report["warnings"] = list(stats.warnings)
        model_id = hashlib.sha256((work / STATE_FILE).read_bytes()).hexdigest()[:16]
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
        from vlmrl.rewards.quality import reward_agreement

        report["agreement"] = reward_agreement(learned, gt, dataset.episode_ids())
        log(f"agreement with ground truth: {report['agreement']}")
    source = "preference" if labeler is not None else "zero_shot"
    out = dataset.with_rewards(
        learned,
        reward_source=source,
        reward_model=type(reward).__name__,
        labeler=None if labeler is None else labeler.name,
    )
    return out, report


def _fit_from_preferences(
    dataset: OfflineDataset,
    reward: PreferenceRewardModel,
    work: Path,
    rng: np.random.Generator,
    labeler: Labeler,
    num_pairs: int,
    segment: int,
    fit_kwargs: dict[str, Any],
    label_cache: str | Path | LabelCache | None,
    log: Callable[[str], None],
) -> tuple[dict[str, float], dict[str, float], LabelStats]:
    """Steps 1-3: fragment, label through the cache, fit (or reload the fitted model).

    Returns:
        The ``labels`` and ``fit`` reports and the full label statistics (failures, spend, warnings).
    """
    t0 = time.perf_counter()
    query = DatasetFragmenter(dataset, segment)(num_pairs, rng)
    if isinstance(labeler, CachedLabeler):
        labels = labeler(list(query.pairs))
        spend_total = labeler.spend_total()
    else:
        cache = (
            label_cache
            if isinstance(label_cache, LabelCache)
            else LabelCache(Path(label_cache or work / LABEL_CACHE).expanduser())
        )
        try:
            cached = CachedLabeler(labeler, cache)
            labels = cached(list(query.pairs))
            spend_total = cached.spend_total()
        finally:
            if cache is not label_cache:
                recorded = cache.spend(labeler.budget_key) if labeler.budget_key is not None else None
                cache.close()
                if recorded is not None:  # the file is closed: the labeler's budget keeps its last record
                    labeler.bind_spend(lambda: recorded)
    trainer = RewardTrainer(reward, **fit_kwargs, labeler=labeler.name)
    label_report = report_labels(trainer.add(query, labels))
    trainer.stats.spend_total = spend_total
    trainer.stats.extra["endpoint"] = labeler.endpoint_stats()
    log(f"labels: {label_report}")
    label_report["seconds"] = time.perf_counter() - t0
    trainer.check_labels(failure_detail(trainer.stats.extra["endpoint"]), final=True)
    with atomic_path(work / "labels.npz") as tmp:
        np.savez(
            tmp,
            first=query.first_index,
            second=query.second_index,
            labels=np.array([lab.value for lab in labels], np.float32),  # 0, 1, 0.5 (equally good) or -1
            raw=np.array([lab.raw for lab in labels]),
            failed=np.array([lab.failed for lab in labels], bool),
        )
    # The fitted model is reused only for the labels it was fit on: a human override changes them, and refits.
    labels_sha = hashlib.sha256(np.array([lab.value for lab in labels], np.float64).tobytes()).hexdigest()[:16]
    fitted = json.loads((work / "fit.json").read_text()) if (work / "fit.json").exists() else {}
    if (work / STATE_FILE).exists():
        if fitted.get("labels_sha", labels_sha) == labels_sha:
            reward.load_state(work)
            log(f"reward model loaded from {work / STATE_FILE}")
            return label_report, {k: v for k, v in fitted.items() if k != "labels_sha"}, trainer.stats
        log("labels changed since the reward model was fit (human overrides): fitting it again")
    if not len(trainer):  # on_few_labels=warn and not one valid label: the untrained model scores
        reward.save_state(work)
        write_json(work / "fit.json", {"pairs": 0.0, "labels_sha": labels_sha}, indent=None)
        return label_report, {"pairs": 0.0}, trainer.stats
    t0 = time.perf_counter()
    fit = {k: float(v) for k, v in trainer.train(rng).items()}
    fit["seconds"] = time.perf_counter() - t0
    log(f"reward model fit: {fit}")
    reward.save_state(work)
    write_json(work / "fit.json", {**fit, "labels_sha": labels_sha}, indent=None)
    if (work / "shards").is_dir():  # scored by the model fit before: a new model scores afresh
        shutil.rmtree(work / "shards")
    return label_report, fit, trainer.stats
