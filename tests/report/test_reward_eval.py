"""Reward-quality analysis end to end on toy envs whose ground truth the toy reward models know."""

import json

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from vlmrl.report.reward_eval import collect_rollouts, evaluate_reward
from vlmrl.rewards.base import RewardModel


class BrightnessWalk(gym.Env):
    """A 1-D random walk drawn as a grey frame: brightness encodes the position, which is the reward."""

    def __init__(self, episode_length: int = 15):
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.episode_length = episode_length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + float(action[0]), -6, 6))
        self.t += 1
        frame = np.full((16, 16, 3), int(128 + 20 * self.x), np.uint8)
        info = {"frame": frame, "env_reward": self.x, "message": f"you are at {self.x:+.3f}"}
        return np.array([self.x], np.float32), self.x, False, self.t >= self.episode_length, info


class Brightness(RewardModel):
    """Mean pixel value, optionally negated: a frame reward that ranks exactly like (or against) the walk."""

    input_key = "frame"

    def __init__(self, sign: float = 1.0):
        self.sign = sign

    def predict(self, batch):
        return (self.sign * np.asarray(batch, np.float32).mean(axis=(1, 2, 3))).astype(np.float32)


class MessageNumber(RewardModel):
    """Reads the position back out of the message text."""

    input_key = "message"

    def predict(self, batch):
        return np.array([float(m.split()[-1]) for m in batch], np.float32)


def test_perfect_reward_scores_one_and_writes_every_output(tmp_path):
    res = evaluate_reward(
        BrightnessWalk,
        Brightness(),
        tmp_path,
        np.random.default_rng(0),
        episodes=3,
        max_steps=50,
        top_k=4,
        title="toy",
        max_per_episode=None,
    )
    assert res["transitions"] == 45 and res["episodes"] == 3  # the env's time limit (15) ends episodes first
    # Brightness = 128 + 20 x is an increasing map of x except where uint8 rounding ties steps.
    assert res["spearman"] > 0.99 and res["kendall"] > 0.97
    assert res["epic"] < 0.01
    assert res["episode_spearman"] == pytest.approx(1.0)
    for name in ("reward_eval.json", "reward_eval.html", "extremes.png", "scores.npz"):
        assert (tmp_path / name).exists()
    saved = json.loads((tmp_path / "reward_eval.json").read_text())
    assert saved["spearman"] == pytest.approx(res["spearman"])
    scores = np.load(tmp_path / "scores.npz")
    # The highest-scored steps are the ones with the highest ground truth, and the JSON says so.
    assert [t["env_reward"] for t in res["top"]] == sorted(scores["ground_truth"])[::-1][:4]
    img = Image.open(tmp_path / "extremes.png")
    assert img.width > 4 * 100 and img.height > 200
    page = (tmp_path / "reward_eval.html").read_text()
    assert '<section id="extremes">' in page and "data:image/png;base64," in page and "<svg" in page
    assert "strong agreement" in page


def test_inverted_reward_is_maximally_far(tmp_path):
    res = evaluate_reward(
        BrightnessWalk, Brightness(-1.0), tmp_path, np.random.default_rng(1), episodes=2, max_steps=10
    )
    assert res["spearman"] < -0.99 and res["epic"] > 0.99
    assert "disagreement" in (tmp_path / "reward_eval.html").read_text()


def test_text_reward_and_policy(tmp_path):
    res = evaluate_reward(
        BrightnessWalk,
        MessageNumber(),
        tmp_path,
        np.random.default_rng(2),
        episodes=2,
        max_steps=8,
        policy=lambda obs, info: np.array([0.5], np.float32),
        top_k=2,
    )
    # Always stepping +0.5: positions 0.5 ... 4.0, read back exactly from the messages.
    assert res["spearman"] == pytest.approx(1.0) and res["epic"] == pytest.approx(0.0, abs=1e-6)
    assert res["top"][0]["env_reward"] == pytest.approx(4.0) and res["policy"] == "checkpoint"
    assert '<section id="messages">' in (tmp_path / "reward_eval.html").read_text()


def test_missing_input_key_names_the_fix():
    class NoFrames(BrightnessWalk):
        def step(self, action):
            obs, r, term, trunc, _ = super().step(action)
            return obs, r, term, trunc, {}

    with pytest.raises(ValueError, match="choose an env that emits it"):
        collect_rollouts(NoFrames, None, 1, 3, "frame", np.random.default_rng(0))


def test_same_seed_same_rollouts():
    a = collect_rollouts(BrightnessWalk, None, 2, 5, "frame", np.random.default_rng(7))
    b = collect_rollouts(BrightnessWalk, None, 2, 5, "frame", np.random.default_rng(7))
    np.testing.assert_array_equal(a.env_rewards, b.env_rewards)


def test_ground_truth_from_another_info_key(tmp_path):
    class WithMetric(BrightnessWalk):
        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            info["task_metric"] = -abs(self.x)  # closeness to the start: brightness no longer ranks it
            return obs, r, term, trunc, info

    res = evaluate_reward(
        WithMetric,
        Brightness(),
        tmp_path,
        np.random.default_rng(0),
        episodes=2,
        max_steps=15,
        truth_key="task_metric",
    )
    assert res["truth_key"] == "task_metric" and abs(res["spearman"]) < 0.9
    assert np.all(np.load(tmp_path / "scores.npz")["ground_truth"] <= 0)
    with pytest.raises(ValueError, match="no ground truth .nope.*one of: env_reward, message"):
        collect_rollouts(BrightnessWalk, None, 1, 2, "frame", np.random.default_rng(0), truth_key="nope")


def test_extremes_spread_over_episodes(tmp_path):
    res = evaluate_reward(
        BrightnessWalk, Brightness(), tmp_path, np.random.default_rng(0), episodes=4, max_steps=15, top_k=3
    )
    for row in ("top", "bottom"):
        episodes = [t["episode"] for t in res[row]]
        assert max(episodes.count(e) for e in set(episodes)) <= 2  # default max_per_episode=2
