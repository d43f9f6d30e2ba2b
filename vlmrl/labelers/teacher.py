"""Simulated preference teacher (B-Pref, Lee et al. 2021): labels from ground-truth returns.

It makes every preference experiment runnable offline and lets users measure how label noise hurts:
rationality ``beta`` (Boltzmann choice; ``inf`` = always the better one), myopia ``gamma`` (recent steps
weigh more), a mistake rate ``eps`` (flip), a skip rule (neither segment is good enough to judge) and an equal
rule (returns too close to tell apart: a 0.5 target, "equally good").

As in B-Pref, the skip and equal rules read the undiscounted segment sums and their thresholds are relative to a
margin, the mean true episode return scaled to the segment's length:
``margin = mean_episode_return * T / episode_length``, ``thr_skip = eps_skip * margin``,
``thr_equal = eps_equal * |margin|``; ``gamma`` discounts only the comparison itself. The margin comes with the
query: each fragment's ``meta`` carries its source's ``mean_episode_return`` and ``episode_length`` (the
fragmenters of :mod:`vlmrl.preferences` attach them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import LabelCache
from vlmrl.types import Fragment, FragmentPair, Label

#: The target of a pair whose returns are equal under the equal rule (trained as a soft Bradley-Terry target).
EQUAL = 0.5


def discounted_segment_return(rewards: np.ndarray, gamma: float) -> float:
    """Myopic return of one segment: ``sum_t gamma^(H-1-t) r_t`` (the last step has weight 1)."""
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    weights = gamma ** np.arange(len(rewards) - 1, -1, -1, dtype=np.float64)
    return float(np.dot(weights, rewards))


def segment_margin(fragment: Fragment) -> float | None:
    """B-Pref's margin of one fragment: ``mean_episode_return * T / episode_length`` from its ``meta`` (or None)."""
    mean_return, length = fragment.meta.get("mean_episode_return"), fragment.meta.get("episode_length")
    if mean_return is None or not length:
        return None
    return float(mean_return) * len(fragment) / float(length)


class SimulatedTeacher(Labeler):
    """B-Pref's scripted teacher over :class:`~vlmrl.types.FragmentPair` queries.

    Args:
        beta: rationality; ``P(second preferred) = sigmoid(beta * (R2 - R1))``. ``float("inf")`` (or a
            string "inf" from YAML) is the perfectly rational teacher (B-Pref writes it as ``beta <= 0``).
        gamma: myopia discount in (0, 1] of the comparison; 1 weighs every step of a segment equally.
        eps: probability of flipping the chosen label (B-Pref's ``eps_mistake``).
        eps_skip: skip (label -1) when both undiscounted segment sums are ``<= eps_skip * margin``; 0 never skips
            (nor does a non-positive margin, as in B-Pref).
        eps_equal: label 0.5 ("equally good", a soft target) when ``|sum1 - sum2| < eps_equal * |margin|``.
            Pairs whose compared returns are exactly equal and not caught by this rule are dropped (label -1):
            B-Pref would call them "first preferred", a bias.
        rng: random generator (required unless the teacher is fully deterministic: beta inf, eps 0).
        name: labeler name used in logs and accuracy stats.

    Example:
        >>> from vlmrl.types import Fragment, FragmentPair
        >>> teacher = SimulatedTeacher(beta="inf", eps_equal=0.5)
        >>> meta = {"mean_episode_return": 10.0, "episode_length": 10}  # margin of a 1-step segment: 1.0
        >>> def pair(r1, r2):
        ...     first, second = Fragment(env_rewards=np.array([r1]), meta=meta), Fragment(env_rewards=np.array([r2]))
        ...     return FragmentPair(first, second)
        >>> [label.value for label in teacher([pair(0.1, 0.9), pair(0.5, 0.6)])]
        [1, 0.5]
    """

    def __init__(
        self,
        beta: float | str = float("inf"),
        gamma: float = 1.0,
        eps: float = 0.0,
        eps_skip: float = 0.0,
        eps_equal: float = 0.0,
        rng: np.random.Generator | None = None,
        name: str = "teacher",
        **_: object,
    ):
        for old, new in (("skip_threshold", "eps_skip"), ("equal_threshold", "eps_equal")):
            if old in _:
                raise ValueError(f"{old} was replaced by {new}: a fraction of the margin (B-Pref), e.g. {new}=0.1")
        beta = float(beta)
        if not beta > 0:
            raise ValueError(f"beta={beta}: rationality must be > 0 (use inf for a perfectly rational teacher)")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma={gamma}: myopia discount must be in (0, 1]")
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps={eps}: mistake rate must be in [0, 1]")
        for key, value in (("eps_skip", eps_skip), ("eps_equal", eps_equal)):
            if not value >= 0:
                raise ValueError(f"{key}={value}: must be >= 0 (a fraction of the margin)")
        if rng is None and (math.isfinite(beta) or eps > 0):
            raise ValueError("a stochastic teacher (finite beta or eps > 0) needs rng=np.random.default_rng(seed)")
        self.beta, self.gamma, self.eps = beta, float(gamma), float(eps)
        self.eps_skip, self.eps_equal = float(eps_skip), float(eps_equal)
        self.rng = rng
        self.name = name

    def segment_return(self, rewards: np.ndarray | None) -> float:
        """Myopic ground-truth return of one fragment's ``env_rewards``."""
        return discounted_segment_return(_rewards(rewards), self.gamma)

    def thresholds(self, pair: FragmentPair) -> tuple[float, float]:
        """``(thr_skip, thr_equal)`` of one pair: the eps values times the pair's margin (0 when a rule is off)."""
        if self.eps_skip == 0 and self.eps_equal == 0:
            return 0.0, 0.0
        margin = segment_margin(pair.first)
        margin = segment_margin(pair.second) if margin is None else margin
        if margin is None:
            raise ValueError(
                "eps_skip/eps_equal are relative to the margin, and the fragment has no"
                " meta['mean_episode_return'] and meta['episode_length']: draw pairs with a vlmrl.preferences"
                " Fragmenter, or add them to Fragment.meta"
            )
        return self.eps_skip * margin, self.eps_equal * abs(margin)

    def cache_key(self, query: FragmentPair) -> str:
        """Key over the teacher's settings, the pair's thresholds and both fragments' content and rewards."""
        thr_skip, thr_equal = self.thresholds(query)
        settings = json.dumps(
            {
                "beta": self.beta,
                "gamma": self.gamma,
                "eps": self.eps,
                "thr_skip": thr_skip,
                "thr_equal": thr_equal,
            },
            sort_keys=True,
        )
        contents = [_content(query.first), _content(query.second)]
        contents += [np.asarray(f.env_rewards) for f in (query.first, query.second) if f.env_rewards is not None]
        return LabelCache.key(self.name, "", settings, [c for c in contents if c is not None])

    def __call__(self, queries: Sequence[FragmentPair]) -> list[Label]:
        """Label pairs: 0 = first better, 1 = second better, 0.5 = equally good, -1 = skipped.

        Args:
            queries: pairs whose fragments carry ``env_rewards`` (``float (T,)``) and, when ``eps_skip`` or
                ``eps_equal`` is set, the margin's ``meta`` (``mean_episode_return``, ``episode_length``).

        Returns:
            One :class:`Label` per pair; ``raw`` says why a 0.5 or -1 was given ("equal", "skip", "same return").
        """
        labels = []
        for pair in queries:
            sum1, sum2 = float(_rewards(pair.first.env_rewards).sum()), float(_rewards(pair.second.env_rewards).sum())
            thr_skip, thr_equal = self.thresholds(pair)
            if thr_skip > 0 and max(sum1, sum2) <= thr_skip:
                labels.append(Label(-1, source=self.name, raw="skip"))
                continue
            if abs(sum1 - sum2) < thr_equal:
                labels.append(Label(EQUAL, source=self.name, raw="equal"))
                continue
            r1 = self.segment_return(pair.first.env_rewards)
            r2 = self.segment_return(pair.second.env_rewards)
            if r1 == r2:
                labels.append(Label(-1, source=self.name, raw="same return"))
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


def _rewards(rewards: np.ndarray | None) -> np.ndarray:
    if rewards is None or len(rewards) == 0:
        raise ValueError(
            "fragment has no env_rewards: the simulated teacher needs ground-truth rewards;"
            " keep env_rewards when building fragments"
        )
    return np.asarray(rewards, dtype=np.float64).reshape(-1)


def _content(fragment: Fragment) -> np.ndarray | None:
    """What a fragment shows: its frames, else its observations."""
    if fragment.frames is not None:
        return np.asarray(fragment.frames)
    return None if fragment.observations is None else np.asarray(fragment.observations)
