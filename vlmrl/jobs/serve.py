"""`vlmrl serve`: run the annotation server until interrupted (or for ``duration_s``)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlmrl.annotation.server import AnnotationServer


def main(cfg: DictConfig) -> dict[str, Any]:
    """Start the server (and the embedded LLM when no endpoint is given); returns the final statistics."""
    labeler = instantiate(cfg.labeler)
    embedded = OmegaConf.to_container(cfg.embedded, resolve=True) if cfg.get("embedded") else {}
    server = AnnotationServer(
        labeler,
        store_path=cfg.store_path,
        endpoint=cfg.endpoint,
        embedded={k: v for k, v in embedded.items() if v is not None},
        batch_size=cfg.batch_size,
        host=cfg.host,
        port=cfg.port,
        token_env=cfg.token_env,
        max_message_chars=cfg.max_message_chars,
        max_body=cfg.max_body,
        client_timeout=cfg.client_timeout,
        keep_alive=cfg.keep_alive,
        max_connections=cfg.max_connections,
        workers=cfg.workers,
    )
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals can only be caught there
        previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    server.start()
    backend = labeler.base_url or "in-process llama.cpp"
    print(f"annotation server on {server.url} (backend {backend}, model {labeler.model_id})", flush=True)
    try:
        done.wait(timeout=cfg.duration_s)
    finally:
        stats = server.stats()
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"annotation server stopped: {stats}", flush=True)
    return stats
