"""`vlmrl relabel`: write a copy of a dataset with learned (or zero-shot) rewards, the labels and a report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlmrl.data.relabel import relabel
from vlmrl.data.storage import load_dataset, save_dataset


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
    reward = instantiate(r.reward)
    labeler = instantiate(r.labeler, rng=np.random.default_rng(int(cfg.seed) + 1)) if r.get("labeler") else None
    fit_kwargs = OmegaConf.to_container(r.fit, resolve=True) if r.get("fit") else {}
    relabeled, report = relabel(
        dataset,
        reward,
        work,
        rng,
        labeler=labeler,
        num_pairs=int(r.pairs),
        segment=int(r.segment),
        fit_kwargs=fit_kwargs,
        backend=str(r.backend),
        shard_size=int(r.shard_size),
        batch_size=int(r.batch_size),
        num_actors=int(r.num_actors),
        log=lambda msg: print(f"relabel: {msg}", flush=True),
    )
    relabeled.metadata["task"] = cfg.get("task") or dataset.metadata.get("task")
    relabeled.metadata["relabeled_from"] = str(r.dataset)
    if not r.get("keep_frames", True):
        relabeled.frames = None
    save_dataset(relabeled, out)
    if (work / "labels.npz").exists():
        shutil.copyfile(work / "labels.npz", out.with_name(out.stem + ".labels.npz"))
    report = {"dataset": str(r.dataset), "out": str(out), **report}
    out.with_name(out.stem + ".report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report
