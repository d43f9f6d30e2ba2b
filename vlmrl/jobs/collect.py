"""`vlmrl collect`: record an offline dataset from an env with a behaviour mixture (expert + noise, random)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlmrl.data.collect import collect, remove_parts
from vlmrl.data.storage import save_dataset
from vlmrl.runs import job_fingerprint, write_json

#: Keys of the collect config that do not shape the episodes (besides vlmrl.runs.NOT_SHAPING): the output path,
#: the fresh-start switch, and the groups collect does not read.
NOT_SHAPING_COLLECT = ("collect.out", "collect.fresh", "agents", "labelers")


def main(cfg: DictConfig) -> dict[str, Any]:
    """Collect ``collect.episodes`` episodes into ``collect.out`` and return a per-behaviour summary.

    A killed run resumes from the parts kept in ``<out>.work/`` when started again with the same settings;
    other settings are refused (``collect.fresh=true`` deletes the parts and starts afresh).
    """
    c = cfg.collect
    out = Path(c.out)
    work = out.with_name(out.name + ".work")
    rng = np.random.default_rng(int(cfg.seed))
    env_fn = instantiate(cfg.envs, _partial_=True)
    expert_fn = instantiate(c.expert) if c.get("expert") else None
    mixture = OmegaConf.to_container(c.mixture, resolve=True)
    metadata = {
        "env": OmegaConf.to_container(cfg.envs, resolve=True),
        "task": cfg.get("task"),
        "seed": int(cfg.seed),
    }
    dataset = collect(
        env_fn,
        mixture,
        int(c.episodes),
        rng,
        expert_fn=expert_fn,
        keep_frames=bool(c.frames),
        metadata=metadata,
        work_dir=work,
        part_episodes=int(c.part_episodes),
        progress=lambda done, total: print(f"collect: {done}/{total} episodes", flush=True),
        settings=job_fingerprint(cfg, ignore=NOT_SHAPING_COLLECT),
        fresh=bool(c.get("fresh", False)),
    )
    save_dataset(dataset, out)
    remove_parts(work)
    summary: dict[str, Any] = {"out": str(out), "episodes": dataset.num_episodes, "transitions": len(dataset)}
    ends = dataset.episode_ends
    for k, b in enumerate(mixture):
        mine = ends[dataset.infos["policy_id"][ends] == k]
        row = {**b, "episodes": int(len(mine))}
        summary[f"behaviour_{k}"] = row
        if not len(mine):  # a small collection may give a component no episode: no means to report
            continue
        row["return"] = float(np.mean(dataset.episode_returns()[np.isin(ends, mine)]))
        if "gt_metric" in dataset.infos:
            row["final_gt_metric"] = float(dataset.infos["gt_metric"][mine].mean())
        if "is_success" in dataset.infos:
            row["success"] = float(dataset.infos["is_success"][mine].mean())
    write_json(out.with_name(out.stem + ".summary.json"), summary)
    print(json.dumps(summary, indent=2))
    return summary
