"""Client of the annotation server: submit messages without waiting, fetch whatever labels exist."""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx

# One INFO line per request from the HTTP libraries would flood training logs.
for _name in ("httpx", "httpx2"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class AnnotationClient:
    """Talks to ``vlmrl serve`` over HTTP (keep-alive).

    Args:
        url: the server's base URL (``http://127.0.0.1:8765``).
        token_env: environment variable holding the server's bearer token, if it requires one.
        timeout: seconds per call; actors should never wait long on annotation.
    """

    def __init__(self, url: str, token_env: str = "VLMRL_ANNOTATION_TOKEN", timeout: float = 10.0):
        self.url = url.rstrip("/")
        token = os.environ.get(token_env)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _post(self, path: str, messages: list[str]) -> dict[str, Any]:
        resp = self._http.post(path, json={"messages": list(messages)})
        if resp.status_code == 401:
            raise PermissionError(f"{self.url} wants a bearer token: export VLMRL_ANNOTATION_TOKEN")
        resp.raise_for_status()
        return resp.json()

    def submit(self, messages: list[str]) -> dict[str, int]:
        """Queue messages; returns ``{"accepted", "new", "known"}`` once they are durably queued."""
        return self._post("/submit", messages)

    def labels(self, messages: list[str]) -> dict[str, int | None]:
        """Label of each message: 1 helpful, 0 not, -1 unparseable, ``None`` not labeled yet."""
        return self._post("/labels", messages)["labels"]

    def stats(self) -> dict[str, Any]:
        """The server's statistics (queue, labels/s, cache hit rate, parse failures...)."""
        resp = self._http.get("/stats")
        resp.raise_for_status()
        return resp.json()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
