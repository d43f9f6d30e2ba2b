"""``vlmrl report run_dir=...``: write the static HTML report of a run folder (optionally a screenshot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vlmrl.report.run_report import write_report


def main(cfg: DictConfig) -> dict[str, Any]:
    """Write ``report.html``; returns its path (and the screenshot's, when asked for)."""
    if OmegaConf.is_missing(cfg, "run_dir") or not cfg.run_dir:
        raise ValueError("which run? pass run_dir=runs/<name>/<timestamp> (or runs/<name> for its newest run)")
    page = write_report(
        cfg.run_dir,
        out=cfg.get("out"),
        max_videos=int(cfg.get("max_videos", 6)),
        embed_video_mb=float(cfg.get("embed_video_mb", 50)),
    )
    result: dict[str, Any] = {"report": str(page), "size_kib": round(page.stat().st_size / 1024, 1)}
    if cfg.get("screenshot"):
        from vlmrl.report import browser

        result["screenshot"] = str(browser.screenshot(page, Path(page).with_suffix(".png")))
    return result
