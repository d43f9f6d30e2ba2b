"""The one interface every labeler implements."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Any

from vlmrl.types import Label


class Labeler(abc.ABC):
    """Answers queries; never trains anything.

    A preference query is a :class:`~vlmrl.types.FragmentPair` (label 0, 1, or -1 = can't tell);
    an ONI query is one observation (1 = helpful, 0 = not, -1 = unparseable).
    """

    name: str = "labeler"

    @abc.abstractmethod
    def __call__(self, queries: Sequence[Any]) -> list[Label]:
        """Label a batch of queries; returns one :class:`Label` per query, in order."""

    def label_as_completed(self, queries: Sequence[Any]) -> Iterator[dict[int, Label]]:
        """Yield ``{query index: label}`` groups as soon as they are known (default: all of ``__call__`` at once).

        The label cache stores each group before the next one is waited for, so a crash loses no paid answer.
        """
        yield dict(enumerate(self(queries)))

    def cache_key(self, query: Any) -> str | None:
        """The label cache's key of ``query`` (``None``: this labeler's answers are not cached).

        Built with :meth:`vlmrl.labelers.cache.LabelCache.key`: who answers, with which prompt, about which content.
        """
        return None

    @property
    def exhausted(self) -> bool:
        """True once the labeler's spend budget is used up (no further query will be paid)."""
        return False

    def endpoint_stats(self) -> dict[str, int]:
        """Endpoint counters (calls, retries, failures) for the label statistics; empty for offline labelers."""
        return {}

    def close(self) -> None:
        """Release threads, connections and caches."""
