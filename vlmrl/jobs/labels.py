"""`vlmrl labels`: serve the label-audit page of a run folder's labels or a label file until interrupted."""

from __future__ import annotations

import signal
import threading
from typing import Any

from omegaconf import DictConfig

from vlmrl.report.label_page import LabelPage
from vlmrl.web import WebServer


def main(cfg: DictConfig) -> dict[str, Any]:
    """Open the label file (nothing is written until someone overrides a label), serve it, return its counts."""
    run_dir, cache = cfg.get("run_dir"), cfg.get("cache")
    if bool(run_dir) == bool(cache):
        raise ValueError(
            "which labels? pass run_dir=runs/<name>/<timestamp> (a run or relabel work folder) or"
            " cache=<label file>.sqlite, not both"
        )
    page = LabelPage(
        run_dir or cache,
        token_env=str(cfg.token_env),
        who=cfg.get("who"),
        per_page=int(cfg.per_page),
        low_margin=float(cfg.low_margin),
        max_body=int(cfg.max_body),
    )
    server = WebServer(page.app, host=str(cfg.host), port=int(cfg.port), name="label-page")
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals can only be caught there
        previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    server.start()
    counts = page.labels.kinds()
    print(
        f"labels of {page.labels.path} on {server.url} ({counts['preference']} preference pairs,"
        f" {counts['message']} ONI messages)",
        flush=True,
    )
    try:
        done.wait(timeout=cfg.get("duration_s"))
    finally:
        server.stop()
        page.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return {"url": server.url, "label_file": str(page.labels.path), "labels": counts}
