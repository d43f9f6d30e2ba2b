"""How well a reward model agrees with the ground truth: rank correlations and the EPIC distance.

EPIC (Gleave et al. 2020, "Quantifying Differences in Reward Functions") maps each reward to a canonical
form that is invariant to potential shaping, then takes the Pearson distance ``sqrt((1 - rho) / 2)``
between the canonical rewards over a coverage distribution of transitions. It is 0 for rewards that
differ only by shaping and positive rescaling, and at most 1.

Canonicalization (paper, Def. 4.1), with ``S, S'`` drawn from a state distribution ``D_S`` and ``A``
from ``D_A``::

    C(R)(s, a, s') = R(s, a, s') + E[gamma R(s', A, S') - R(s, A, S') - gamma R(S, A, S')]

:func:`epic_canonicalize` computes it exactly for rewards tabulated on a pool of ``M`` states
(``R[i, j] = R(x_i, x_j)``, action-independent, ``D_S`` uniform on the pool). For rewards that read only
the next observation (``R(s, a, s') = r(s')``, the case of every frame or message reward model), the
expectations do not depend on ``s`` and the formula collapses exactly to ``r(s') - E_{D_S}[r]``;
:func:`canonicalize_next_state_reward` is that closed form.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _as_vector(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop those transitions before comparing rewards")
    return arr


def _check_pair(model: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_vector(model, "model reward"), _as_vector(truth, "ground-truth reward")
    if a.shape != b.shape:
        raise ValueError(f"model and ground-truth rewards differ in length ({a.size} vs {b.size}); pass one value each")
    if a.size < 2:
        raise ValueError("need at least 2 transitions to compare rewards; roll out more steps (episodes=, max_steps=)")
    return a, b


def pearson(model: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (no variation to correlate)."""
    a, b = _check_pair(model, truth)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom > 0 else float("nan")


def pearson_distance(model: np.ndarray, truth: np.ndarray) -> float:
    """``sqrt((1 - rho) / 2)``: 0 for perfectly correlated rewards, 1 for anti-correlated, NaN if constant."""
    rho = pearson(model, truth)
    return float(math.sqrt(max(0.0, (1.0 - min(rho, 1.0)) / 2.0))) if np.isfinite(rho) else float("nan")


def rank_correlations(model: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Spearman rho, Kendall tau-b and Pearson r between two reward vectors of equal length.

    Rank correlations ask only whether the model orders observations as the ground truth does, which is
    what a policy optimizing the reward cares about; Pearson also asks for a linear relation.
    """
    a, b = _check_pair(model, truth)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        nan = float("nan")
        return {"spearman": nan, "kendall": nan, "pearson": nan}
    return {
        "spearman": float(stats.spearmanr(a, b).statistic),
        "kendall": float(stats.kendalltau(a, b).statistic),
        "pearson": pearson(a, b),
    }


def epic_canonicalize(reward_matrix: np.ndarray, gamma: float) -> np.ndarray:
    """Canonically shaped reward on a pool of ``M`` states (EPIC Def. 4.1, action-independent rewards).

    Args:
        reward_matrix: ``(M, M)`` with ``R[i, j] = R(x_i, x_j)``, the reward of a transition from pool state
            ``x_i`` to pool state ``x_j``; ``D_S`` is uniform over the pool for both ``S`` and ``S'``.
        gamma: discount factor in ``[0, 1]``.

    Returns:
        ``(M, M)`` ``C[i, j] = R[i, j] + gamma * mean_k R[j, k] - mean_k R[i, k] - gamma * mean_kl R[k, l]``.
    """
    R = np.asarray(reward_matrix, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"reward_matrix must be square (M, M), got shape {R.shape}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    potential = R.mean(axis=1)  # E_{S'}[R(x, S')] for every pool state x
    return R + gamma * potential[None, :] - potential[:, None] - gamma * R.mean()


def canonicalize_next_state_reward(rewards: np.ndarray) -> np.ndarray:
    """EPIC canonical form of a next-state reward ``r(s')`` on its visited states: ``r - mean(r)``.

    Exact, not an approximation, once ``D_S`` is taken to be the visited states: every expectation in
    Def. 4.1 equals ``E[r]``, and ``gamma E[r] - E[r] - gamma E[r] = -E[r]`` for any ``gamma``.
    """
    r = _as_vector(rewards, "rewards")
    return r - r.mean()


def epic_distance(model: np.ndarray, truth: np.ndarray) -> float:
    """EPIC distance between two next-state rewards sampled on the same visited transitions.

    Both are canonicalized with :func:`canonicalize_next_state_reward` and compared by
    :func:`pearson_distance` over the visited transitions (the coverage distribution). Because the
    canonical form is a shift, the value equals the Pearson distance of the raw rewards; what EPIC adds
    over Pearson (invariance to shaping terms that depend on ``s``) needs rewards that read ``s`` as well.
    """
    a, b = _check_pair(model, truth)
    return pearson_distance(canonicalize_next_state_reward(a), canonicalize_next_state_reward(b))


def epic_distance_tabular(
    model_matrix: np.ndarray, truth_matrix: np.ndarray, transitions: np.ndarray, gamma: float
) -> float:
    """EPIC distance of two rewards tabulated on a state pool, over a set of coverage transitions.

    Args:
        model_matrix: ``(M, M)`` first reward, ``R[i, j] = R(x_i, x_j)``.
        truth_matrix: ``(M, M)`` second reward.
        transitions: ``int (K, 2)`` pairs ``(i, j)`` of the coverage distribution (e.g. visited transitions).
        gamma: discount factor.
    """
    t = np.asarray(transitions, dtype=np.int64)
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"transitions must be (K, 2) index pairs, got shape {t.shape}")
    c1 = epic_canonicalize(model_matrix, gamma)[t[:, 0], t[:, 1]]
    c2 = epic_canonicalize(truth_matrix, gamma)[t[:, 0], t[:, 1]]
    return pearson_distance(c1, c2)


def episode_returns(rewards: np.ndarray, episode_ids: np.ndarray) -> np.ndarray:
    """Undiscounted return of every episode, in order of first appearance of its id."""
    r = _as_vector(rewards, "rewards")
    ids = np.asarray(episode_ids).reshape(-1)
    if ids.shape != r.shape:
        raise ValueError(f"episode_ids ({ids.size}) and rewards ({r.size}) differ in length")
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=r)
    return sums[np.argsort(first)]


def extreme_indices(
    scores: np.ndarray, k: int, groups: np.ndarray | None = None, max_per_group: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` highest scores (descending) and the ``k`` lowest (ascending), never overlapping.

    ``k`` is capped at half the number of scores so no observation appears in both rows; ties keep the
    earlier observation first. With ``groups`` (e.g. episode ids) and ``max_per_group``, each row takes at most
    that many observations from one group, so the rows show different episodes rather than neighbouring
    frames of one; rows come out shorter when there are too few groups.
    """
    s = _as_vector(scores, "scores")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, s.size // 2)
    if groups is None or max_per_group is None:
        return np.argsort(-s, kind="stable")[:k], np.argsort(s, kind="stable")[:k]
    g = np.asarray(groups).reshape(-1)
    if g.shape != s.shape:
        raise ValueError(f"groups ({g.size}) and scores ({s.size}) differ in length")

    def pick(order: np.ndarray, exclude: set[int]) -> np.ndarray:
        taken: list[int] = []
        per: dict = {}
        for i in order:
            if len(taken) == k:
                break
            if int(i) in exclude or per.get(g[i], 0) >= max_per_group:
                continue
            per[g[i]] = per.get(g[i], 0) + 1
            taken.append(int(i))
        return np.asarray(taken, dtype=np.int64)

    top = pick(np.argsort(-s, kind="stable"), set())
    return top, pick(np.argsort(s, kind="stable"), set(top.tolist()))


def reward_agreement(model: np.ndarray, truth: np.ndarray, episode_ids: np.ndarray | None = None) -> dict[str, float]:
    """All agreement numbers the evaluate-reward job reports, per transition and per episode.

    Returns:
        ``spearman``, ``kendall``, ``pearson``, ``epic`` over transitions; ``episodes`` and, when there
        are at least 3 episodes, ``episode_spearman`` / ``episode_kendall`` between episode returns
        (does the model rank whole behaviours like the ground truth does?).
    """
    a, b = _check_pair(model, truth)
    out: dict[str, float] = {
        "transitions": int(a.size),
        **rank_correlations(a, b),
        "epic": epic_distance(a, b),
    }
    if episode_ids is not None:
        ra, rb = episode_returns(a, episode_ids), episode_returns(b, episode_ids)
        out["episodes"] = int(ra.size)
        if ra.size >= 3:
            ep = rank_correlations(ra, rb)
            out["episode_spearman"] = ep["spearman"]
            out["episode_kendall"] = ep["kendall"]
    return out
