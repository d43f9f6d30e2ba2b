"""Run folders: where a run lives, its saved config, and how a later job finds it (docs/CONTRACTS.md)."""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def resolve_run_dir(cfg: DictConfig) -> Path:
    """``cfg.run_dir`` if set; with ``resume`` the newest run of ``cfg.name``; else a new timestamped folder."""
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    base = Path(cfg.runs_root) / cfg.name
    if cfg.get("resume"):
        # The newest run that got as far as a checkpoint; else the newest started one.
        started = sorted(p for p in base.glob("*") if (p / "config.yaml").exists())
        checkpointed = [p for p in started if any((p / "checkpoints").glob("step_*.zip"))]
        if checkpointed or started:
            return (checkpointed or started)[-1]
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = base / stamp
    n = 1
    while run_dir.exists():
        run_dir = base / f"{stamp}-{n}"
        n += 1
    return run_dir


def save_config(cfg: DictConfig, run_dir: Path, name: str = "config.yaml") -> Path:
    """Write the resolved config atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, path)
    return path


def load_config(run_dir: Path) -> DictConfig:
    """The config a run was started with."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    return OmegaConf.load(path)


def latest_checkpoint(run_dir: Path, suffixes: tuple[str, ...] = (".zip", ".pt")) -> Path | None:
    """The ``checkpoints/step_<N><suffix>`` with the largest N (SB3 saves ``.zip``, torch agents ``.pt``)."""
    pattern = re.compile(r"step_(\d+)(" + "|".join(re.escape(s) for s in suffixes) + r")")
    found = [
        (int(m.group(1)), p) for p in (Path(run_dir) / "checkpoints").glob("step_*") if (m := pattern.fullmatch(p.name))
    ]
    return max(found)[1] if found else None
