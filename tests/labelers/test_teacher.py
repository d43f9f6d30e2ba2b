import numpy as np
import pytest

from vlmrl.labelers.teacher import SimulatedTeacher, discounted_segment_return
from vlmrl.types import Fragment, FragmentPair


def pairs_from_returns(r1, r2):
    return [
        FragmentPair(Fragment(env_rewards=np.array([a], np.float32)), Fragment(env_rewards=np.array([b], np.float32)))
        for a, b in zip(r1, r2, strict=True)
    ]


def test_rational_teacher_picks_the_better_segment():
    rng = np.random.default_rng(0)
    r1, r2 = rng.random(200), rng.random(200)
    labels = SimulatedTeacher(beta="inf")(pairs_from_returns(r1, r2))
    assert [lab.value for lab in labels] == [int(b > a) for a, b in zip(r1, r2, strict=True)]
    assert all(lab.source == "teacher" for lab in labels)


def test_myopia_weighs_recent_steps_more():
    assert discounted_segment_return(np.array([1.0, 0.0, 0.0]), 0.5) == pytest.approx(0.25)
    assert discounted_segment_return(np.array([0.0, 0.0, 1.0]), 0.5) == pytest.approx(1.0)
    early = Fragment(env_rewards=np.array([1.0, 0.0, 0.0]))
    late = Fragment(env_rewards=np.array([0.0, 0.0, 0.9]))
    # Equal weights prefer the early reward (1.0 > 0.9); a myopic teacher prefers the late one.
    assert SimulatedTeacher(gamma=1.0)([FragmentPair(early, late)])[0].value == 0
    assert SimulatedTeacher(gamma=0.5)([FragmentPair(early, late)])[0].value == 1


def test_mistake_rate_flips_that_fraction():
    rng = np.random.default_rng(1)
    r1, r2 = np.zeros(4000), np.ones(4000)
    labels = SimulatedTeacher(eps=0.2, rng=rng)(pairs_from_returns(r1, r2))
    flipped = np.mean([lab.value == 0 for lab in labels])
    assert 0.17 < flipped < 0.23


def test_finite_beta_follows_the_boltzmann_probability():
    rng = np.random.default_rng(2)
    # R2 - R1 = 1, beta = 1: P(second) = sigmoid(1) = 0.731
    labels = SimulatedTeacher(beta=1.0, rng=rng)(pairs_from_returns(np.zeros(4000), np.ones(4000)))
    assert np.mean([lab.value for lab in labels]) == pytest.approx(0.731, abs=0.03)


def with_margin(pairs, mean_episode_return, episode_length):
    """The pairs with their source's scale in the fragments' meta (what the fragmenters attach)."""
    meta = {"mean_episode_return": mean_episode_return, "episode_length": episode_length}
    return [FragmentPair(Fragment(env_rewards=p.first.env_rewards, meta=meta), p.second) for p in pairs]


def test_skip_and_equal_rules_read_margin_relative_thresholds():
    # margin = 10 * 1 / 10 = 1 for one-step segments: thr_skip = 0.5, thr_equal = 0.05
    teacher = SimulatedTeacher(eps_skip=0.5, eps_equal=0.05)
    pairs = with_margin(pairs_from_returns([0.1, 0.7, 0.7, 0.5], [0.2, 0.72, 0.9, 0.3]), 10.0, 10)
    labels = teacher(pairs)
    assert [lab.value for lab in labels] == [-1, 0.5, 1, -1]  # max <= thr_skip skips (B-Pref keeps max > thr)
    assert [lab.raw for lab in labels] == ["skip", "equal", labels[2].raw, "skip"]


def test_thresholds_scale_with_the_margin():
    """The same pair is equal under a large margin, ranked under a small one; skipped only when both sums are low."""
    teacher = SimulatedTeacher(eps_skip=0.5, eps_equal=0.1)
    pair = pairs_from_returns([0.70], [0.75])
    assert teacher(with_margin(pair, 10.0, 10))[0].value == 0.5  # margin 1: |0.05| < 0.1
    assert teacher(with_margin(pair, 1.0, 10))[0].value == 1  # margin 0.1: |0.05| >= 0.01
    assert teacher(with_margin(pair, 20.0, 10))[0].raw == "skip"  # margin 2: 0.75 <= thr_skip 1.0
    # the margin grows with the segment: a 5-step segment of a 10-step episode is half the mean return
    five = [FragmentPair(Fragment(env_rewards=np.full(5, 0.14)), Fragment(env_rewards=np.full(5, 0.15)))]
    equal_only = SimulatedTeacher(eps_equal=0.1)
    assert equal_only(with_margin(five, 10.0, 10))[0].value == 0.5  # sums 0.70 vs 0.75, margin 5: thr_equal 0.5
    assert equal_only(with_margin(five, 0.5, 10))[0].value == 1  # margin 0.25: thr_equal 0.025
    # a negative mean return (a distance penalty) gives the equal rule the margin's size, and no skipping
    assert teacher(with_margin(pairs_from_returns([-0.70], [-0.75]), -10.0, 10))[0].value == 0.5
    assert teacher(with_margin(pairs_from_returns([-0.70], [-0.95]), -10.0, 10))[0].value == 0


def test_equal_rule_reads_undiscounted_sums_and_gamma_only_the_comparison():
    early = Fragment(env_rewards=np.array([1.0, 0.0, 0.0]))
    late = Fragment(env_rewards=np.array([0.0, 0.0, 0.95]))
    meta = {"mean_episode_return": 3.0, "episode_length": 3}  # margin 3 for a 3-step segment
    pair = FragmentPair(Fragment(env_rewards=early.env_rewards, meta=meta), late)
    # discounted (gamma 0.5) the returns are 0.25 vs 0.95; undiscounted 1.0 vs 0.95: equal within 0.1 * 3
    assert SimulatedTeacher(gamma=0.5, eps_equal=0.1)([pair])[0].value == 0.5
    assert SimulatedTeacher(gamma=0.5, eps_equal=0.01)([pair])[0].value == 1  # not equal: the myopic choice


def test_exact_ties_without_the_equal_rule_are_dropped():
    labels = SimulatedTeacher()(pairs_from_returns([0.3, 0.3], [0.3, 0.4]))
    assert [lab.value for lab in labels] == [-1, 1] and labels[0].raw == "same return"


def test_margin_rules_need_the_margin_and_old_names_name_the_new_ones():
    with pytest.raises(ValueError, match="mean_episode_return"):
        SimulatedTeacher(eps_equal=0.1)(pairs_from_returns([0.1], [0.2]))
    with pytest.raises(ValueError, match="replaced by eps_equal"):
        SimulatedTeacher(equal_threshold=0.1)
    with pytest.raises(ValueError, match="eps_skip=-1"):
        SimulatedTeacher(eps_skip=-1)


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match="needs rng"):
        SimulatedTeacher(beta=1.0)
    with pytest.raises(ValueError, match="gamma"):
        SimulatedTeacher(gamma=0.0)
    with pytest.raises(ValueError, match="keep env_rewards"):
        SimulatedTeacher()([FragmentPair(Fragment(frames=np.zeros((1, 2, 2, 3), np.uint8)), Fragment())])


def test_cache_key_covers_the_settings_and_the_content():
    frames = np.zeros((1, 4, 4, 3), np.uint8)
    pair = FragmentPair(
        Fragment(frames=frames, env_rewards=np.array([0.1], np.float32)),
        Fragment(frames=frames + 1, env_rewards=np.array([0.9], np.float32)),
    )
    key = SimulatedTeacher().cache_key(pair)
    assert key == SimulatedTeacher().cache_key(pair)
    other_rewards = FragmentPair(pair.first, Fragment(frames=frames + 1, env_rewards=np.array([0.8], np.float32)))
    other_frames = FragmentPair(pair.first, Fragment(frames=frames + 2, env_rewards=np.array([0.9], np.float32)))
    others = [
        SimulatedTeacher(eps_equal=0.1).cache_key(with_margin([pair], 1.0, 1)[0]),
        SimulatedTeacher(eps_equal=0.1).cache_key(with_margin([pair], 2.0, 1)[0]),  # another margin
        SimulatedTeacher(eps=0.1, rng=np.random.default_rng(0)).cache_key(pair),
        SimulatedTeacher().cache_key(other_rewards),
        SimulatedTeacher().cache_key(other_frames),
        SimulatedTeacher().cache_key(FragmentPair(pair.second, pair.first)),
    ]
    assert key not in others and len(set(others)) == len(others)
