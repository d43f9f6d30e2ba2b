"""The one web stack of vlmrl's HTTP services (annotation server, label page, stub endpoints): FastAPI + uvicorn.

:func:`harden` puts the shared limits on an app (body size, slow-body timeout, optional bearer token);
:class:`WebServer` serves it on loopback by default, in a background thread or in the foreground, with
bounded concurrency and timeouts for idle connections and for request heads that never end.
:func:`drop_connection` closes a connection unanswered (what a crashed server does; for fault injection).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
_TRANSPORT = "vlmrl.transport"  # key of (loop, transport) in each request's scope["state"]


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


def require_token(env_var: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A FastAPI dependency: 401 unless the request carries the token in ``$env_var`` (none set: open).

    The check is a coroutine: FastAPI runs plain functions in a thread pool, a thread hop per request.
    """

    async def check(request: Request) -> None:
        expected = os.environ.get(env_var)
        if expected and not tokens_equal(bearer_token(request), expected):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return check


class Limits:
    """ASGI middleware: refuse bodies over ``max_body`` bytes (413), bad ``Content-Length`` (400), and bodies
    that take longer than ``body_timeout`` seconds in all to arrive (408).

    An over-long body is read on and dropped (up to ``DRAIN_FACTOR * max_body`` bytes) before the 413 goes out,
    so that the client reads the answer rather than a reset connection; a bigger one is answered at once and
    its connection closed.
    """  # noqa: D205

    DRAIN_FACTOR = 16

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
            if int(length) > self.DRAIN_FACTOR * self.max_body:
                await _plain(send, 413, f"request body over {self.max_body} bytes")
                return
        # Read the whole (bounded) body first, under one deadline, then hand it to the app.
        chunks: list[bytes] = []
        received, more = 0, True
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while more:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await _plain(send, 408, f"request body took over {self.body_timeout:g} s")
                return
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            more = message.get("more_body", False)
            if received <= self.max_body:
                chunks.append(chunk)
            elif received > self.DRAIN_FACTOR * self.max_body:
                break
            else:
                chunks.clear()  # over the limit: read on to its end, keep nothing
        if received > self.max_body:
            await _plain(send, 413, f"request body over {self.max_body} bytes", close=more)
            return
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _plain(send: Send, status: int, detail: str, close: bool = True) -> None:
    body = ('{"detail": "' + detail.replace('"', "'") + '"}').encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def harden(app: FastAPI, max_body: int = DEFAULT_MAX_BODY, body_timeout: float = 10.0) -> FastAPI:
    """Add the shared request limits to ``app``; returns it."""
    app.add_middleware(Limits, max_body=max_body, body_timeout=body_timeout)
    return app


def drop_connection(request: Request) -> None:
    """Close the request's connection without an answer (a crashed or overloaded server; for fault injection).

    The handler then returns any response: it is not delivered. Safe to call from a worker thread.
    """
    loop, transport = request.scope.get("state", {}).get(_TRANSPORT, (None, None))
    if transport is None:
        raise RuntimeError("drop_connection needs an app served by vlmrl.web.WebServer")
    loop.call_soon_threadsafe(transport.abort)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on request heads.

    uvicorn times idle keep-alive connections out only after a first response: a connection that never sends
    a request, or sends a head that never ends, would hold its slot for ever. Here each request head must be
    complete ``head_timeout`` seconds after the connection opens or the previous response ends, or the
    connection gets a 408 and is closed. Requests also find their transport in ``scope["state"]``, for
    :func:`drop_connection`.
    """

    head_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Arm the head deadline and give this connection's requests a way to drop it."""
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self.app_state = {**self.app_state, _TRANSPORT: (self.loop, transport)}
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out, self.cycle)

    def _head_timed_out(self, cycle_when_armed: Any) -> None:
        if self.cycle is cycle_when_armed and not self.transport.is_closing():  # no new request since arming
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_response_complete(self) -> None:
        """The next request head is due ``head_timeout`` seconds from now."""
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Disarm the head deadline."""
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)


class WebServer:
    """Serves an ASGI app with uvicorn on ``host:port`` (port 0: a free one), in a thread or the foreground.

    Args:
        app: the ASGI app.
        host: bind address; loopback by default.
        port: port (0 picks a free one; see :attr:`port`).
        max_connections: concurrent connections served (uvicorn ``limit_concurrency``; more get 503).
        keep_alive: seconds an idle keep-alive connection is held.
        head_timeout: seconds a client has to send a complete request head, from connecting or from the
            previous response (then: 408, disconnected).
        name: thread name, for logs.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 256,
        keep_alive: float = 5.0,
        head_timeout: float = 10.0,
        name: str = "web",
    ):
        self.app, self.host, self.name = app, host, name
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when their proto says TCP,
        # and without it every keep-alive answer (head and body written apart) waits ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, int(port)))
        self.port = int(self._sock.getsockname()[1])
        protocol = type("GuardedH11", (GuardedH11Protocol,), {"head_timeout": float(head_timeout)})
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            limit_concurrency=int(max_connections),
            timeout_keep_alive=float(keep_alive),
            timeout_graceful_shutdown=1,
            lifespan="off",
            http=protocol,
            ws="none",
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
