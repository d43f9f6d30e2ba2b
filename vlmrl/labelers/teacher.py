"""Simulated preference teacher (B-Pref, Lee et al. 2021): labels from ground-truth returns.

It makes every preference experiment runnable offline and lets users measure how label noise hurts:
rationality ``beta`` (Boltzmann choice; ``inf`` = always the better one), myopia ``gamma`` (recent steps
weigh more), a mistake rate ``eps`` (flip), a skip threshold (neither segment is good enough to judge)
and an equal threshold (returns too close to tell apart).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import LabelCache
from vlmrl.types import Fragment, FragmentPair, Label


def discounted_segment_return(rewards: np.ndarray, gamma: float) -> float:
    """Myopic return of one segment: ``sum_t gamma^(H-1-t) r_t`` (the last step has weight 1)."""
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    weights = gamma ** np.arange(len(rewards) - 1, -1, -1, dtype=np.float64)
    return float(np.dot(weights, rewards))


class SimulatedTeacher(Labeler):
    """B-Pref's scripted teacher over :class:`~vlmrl.types.FragmentPair` queries.

    Args:
        beta: rationality; ``P(second preferred) = sigmoid(beta * (R2 - R1))``. ``float("inf")`` (or a
            string "inf" from YAML) is the perfectly rational teacher.
        gamma: myopia discount in (0, 1]; 1 weighs every step of a segment equally.
        eps: probability of flipping the chosen label (a mistake).
        skip_threshold: skip (label -1) when both segments' returns are below this; ``None`` never skips.
        equal_threshold: label -1 ("can't tell") when ``|R1 - R2| <= equal_threshold``.
        rng: random generator (required unless the teacher is fully deterministic: beta inf, eps 0).
        name: labeler name used in logs and accuracy stats.

    Example:
        >>> from vlmrl.types import Fragment, FragmentPair
        >>> teacher = SimulatedTeacher(beta="inf", rng=np.random.default_rng(0))
        >>> a, b = Fragment(env_rewards=np.array([0.1])), Fragment(env_rewards=np.array([0.9]))
        >>> teacher([FragmentPair(a, b)])[0].value
        1
    """

    def __init__(
        self,
        beta: float | str = float("inf"),
        gamma: float = 1.0,
        eps: float = 0.0,
        skip_threshold: float | None = None,
        equal_threshold: float = 0.0,
        rng: np.random.Generator | None = None,
        name: str = "teacher",
        **_: object,
    ):
        beta = float(beta)
        if not beta > 0:
            raise ValueError(f"beta={beta}: rationality must be > 0 (use inf for a perfectly rational teacher)")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma={gamma}: myopia discount must be in (0, 1]")
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps={eps}: mistake rate must be in [0, 1]")
        if equal_threshold < 0:
            raise ValueError(f"equal_threshold={equal_threshold}: must be >= 0")
        if rng is None and (math.isfinite(beta) or eps > 0):
            raise ValueError("a stochastic teacher (finite beta or eps > 0) needs rng=np.random.default_rng(seed)")
        self.beta, self.gamma, self.eps = beta, float(gamma), float(eps)
        self.skip_threshold = None if skip_threshold is None else float(skip_threshold)
        self.equal_threshold = float(equal_threshold)
        self.rng = rng
        self.name = name

    def segment_return(self, rewards: np.ndarray | None) -> float:
        """Myopic ground-truth return of one fragment's ``env_rewards``."""
        if rewards is None or len(rewards) == 0:
            raise ValueError(
                "fragment has no env_rewards: the simulated teacher needs ground-truth rewards;"
                " keep env_rewards when building fragments"
            )
        return discounted_segment_return(rewards, self.gamma)

    def cache_key(self, query: FragmentPair) -> str:
        """Key over the teacher's settings and both fragments' content (frames, else observations) and rewards."""
        settings = json.dumps(
            {
                "beta": self.beta,
                "gamma": self.gamma,
                "eps": self.eps,
                "skip_threshold": self.skip_threshold,
                "equal_threshold": self.equal_threshold,
            },
            sort_keys=True,
        )
        contents = [_content(query.first), _content(query.second)]
        contents += [np.asarray(f.env_rewards) for f in (query.first, query.second) if f.env_rewards is not None]
        return LabelCache.key(self.name, "", settings, [c for c in contents if c is not None])

    def __call__(self, queries: Sequence[FragmentPair]) -> list[Label]:
        """Label pairs: 0 = first better, 1 = second better, -1 = skipped or equal.

        Args:
            queries: pairs whose fragments carry ``env_rewards`` (``float (T,)``).

        Returns:
            One :class:`Label` per pair; ``raw`` says why a -1 was given ("skip" or "equal").
        """
        labels = []
        for pair in queries:
            r1 = self.segment_return(pair.first.env_rewards)
            r2 = self.segment_return(pair.second.env_rewards)
            if self.skip_threshold is not None and max(r1, r2) < self.skip_threshold:
                labels.append(Label(-1, source=self.name, raw="skip"))
                continue
            if abs(r1 - r2) <= self.equal_threshold:
                labels.append(Label(-1, source=self.name, raw="equal"))
                continue
            if math.isinf(self.beta):
                value = int(r2 > r1)
            else:
                p_second = 1.0 / (1.0 + math.exp(-float(np.clip(self.beta * (r2 - r1), -50.0, 50.0))))
                value = int(self.rng.random() < p_second)
            if self.eps > 0 and self.rng.random() < self.eps:
                value = 1 - value
            labels.append(Label(value, source=self.name, raw=f"{r1:.6g} vs {r2:.6g}"))
        return labels


def _content(fragment: Fragment) -> np.ndarray | None:
    """What a fragment shows: its frames, else its observations."""
    if fragment.frames is not None:
        return np.asarray(fragment.frames)
    return None if fragment.observations is None else np.asarray(fragment.observations)
