"""The one web stack of vlmrl's HTTP services (annotation server, label page, stub endpoints): FastAPI + uvicorn.

:func:`harden` puts the shared limits on an app (body size, slow-body timeout, optional bearer token);
:class:`WebServer` serves it on loopback by default, in a background thread or in the foreground, with
bounded concurrency and idle-connection timeouts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB


def tokens_equal(given: str | bytes | None, expected: str | bytes) -> bool:
    """Constant-time token comparison that never raises (any byte string, any text)."""
    if given is None:
        return False
    a = given if isinstance(given, bytes) else given.encode("utf-8", "surrogateescape")
    b = expected if isinstance(expected, bytes) else expected.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(a, b)


def bearer_token(request: Request) -> bytes | None:
    """The raw bytes after ``Bearer `` in the Authorization header, or None."""
    for name, value in request.scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


def require_token(env_var: str) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 unless the request carries the token in ``$env_var`` (none set: open)."""

    def check(request: Request) -> None:
        expected = os.environ.get(env_var)
        if expected and not tokens_equal(bearer_token(request), expected):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return check


class Limits:
    """ASGI middleware: refuse bodies over ``max_body`` bytes (413), bad ``Content-Length`` (400), and bodies
    that trickle in slower than ``body_timeout`` seconds per chunk (408).
    """  # noqa: D205

    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_BODY, body_timeout: float = 10.0):
        self.app, self.max_body, self.body_timeout = app, int(max_body), float(body_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the headers, read the body under the limits, then call the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit():
                await _plain(send, 400, "bad Content-Length")
                return
            if int(length) > self.max_body:
                await _plain(send, 413, f"request body over {self.max_body} bytes")
                return
        # Read the whole (bounded) body first, each chunk under a timeout, then hand it to the app.
        chunks, received = [], 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                await _plain(send, 408, "request body too slow")
                return
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_body:
                await _plain(send, 413, f"request body over {self.max_body} bytes")
                return
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _plain(send: Send, status: int, detail: str) -> None:
    body = ('{"detail": "' + detail.replace('"', "'") + '"}').encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + [(b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def harden(app: FastAPI, max_body: int = DEFAULT_MAX_BODY, body_timeout: float = 10.0) -> FastAPI:
    """Add the shared request limits to ``app``; returns it."""
    app.add_middleware(Limits, max_body=max_body, body_timeout=body_timeout)
    return app


class WebServer:
    """Serves an ASGI app with uvicorn on ``host:port`` (port 0: a free one), in a thread or the foreground.

    Args:
        app: the ASGI app.
        host: bind address; loopback by default.
        port: port (0 picks a free one; see :attr:`port`).
        max_connections: concurrent connections served (uvicorn ``limit_concurrency``; more get 503).
        keep_alive: seconds an idle keep-alive connection is held.
        name: thread name, for logs.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 256,
        keep_alive: float = 5.0,
        name: str = "web",
    ):
        self.app, self.host, self.name = app, host, name
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, int(port)))
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            limit_concurrency=int(max_connections),
            timeout_keep_alive=float(keep_alive),
            timeout_graceful_shutdown=1,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> WebServer:
        """Serve in a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (Ctrl-C, SIGTERM)."""
        self.server.run(sockets=[self._sock])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=2)
            if self._thread.is_alive():  # connections still open after the grace period: close them
                self.server.force_exit = True
                self._thread.join(timeout=5)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
