"""`vlmrl relabel`: write a copy of a dataset with learned (or zero-shot) rewards, the labels and a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from vlmrl.data.relabel import relabel
from vlmrl.data.storage import load_dataset, save_dataset
from vlmrl.labelers.base import Labeler
from vlmrl.rewards.base import RewardModel
from vlmrl.rewards.preference import PreferenceRewardModel
from vlmrl.runs import write_bytes, write_json


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
    )
    max_steps = group.get("max_train_steps")
    fit = {
        "max_epochs": int(group.max_epochs),
        "target_acc": float(group.target_acc),
        "max_steps": None if max_steps is None else int(max_steps),
    }
    return model, labeler, fit, group.get("label_cache")


def main(cfg: DictConfig) -> dict[str, Any]:
    """Relabel ``relabel.dataset`` into ``relabel.out`` (plus ``<out>.labels.npz``, ``<out>.report.json``).

    Intermediate results live in ``<out>.work/`` (label cache, fitted reward model, scored shards), so running
    the same command again after a crash continues where it stopped.
    """
    r = cfg.relabel
    if r.get("num_threads"):
        import torch

        torch.set_num_threads(int(r.num_threads))
    dataset = load_dataset(r.dataset)
    out = Path(r.out)
    work = out.with_name(out.name + ".work")
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
