"""Clients of the annotation server: submit messages without waiting, fetch whatever labels exist.

:class:`AnnotationClient` is the interface; :class:`HttpClient` talks to a server in another process
(``vlmrl serve``), :class:`DirectClient` calls an :class:`~vlmrl.annotation.core.AnnotationCore` hosted in
this one, with no HTTP in between.
"""

from __future__ import annotations

import abc
import logging
import os
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from vlmrl.annotation.core import AnnotationCore

logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would flood training logs


class AnnotationClient(abc.ABC):
    """What a caller of the annotation server uses: submit, labels, stats, close."""

    @abc.abstractmethod
    def submit(self, messages: list[str]) -> dict[str, int]:
        """Queue messages; returns ``{"accepted", "new", "known"}`` once they are durably queued.

        Raises:
            ValueError: a message is longer than the server's ``max_message_chars`` (nothing was queued).
        """

    @abc.abstractmethod
    def labels(self, messages: list[str]) -> dict[str, int | None]:
        """Label of each message: 1 helpful, 0 not, -1 unparseable, ``None`` not labeled yet."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """The server's statistics (queue, labels/s, cache hit rate, parse failures...)."""

    def close(self) -> None:
        """Release what the client holds (the server keeps running)."""


class HttpClient(AnnotationClient):
    """Talks to an annotation server over HTTP, on one persistent (keep-alive) connection.

    Calls raise :class:`PermissionError` (naming ``token_env``) when the server wants a bearer token,
    :class:`ValueError` when it refuses a message as too long (422), and :class:`httpx.HTTPError` when it is
    unreachable or answers with another error status.

    Args:
        url: the server's base URL (``http://127.0.0.1:8765``).
        token_env: environment variable holding the server's bearer token, if it requires one.
        timeout: seconds per call; actors should never wait long on annotation.
    """

    def __init__(self, url: str, token_env: str = "VLMRL_ANNOTATION_TOKEN", timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.token_env = token_env
        token = os.environ.get(token_env)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)  # keeps its connection open

    def _json(self, reply: httpx.Response) -> Any:
        if reply.status_code == 401:
            raise PermissionError(f"{self.url} wants a bearer token (missing or wrong): export {self.token_env}")
        if reply.status_code == 422:
            raise ValueError(f"{self.url} refused the request: {reply.json().get('error', reply.text)}")
        reply.raise_for_status()
        return reply.json()

    def submit(self, messages: list[str]) -> dict[str, int]:
        """Queue messages; returns ``{"accepted", "new", "known"}`` once they are durably queued."""
        return self._json(self._http.post("/submit", json={"messages": list(messages)}))

    def labels(self, messages: list[str]) -> dict[str, int | None]:
        """Label of each message: 1 helpful, 0 not, -1 unparseable, ``None`` not labeled yet."""
        return self._json(self._http.post("/labels", json={"messages": list(messages)}))["labels"]

    def stats(self) -> dict[str, Any]:
        """The server's statistics (queue, labels/s, cache hit rate, parse failures...)."""
        return self._json(self._http.get("/stats"))

    def close(self) -> None:
        """Close the connection."""
        self._http.close()


class DirectClient(AnnotationClient):
    """Calls an annotation core hosted in this process; answers are those :class:`HttpClient` would get.

    The core is not owned: :meth:`close` leaves it running (whoever started it stops it).

    Args:
        core: a started :class:`~vlmrl.annotation.core.AnnotationCore` (or server).
    """

    def __init__(self, core: AnnotationCore):
        self.core = core

    def submit(self, messages: list[str]) -> dict[str, int]:
        """Queue messages; returns ``{"accepted", "new", "known"}`` once they are durably queued."""
        return self.core.submit(list(messages))

    def labels(self, messages: list[str]) -> dict[str, int | None]:
        """Label of each message: 1 helpful, 0 not, -1 unparseable, ``None`` not labeled yet."""
        return self.core.labels(list(messages))

    def stats(self) -> dict[str, Any]:
        """The core's statistics (queue, labels/s, cache hit rate, parse failures...)."""
        return self.core.stats()
