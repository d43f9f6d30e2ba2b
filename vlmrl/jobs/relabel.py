"""`vlmrl relabel`: write a copy of a dataset with learned (or zero-shot) rewards, the labels and a report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from vlmrl.data.relabel import LABEL_CACHE, dataset_fingerprint, relabel
from vlmrl.data.storage import load_dataset, save_dataset
from vlmrl.labelers.base import Labeler
from vlmrl.rewards.base import RewardModel
from vlmrl.rewards.preference import STATE_FILE, PreferenceRewardModel
from vlmrl.runs import check_fingerprint, job_fingerprint, write_bytes, write_json

#: Keys that never shape what ``<out>.work/`` keeps (besides vlmrl.runs.NOT_SHAPING): the output path and the
#: fresh-start switch, Ray's actor count, the settings applied only when the output is written (task,
#: keep_frames), the groups relabel does not read, and the dataset's path (its content is fingerprinted instead).
NOT_SHAPING_RELABEL = (
    "relabel.out",
    "relabel.fresh",
    "relabel.num_actors",
    "relabel.keep_frames",
    "relabel.dataset",
    "task",
    "envs",
    "agents",
)


def build_parts(cfg: DictConfig) -> tuple[RewardModel, Labeler | None, dict[str, Any], str | None]:
    """``(reward model, labeler, fit settings, label cache)`` of a relabel run.

    ``relabel.reward`` set: that model, zero-shot. Else the ``labelers`` group: a preference group (``teacher``,
    ``rlvlmf``: it has a ``labeler``) gives the labeler, the ensemble and its fit settings; any other reward
    source (``clip``) scores zero-shot.
    """
    r, group = cfg.relabel, cfg.get("labelers")
    for moved in ("labeler", "fit"):
        if r.get(moved) is not None:
            raise ValueError(
                f"relabel.{moved} is no longer read: the labeler, the ensemble and its fit come from the labelers"
                " group (labelers=teacher or labelers=rlvlmf, then labelers.labeler.*, labelers.max_epochs ...)"
            )
    if r.get("reward"):
        return instantiate(r.reward), None, {}, None
    if not group or "_target_" not in group:
        raise ValueError(
            "relabel needs a reward: labelers=teacher or labelers=rlvlmf (preference labels and a learned reward),"
            " or labelers=clip / relabel.reward=... (zero-shot)"
        )
    if "labeler" not in group:
        reward = instantiate(group)
        if not isinstance(reward, RewardModel):
            raise TypeError(f"labelers._target_ {group._target_} is not a vlmrl.rewards.base.RewardModel")
        return reward, None, {}, None
    seed = int(cfg.seed)
    labeler = instantiate(group.labeler, _partial_=False, rng=np.random.default_rng(seed + 1))
    model = PreferenceRewardModel(
        ensemble_size=int(group.ensemble_size),
        image_size=int(group.image_size),
        lr=float(group.lr),
        batch_size=int(group.batch_size),
        device=str(cfg.get("device") or "cpu"),
        seed=seed,
        net=str(group.get("net", "cnn")),
        output=str(group.get("output", "tanh")),
    )
    max_steps = group.get("max_train_steps")
    fit = {
        "max_epochs": int(group.max_epochs),
        "target_acc": float(group.target_acc),
        "max_steps": None if max_steps is None else int(max_steps),
        "min_valid_fraction": float(group.get("min_valid_fraction", 0.1)),
        "on_few_labels": str(group.get("on_few_labels", "error")),
    }
    return model, labeler, fit, group.get("label_cache")


#: What a relabeling keeps in its work folder besides the label cache.
WORK_OUTPUTS = ("labels.npz", STATE_FILE, "fit.json", "shards")


def clear_work(work: Path) -> None:
    """Empty ``work`` for a fresh start, keeping the label cache (``labels.sqlite`` and its journal files)."""
    if not work.is_dir():
        return
    for path in work.iterdir():
        if path.name.startswith(LABEL_CACHE):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def main(cfg: DictConfig) -> dict[str, Any]:
    """Relabel ``relabel.dataset`` into ``relabel.out`` (plus ``<out>.labels.npz``, ``<out>.report.json``).

    Intermediate results live in ``<out>.work/`` (label cache, fitted reward model, scored shards), so running
    the same command again after a crash continues where it stopped. Other settings (or another dataset) are
    refused with one line; ``relabel.fresh=true`` clears the work folder first, keeping the label cache (its
    answers hold for any settings, so no label is paid for twice).
    """
    r = cfg.relabel
    if r.get("num_threads"):
        import torch

        torch.set_num_threads(int(r.num_threads))
    dataset = load_dataset(r.dataset)
    out = Path(r.out)
    work = out.with_name(out.name + ".work")
    if r.get("fresh"):
        clear_work(work)
    check_fingerprint(
        work,
        job_fingerprint(cfg, NOT_SHAPING_RELABEL, extra={"dataset_content": dataset_fingerprint(dataset)}),
        f"{work} holds a relabeling with other settings",
        "pass relabel.fresh=true to start afresh (the label cache is kept) or change relabel.out",
        has_output=any((work / name).exists() for name in WORK_OUTPUTS),
    )
    rng = np.random.default_rng(int(cfg.seed))
    reward, labeler, fit_kwargs, label_cache = build_parts(cfg)
    try:
        relabeled, report = relabel(
            dataset,
            reward,
            work,
            rng,
            labeler=labeler,
            num_pairs=int(r.pairs),
            segment=int(r.segment),
            fit_kwargs=fit_kwargs,
            label_cache=label_cache,
            backend=str(r.backend),
            shard_size=int(r.shard_size),
            batch_size=int(r.batch_size),
            num_actors=int(r.num_actors),
            log=lambda msg: print(f"relabel: {msg}", flush=True),
        )
    finally:
        if labeler is not None:
            labeler.close()
        reward.close()
    relabeled.metadata["task"] = cfg.get("task") or dataset.metadata.get("task")
    relabeled.metadata["relabeled_from"] = str(r.dataset)
    if not r.get("keep_frames", True):
        relabeled.frames = None
    save_dataset(relabeled, out)
    if (work / "labels.npz").exists():
        write_bytes(out.with_name(out.stem + ".labels.npz"), (work / "labels.npz").read_bytes())
    report = {"dataset": str(r.dataset), "out": str(out), **report}
    write_json(out.with_name(out.stem + ".report.json"), report)
    print(json.dumps(report, indent=2))
    return report
