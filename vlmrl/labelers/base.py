"""The one interface every labeler implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
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
