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


def test_skip_and_equal_thresholds_give_minus_one():
    teacher = SimulatedTeacher(skip_threshold=0.5, equal_threshold=0.05)
    labels = teacher(pairs_from_returns([0.1, 0.7, 0.7], [0.2, 0.72, 0.9]))
    assert [lab.value for lab in labels] == [-1, -1, 1]
    assert [lab.raw for lab in labels][:2] == ["skip", "equal"]


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
        SimulatedTeacher(equal_threshold=0.1).cache_key(pair),
        SimulatedTeacher(eps=0.1, rng=np.random.default_rng(0)).cache_key(pair),
        SimulatedTeacher().cache_key(other_rewards),
        SimulatedTeacher().cache_key(other_frames),
        SimulatedTeacher().cache_key(FragmentPair(pair.second, pair.first)),
    ]
    assert key not in others and len(set(others)) == len(others)
