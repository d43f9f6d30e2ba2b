"""Agreement numbers against hand computations on toy rewards."""

import math

import numpy as np
import pytest

from vlmrl.rewards import quality as rq

# Toy reward: the model swaps the order of the middle two transitions.
MODEL = np.array([1.0, 2.0, 3.0, 4.0])
TRUTH = np.array([1.0, 3.0, 2.0, 4.0])


def test_rank_correlations_match_hand_computation():
    out = rq.rank_correlations(MODEL, TRUTH)
    # Spearman: rank differences d = (0, 1, 1, 0); rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8.
    assert out["spearman"] == pytest.approx(0.8)
    # Kendall: of the 6 pairs only (2nd, 3rd) is discordant: (5 - 1) / 6.
    assert out["kendall"] == pytest.approx(2 / 3)
    # Pearson: centred (-1.5, -.5, .5, 1.5) . (-1.5, .5, -.5, 1.5) = 4; both squared norms are 5.
    assert out["pearson"] == pytest.approx(0.8)


def test_epic_distance_of_next_state_rewards_is_pearson_distance_of_centred_rewards():
    assert rq.epic_distance(MODEL, TRUTH) == pytest.approx(math.sqrt((1 - 0.8) / 2))  # 0.3162
    # Shift and positive scale do not matter; a sign flip is maximally far.
    assert rq.epic_distance(3 * MODEL - 7, MODEL) == pytest.approx(0.0, abs=1e-7)
    assert rq.epic_distance(-MODEL, MODEL) == pytest.approx(1.0)


def test_epic_canonicalize_hand_computed_three_states():
    # R[i, j] = r(x_j) with r = (0, 1, 2): canonical form is r - mean(r) on every row, for any gamma.
    R = np.tile([0.0, 1.0, 2.0], (3, 1))
    for gamma in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(rq.epic_canonicalize(R, gamma), np.tile([-1.0, 0.0, 1.0], (3, 1)), atol=1e-12)
    # A reward that reads the start state: R[i, j] = s_i with s = (0, 3, 6), gamma = 0.5.
    # row means: (0, 3, 6); grand mean 3. C[i, j] = s_i + .5 * s_j - s_i - .5 * 3 = .5 * s_j - 1.5.
    R2 = np.tile([[0.0], [3.0], [6.0]], (1, 3))
    np.testing.assert_allclose(rq.epic_canonicalize(R2, 0.5), np.tile([-1.5, 0.0, 1.5], (3, 1)), atol=1e-12)
    np.testing.assert_allclose(rq.canonicalize_next_state_reward([0.0, 1.0, 2.0]), [-1.0, 0.0, 1.0])


def test_epic_is_invariant_to_potential_shaping_where_pearson_is_not():
    rng = np.random.default_rng(0)
    m, gamma = 12, 0.9
    base = rng.normal(size=(m, m))
    phi = rng.normal(size=m) * 5
    shaped = 2.5 * base + gamma * phi[None, :] - phi[:, None]  # R'(s, s') = a R + gamma phi(s') - phi(s)
    np.testing.assert_allclose(rq.epic_canonicalize(shaped, gamma), 2.5 * rq.epic_canonicalize(base, gamma), atol=1e-9)
    visited = np.stack([np.arange(m - 1), np.arange(1, m)], axis=1)
    assert rq.epic_distance_tabular(shaped, base, visited, gamma) == pytest.approx(0.0, abs=1e-7)
    raw = rq.pearson_distance(shaped[visited[:, 0], visited[:, 1]], base[visited[:, 0], visited[:, 1]])
    assert raw > 0.1
    # The next-state closed form is the tabular formula for R[i, j] = r(x_j).
    r = rng.normal(size=m)
    tab = rq.epic_canonicalize(np.tile(r, (m, 1)), gamma)
    np.testing.assert_allclose(tab[0], rq.canonicalize_next_state_reward(r), atol=1e-12)


def test_episode_returns_and_agreement():
    ids = np.array([7, 7, 3, 3, 3, 9])
    r = np.array([1.0, 2.0, 0.5, 0.5, 0.5, -1.0])
    np.testing.assert_allclose(rq.episode_returns(r, ids), [3.0, 1.5, -1.0])
    out = rq.reward_agreement(r, r * 2 + 1, ids)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["episodes"] == 3
    # Returns under the truth: 3*... model returns (3, 1.5, -1), truth (8, 6, 1): same order.
    assert out["episode_spearman"] == pytest.approx(1.0)
    assert out["epic"] == pytest.approx(0.0, abs=1e-7)


def test_extremes_are_sorted_and_disjoint():
    s = np.array([0.3, 0.9, 0.1, 0.9, 0.5])
    top, bottom = rq.extreme_indices(s, 10)  # capped at 5 // 2 = 2
    assert top.tolist() == [1, 3]
    assert bottom.tolist() == [2, 0]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="differ in length"):
        rq.rank_correlations([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        rq.epic_distance([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        rq.pearson([1.0], [2.0])
    with pytest.raises(ValueError, match="square"):
        rq.epic_canonicalize(np.zeros((2, 3)), 0.9)
    assert math.isnan(rq.rank_correlations([1, 1, 1], [1, 2, 3])["spearman"])


def test_extremes_with_at_most_one_per_episode():
    s = np.array([9.0, 8.0, 7.0, 1.0, 2.0, 0.0])
    episodes = np.array([0, 0, 1, 1, 2, 2])
    top, bottom = rq.extreme_indices(s, 3, episodes, max_per_group=1)
    assert top.tolist() == [0, 2, 4]  # 9 (ep 0), 7 (ep 1), 2 (ep 2): 8 is skipped, ep 0 already shown
    assert bottom.tolist() == [5, 3, 1]  # 0 (ep 2), 1 (ep 1), 8 (ep 0); never an index already on top
