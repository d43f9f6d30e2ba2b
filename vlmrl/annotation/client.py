"""Clients of the annotation server: submit messages without waiting, fetch whatever labels exist.

:class:`AnnotationClient` is the interface; :class:`HttpClient` talks to a server in another process
(``vlmrl serve``), :class:`DirectClient` calls an :class:`~vlmrl.annotation.core.AnnotationCore` hosted in
this one, with no HTTP in between.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vlmrl.http_json import JsonClient

if TYPE_CHECKING:
    from vlmrl.annotation.core import AnnotationCore


class AnnotationClient(abc.ABC):
    """What a caller of the annotation server uses: submit, labels, stats, close."""

    @abc.abstractmethod
    def submit(self, messages: list[str]) -> dict[str, int]:
        """Queue messages; returns ``{"accepted", "new", "known"}`` once they are durably queued."""

    @abc.abstractmethod
    def labels(self, messages: list[str]) -> dict[str, int | None]:
        """Label of each message: 1 helpful, 0 not, -1 unparseable, ``None`` not labeled yet."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """The server's statistics (queue, labels/s, cache hit rate, parse failures...)."""

    def close(self) -> None:
        """Release what the client holds (the server keeps running)."""


class HttpClient(AnnotationClient):
    """Talks to an annotation server over HTTP (keep-alive).

    Calls raise :class:`PermissionError` (naming ``token_env``) when the server wants a bearer token, and
    :class:`httpx.HTTPError` when it is unreachable or answers with an error status.

    Args:
        url: the server's base URL (``http://127.0.0.1:8765``).
        token_env: environment variable holding the server's bearer token, if it requires one.
        timeout: seconds per call; actors should never wait long on annotation.
    """

    def __init__(self, url: str, token_env: str = "VLMRL_ANNOTATION_TOKEN", timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.token_env = token_env
        self._http = JsonClient(self.url, token=os.environ.get(token_env), timeout=timeout)

    @contextlib.contextmanager
    def _naming_token_env(self) -> Iterator[None]:
        try:
            yield
        except PermissionError as e:
            raise PermissionError(f"{e}: export {self.token_env}") from None

    def submit(self, messages: list[str]) -> dict[str, int]:
        """Queue messages; returns ``{"accepted", "new", "known"}`` once they are durably queued."""
        with self._naming_token_env():
            return self._http.post("/submit", {"messages": list(messages)})

    def labels(self, messages: list[str]) -> dict[str, int | None]:
        """Label of each message: 1 helpful, 0 not, -1 unparseable, ``None`` not labeled yet."""
        with self._naming_token_env():
            return self._http.post("/labels", {"messages": list(messages)})["labels"]

    def stats(self) -> dict[str, Any]:
        """The server's statistics (queue, labels/s, cache hit rate, parse failures...)."""
        with self._naming_token_env():
            return self._http.get("/stats")

    def close(self) -> None:
        """Close the connection pool."""
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
