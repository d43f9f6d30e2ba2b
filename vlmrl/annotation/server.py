"""The asynchronous annotation server (ONI's LLM worker, as a service): the core behind an HTTP front.

Actors ``POST /submit`` messages and return at once; ``POST /labels`` returns what is known (``null`` = not
labeled yet); ``GET /stats`` reports the core's statistics and ``GET /health`` answers ``{"ok": true}``.
Bodies are JSON ``{"messages": [str, ...]}``. With a token in ``token_env`` every request must carry
``Authorization: Bearer <token>``. Deduplication, the durable queue and the worker are
:class:`~vlmrl.annotation.core.AnnotationCore`'s; a process hosting the server in-process skips HTTP
and uses :class:`~vlmrl.annotation.client.DirectClient`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any

from vlmrl.annotation.core import AnnotationCore
from vlmrl.http_json import JsonHandler, JsonServer
from vlmrl.labelers.llm import LLMJudge

log = logging.getLogger(__name__)


class AnnotationServer(AnnotationCore):
    """:class:`AnnotationCore` (queue, label store, LLM worker) plus its HTTP front, in one process.

    Args:
        labeler: the judge that labels batches (its endpoint is set here when ``endpoint`` or embedded).
        store_path: SQLite label store; ``None`` keeps labels in memory only.
        endpoint: OpenAI-compatible base URL; ``None`` starts the embedded llama.cpp server
            unless the judge already has an endpoint.
        embedded: keyword arguments of :class:`~vlmrl.annotation.backends.LlamaCppServer` for the embedded backend.
        batch_size: messages sent to the judge per batch (ONI: 100).
        host: interface for the HTTP front (loopback by default).
        port: TCP port; 0 picks a free one.
        token_env: environment variable with a bearer token the HTTP front then requires.
        max_backoff: cap, in seconds, of the pause after failed batches.
    """

    def __init__(
        self,
        labeler: LLMJudge,
        store_path: str | Path | None = None,
        endpoint: str | None = None,
        embedded: dict[str, Any] | None = None,
        batch_size: int = 32,
        host: str = "127.0.0.1",
        port: int = 0,
        token_env: str = "VLMRL_ANNOTATION_TOKEN",
        max_backoff: float = 30.0,
    ):
        super().__init__(labeler, store_path, endpoint, embedded, batch_size, max_backoff)
        self.host, self.port = host, int(port)
        self.token = os.environ.get(token_env) or None
        if not _is_loopback(host) and self.token is None:
            log.warning("annotation server binds %s without a bearer token: set %s", host, token_env)
        self._front: JsonServer | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP front."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> AnnotationServer:
        """Start the core (backend, store, worker), then serve HTTP; returns self."""
        super().start()
        self._front = JsonServer(_AnnotationHandler, app=self, host=self.host, port=self.port, name="annotation-http")
        self.port = self._front.port
        self._front.start()
        return self

    def stop(self) -> None:
        """Stop serving HTTP, then the core (the batch in flight is stored; pending items stay queued on disk)."""
        if self._front is not None:
            self._front.stop()
            self._front = None
        super().stop()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _AnnotationHandler(JsonHandler):
    """``/submit``, ``/labels``, ``/stats`` and ``/health`` of the :class:`AnnotationServer` in ``self.app``."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Statistics and health."""
        server: AnnotationServer = self.app
        if not self.authorized(server.token):
            return
        if self.path == "/health":
            self.send_json(200, {"ok": True})
        elif self.path == "/stats":
            self.send_json(200, server.stats())
        else:
            self.send_json(404, {"error": f"no GET {self.path}: use /stats or /health"})

    def do_POST(self) -> None:  # noqa: N802
        """Submit messages, or look their labels up."""
        server: AnnotationServer = self.app
        if not self.authorized(server.token):
            return
        try:
            messages = self.read_json()["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list of strings")
        except (ValueError, KeyError, TypeError) as e:
            self.send_json(400, {"error": f'bad request ({e}): send JSON {{"messages": [str, ...]}}'})
            return
        if self.path == "/submit":
            self.send_json(200, server.submit(messages))
        elif self.path == "/labels":
            self.send_json(200, {"labels": server.labels(messages)})
        else:
            self.send_json(404, {"error": f"no POST {self.path}: use /submit or /labels"})
