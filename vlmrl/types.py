"""Frozen dataclasses shared by every stage: fragments, preference pairs, labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Fragment:
    """A piece of one trajectory shown to a labeler.

    Attributes:
        frames: ``uint8 (T, H, W, 3)`` rendered frames (T >= 1; RL-VLM-F uses T == 1).
        observations: ``(T, ...)`` policy observations, if kept.
        env_rewards: ``float32 (T,)`` ground-truth rewards, used by simulated teachers and accuracy logs.
        meta: free-form provenance (episode id, step index, env name).
    """

    frames: np.ndarray | None = None
    observations: np.ndarray | None = None
    env_rewards: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        for arr in (self.frames, self.observations, self.env_rewards):
            if arr is not None:
                return len(arr)
        return 0


@dataclass(frozen=True)
class FragmentPair:
    """Two fragments to compare; a preference label says which one is closer to the goal."""

    first: Fragment
    second: Fragment


@dataclass(frozen=True)
class FragmentPairs:
    """A batch of preference queries and where their segments came from (what a fragmenter returns).

    Attributes:
        pairs: the queries, in order.
        first_index: ``int64 (P, T)`` positions of each first segment's steps in the fragmenter's source
            (dataset rows offline; step-major positions in the recent-rollout buffer online).
        second_index: ``int64 (P, T)`` the same for the second segments.
    """

    pairs: tuple[FragmentPair, ...]
    first_index: np.ndarray
    second_index: np.ndarray

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class Label:
    """A labeler's answer.

    Attributes:
        value: for a preference, 0 (first better), 1 (second better) or -1 (can't tell; dropped);
            for an ONI annotation, 1 (helpful) or 0 (not helpful), -1 if unparseable.
        source: which labeler produced it (e.g. ``"teacher"``, ``"vlm:gpt-4o"``).
        cached: True when served from the label cache (no endpoint call was paid).
        raw: the model's raw answer, kept for audits.
        failed: True when no answer was obtained (endpoint error, spend budget used up): never cached, so a
            later run asks again.
    """

    value: int
    source: str = ""
    cached: bool = False
    raw: str = ""
    failed: bool = False

    @property
    def valid(self) -> bool:
        """Whether the label carries information (-1 means unsure and is dropped)."""
        return self.value != -1
