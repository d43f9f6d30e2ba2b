"""The one interface every labeler implements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from vlmrl.types import Label, Spend


class Labeler(abc.ABC):
    """Answers queries; never trains anything.

    A preference query is a :class:`~vlmrl.types.FragmentPair` (label 0, 1, or -1 = can't tell);
    an ONI query is one observation (1 = helpful, 0 = not, -1 = unparseable).
    """

    name: str = "labeler"
    #: The task text the labeler judges against, kept beside its labels for audits ("" when it has none).
    goal: str = ""

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

    #: Where this labeler's spend is recorded in a label cache (``None``: it pays for nothing, has no budget).
    budget_key: str | None = None

    def bind_spend(self, recorded: Callable[[], Spend]) -> None:
        """Read the spend recorded so far under :attr:`budget_key` from ``recorded`` (the cache layer calls this).

        A labeler with a budget checks it against that durable record, so a resumed run, or another run on the
        same cache and key, continues from what was paid. Default: ignored.
        """

    def spend_total(self) -> dict[str, Any]:
        """The spend recorded under :attr:`budget_key` and the budget it counts against; empty when unpaid."""
        return {}

    def close(self) -> None:
        """Release threads, connections and caches."""
