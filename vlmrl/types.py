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
        meta: free-form provenance (episode id, step index, env name); the fragmenters add their source's
            ``mean_episode_return`` and ``episode_length`` (the simulated teacher's margin).
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
class Spend:
    """What answers cost: pair queries answered, the endpoint's ``usage`` tokens, money from a price table.

    Attributes:
        queries: queries that got an answer (a pair asked in both orders is two).
        prompt_tokens: prompt tokens the endpoint reported (``usage.prompt_tokens``), summed over calls.
        completion_tokens: completion tokens the endpoint reported, summed over calls.
        cost_usd: the tokens priced by the labeler's price table (0 without one).
    """

    queries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.queries + other.queries,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {
            "queries": self.queries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
        }


@dataclass(frozen=True)
class Label:
    """A labeler's answer.

    Attributes:
        value: for a preference, a float target: 0 (first better), 1 (second better), 0.5 (equally good,
            trained as a soft Bradley-Terry target) or -1 (can't tell; dropped); for an ONI annotation,
            1 (helpful) or 0 (not helpful), -1 if unparseable.
        source: which labeler produced it (e.g. ``"teacher"``, ``"vlm:gpt-4o"``).
        cached: True when served from the label cache (no endpoint call was paid).
        raw: the model's raw answer, kept for audits.
        failed: True when no usable answer was obtained (endpoint error, unparseable answer, spend budget used
            up): never cached, so a later run asks again.
        spend: what this answer cost (``None`` when nothing was paid: a cache hit, a teacher, a refusal).
        inconsistent: True when the pair, asked in both orders, got answers that disagree (value -1).
    """

    value: float
    source: str = ""
    cached: bool = False
    raw: str = ""
    failed: bool = False
    spend: Spend | None = None
    inconsistent: bool = False

    @property
    def valid(self) -> bool:
        """Whether the label carries information (-1 means unsure and is dropped)."""
        return self.value != -1
