"""JSON over HTTP, shared by every local service: a request handler base, a threaded server and a client.

:class:`JsonHandler` reads a JSON body (``Content-Length`` framed), writes JSON replies with a status, checks
an optional bearer token and can drop a connection unanswered (for fault injection). :class:`JsonServer`
serves a handler class from a daemon thread; handlers reach the object they serve as ``self.app``.
:class:`JsonClient` posts and gets JSON with keep-alive and an optional bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

log = logging.getLogger(__name__)

# One INFO line per request from the HTTP libraries would flood training logs.
for _name in ("httpx", "httpx2"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class JsonHandler(BaseHTTPRequestHandler):
    """Request handler base: subclasses write ``do_GET`` / ``do_POST`` with these helpers.

    ``self.app`` is the object given to :class:`JsonServer` (the service whose state the handler reads).
    """

    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> Any:
        """The object this server serves."""
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, fmt: str, *args: Any) -> None:
        """Log requests at debug level (one line per request is too much for training logs)."""
        log.debug(fmt, *args)

    def read_json(self) -> Any:
        """The request's JSON body (``{}`` when empty).

        Raises:
            ValueError: the ``Content-Length`` header is not a number or the body is not JSON.
        """
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) if length > 0 else b"{}")

    def send_json(self, status: int, payload: Any) -> None:
        """Reply with ``status`` and ``payload`` as JSON (``bytes`` are sent as they are, e.g. a broken body)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout); nothing to answer

    def authorized(self, token: str | None) -> bool:
        """``True`` when no token is required or the request carries ``Authorization: Bearer <token>``.

        Otherwise replies 401 (naming the fix) and returns ``False``.
        """
        if token is None:
            return True
        if hmac.compare_digest(self.headers.get("Authorization", ""), f"Bearer {token}"):
            return True
        self.send_json(401, {"error": "missing or wrong bearer token: send Authorization: Bearer $TOKEN"})
        self.close_connection = True  # the unread body must not be taken for the next request
        return False

    def drop_connection(self) -> None:
        """Close the connection without an answer (what a crashed or overloaded server does)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class JsonServer:
    """Serve a :class:`JsonHandler` class on ``host:port`` from a daemon thread; a context manager.

    Binds on construction (so :attr:`port` is known at once), serves from :meth:`start`. Services that
    are endpoints themselves subclass it and pass ``app=None`` (handlers then see the server object).

    Args:
        handler: the request handler class.
        app: what handlers reach as ``self.app``; ``None``: this object.
        host: interface to bind (loopback by default).
        port: TCP port; 0 picks a free one.
        name: name of the serving thread.
    """

    def __init__(
        self, handler: type[JsonHandler], app: Any = None, host: str = "127.0.0.1", port: int = 0, name: str = "http"
    ):
        self.host = host
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._httpd.app = self if app is None else app  # type: ignore[attr-defined]
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (``http://host:port/v1``), what an OpenAI client takes."""
        return f"{self.url}/v1"

    def start(self):
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=self._name, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (command-line use)."""
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JsonClient:
    """Posts and gets JSON on one base URL over a keep-alive connection pool.

    Args:
        url: the service's base URL (``http://127.0.0.1:8765``).
        token: bearer token sent with every request, if any.
        timeout: seconds per request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _json(self, resp: httpx.Response) -> Any:
        if resp.status_code == 401:
            raise PermissionError(f"{self.url} refused the request: missing or wrong bearer token")
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, payload: Any) -> Any:
        """POST ``payload`` as JSON to ``path`` and return the decoded answer.

        Raises:
            PermissionError: the service wants a (different) bearer token.
            httpx.HTTPError: the connection failed or the status is 4xx/5xx.
        """
        return self._json(self._http.post(path, json=payload))

    def get(self, path: str) -> Any:
        """GET ``path`` and return the decoded JSON answer (raises like :meth:`post`)."""
        return self._json(self._http.get(path))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
