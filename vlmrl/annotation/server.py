"""The annotation server's HTTP front (FastAPI + uvicorn, :mod:`vlmrl.web`) on an :class:`AnnotationCore`.

API (JSON; with a token in ``token_env`` every request must carry ``Authorization: Bearer <token>``, else 401):

- ``POST /submit`` ``{"messages": [str, ...]}`` queues messages and returns at once
  ``{"accepted", "new", "known"}``;
- ``POST /labels`` ``{"messages": [str, ...]}`` returns ``{"labels": {message: 1 | 0 | -1 | null}}``
  (``null``: not labeled yet, or refused by the backend for good);
- ``GET /stats`` the core's statistics (queue, labels/s, cache hit rate, ``dead_letters``, backend errors...);
- ``GET /dead_letters`` ``{"dead_letters": [{"message", "error"}, ...]}``, messages the backend refused for good;
- ``GET /health`` ``{"ok": true}``.

Limits: a body over ``max_body`` bytes gets 413 and one slower than ``client_timeout`` seconds 408; a request
with a message longer than ``max_message_chars`` characters gets 422 and queues nothing (over-long messages
are refused, never truncated); any other malformed body gets 400. A request head must arrive within
``client_timeout`` seconds and an idle keep-alive connection is closed after ``keep_alive`` seconds; at most
``max_connections`` connections are served (more get 503), and the core is called from a pool of
``workers`` threads. Deduplication, the durable queue and the worker are the core's; a process hosting the
server uses :class:`~vlmrl.annotation.client.DirectClient` and skips HTTP.
"""

import asyncio
import ipaddress
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, StringConstraints

from vlmrl.annotation.core import DEFAULT_MAX_MESSAGE_CHARS, AnnotationCore, message_too_long
from vlmrl.labelers.llm import LLMJudge
from vlmrl.web import DEFAULT_MAX_BODY, WebServer, harden, require_token

log = logging.getLogger(__name__)


class AnnotationServer(AnnotationCore):
    """:class:`AnnotationCore` (queue, label store, LLM worker) plus its HTTP front, in one process.

    Args:
        labeler: the judge that labels batches (its endpoint is set here when ``endpoint`` or embedded).
        store_path: SQLite label store; ``None`` keeps labels in memory only.
        endpoint: OpenAI-compatible base URL; ``None`` starts the embedded LLM unless the judge already has
            a backend.
        embedded: options of the embedded LLM (:func:`~vlmrl.annotation.backends.start_embedded`): ``mode``
            (``inprocess``, default, or ``server``) and the backend's keyword arguments.
        batch_size: messages sent to the judge per batch (ONI: 100).
        host: interface for the HTTP front (loopback by default).
        port: TCP port; 0 picks a free one.
        token_env: environment variable with a bearer token the HTTP front then requires.
        max_backoff: cap, in seconds, of the pause after failed batches.
        max_message_chars: longest message accepted (longer: 422).
        max_body: largest request body in bytes (larger: 413).
        client_timeout: seconds a client has to send a request head, and then its body (else 408).
        keep_alive: seconds an idle keep-alive connection is kept open.
        max_connections: connections served at once (more: 503).
        workers: threads that call the core for HTTP requests.
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
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
        max_body: int = DEFAULT_MAX_BODY,
        client_timeout: float = 10.0,
        keep_alive: float = 5.0,
        max_connections: int = 256,
        workers: int = 4,
    ):
        super().__init__(labeler, store_path, endpoint, embedded, batch_size, max_backoff, max_message_chars)
        if workers < 1 or max_body < 1 or max_connections < 1:
            raise ValueError(f"workers={workers}, max_body={max_body}, max_connections={max_connections}: all >= 1")
        self.host, self.port = host, int(port)
        self.token_env = token_env
        self.max_body, self.client_timeout, self.keep_alive = int(max_body), float(client_timeout), float(keep_alive)
        self.max_connections, self.workers = int(max_connections), int(workers)
        if not _is_loopback(host) and not os.environ.get(token_env):
            log.warning("annotation server binds %s without a bearer token: set %s", host, token_env)
        self._front: WebServer | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP front."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> "AnnotationServer":
        """Start the core (backend, store, worker), then serve HTTP; returns self."""
        super().start()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="annotation-http")
        self._front = WebServer(
            build_app(self), host=self.host, port=self.port, max_connections=self.max_connections,
            keep_alive=self.keep_alive, head_timeout=self.client_timeout, name="annotation-http",
        ).start()  # fmt: skip
        self.port = self._front.port
        return self

    def stop(self) -> None:
        """Stop serving HTTP, then the core (the batch in flight is stored; pending items stay queued on disk)."""
        if self._front is not None:
            self._front.stop()
            self._front = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        super().stop()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_app(server: AnnotationServer) -> FastAPI:
    """The FastAPI app of ``server``'s HTTP front (routes, request models, limits, token check)."""
    limit = server.max_message_chars

    class Messages(BaseModel):
        """Body of ``/submit`` and ``/labels``."""

        messages: list[Annotated[str, StringConstraints(max_length=limit)]]

    app = harden(FastAPI(openapi_url=None, docs_url=None, redoc_url=None), server.max_body, server.client_timeout)
    auth = [Depends(require_token(server.token_env))]

    async def call(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(server._pool, fn, *args)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        for error in exc.errors():
            if error.get("type") == "string_too_long":
                index = error["loc"][-1]
                length = len(error.get("input") or "")
                return JSONResponse({"error": message_too_long(index, length, limit)}, status_code=422)
        first = exc.errors()[0] if exc.errors() else {}
        reason = f"{first.get('msg', 'invalid')} at {'.'.join(str(p) for p in first.get('loc', ()))}"
        return JSONResponse({"error": f'bad request ({reason}): send JSON {{"messages": [str, ...]}}'}, 400)

    @app.post("/submit", dependencies=auth)
    async def submit(body: Messages) -> dict[str, int]:
        return await call(server.submit, body.messages)

    @app.post("/labels", dependencies=auth)
    async def labels(body: Messages) -> dict[str, dict[str, int | None]]:
        return {"labels": await call(server.labels, body.messages)}

    @app.get("/stats", dependencies=auth)
    async def stats() -> dict[str, Any]:
        return await call(server.stats)

    @app.get("/dead_letters", dependencies=auth)
    async def dead_letters() -> dict[str, list[dict[str, str]]]:
        rows = await call(server.store.dead_letters)
        return {"dead_letters": [{"message": m, "error": e} for m, e in rows]}

    @app.get("/health", dependencies=auth)
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app
