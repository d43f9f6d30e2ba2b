import json

import numpy as np
import pytest

pytest.importorskip("sb3_contrib")

from vlmrl.agents.base import RolloutContext, TrainContext  # noqa: E402
from vlmrl.agents.text_ppo import EncodedCommandsObservation, TextPPOAgent  # noqa: E402
from vlmrl.encoders import HashingEncoder  # noqa: E402
from vlmrl.envs.text_games import NumberLineEnv  # noqa: E402
from vlmrl.report.video import RolloutVideos  # noqa: E402
from vlmrl.rewards.base import RewardModel  # noqa: E402
from vlmrl.rollouts import episode_seeds, iter_episodes  # noqa: E402
from vlmrl.runs import RunFolder  # noqa: E402


def env_fn():
    return NumberLineEnv(max_number=3, max_episode_steps=4, max_actions=4)


def train(agent, tmp_path, reward=None, seed=0, resume=False):
    rng = np.random.default_rng(seed)
    ctx = TrainContext(env_fn, reward, RunFolder(tmp_path), rng, resume, videos=RolloutVideos(env_fn, reward))
    return agent.train(ctx)


def test_encoded_observation_pads_commands_and_masks():
    enc = HashingEncoder(dim=32)
    env = EncodedCommandsObservation(env_fn(), enc)
    obs, _ = env.reset(seed=0)
    x = obs.reshape(5, 32)
    assert obs.shape == (5 * 32,) and env.observation_space.contains(obs)
    assert np.allclose(x[1], enc.encode(["increase"]).numpy()[0])
    assert np.all(x[3:] == 0) and env.action_masks().tolist() == [True, True, False, False]


def test_maskable_ppo_learns_numberline_and_resumes(tmp_path):
    agent = TextPPOAgent(
        encoder=HashingEncoder(),
        total_timesteps=4096,
        n_envs=4,
        n_steps=64,
        batch_size=64,
        learning_rate=1e-3,
        eval_episodes=100,
        checkpoint_every=2048,
    )
    result = train(agent, tmp_path)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(rows) == 16 and rows[-1]["step"] == 4096
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"step_2048.zip", "step_4096.zip"}
    assert (tmp_path / "videos" / "final.mp4").stat().st_size > 1000
    env, rng = env_fn(), np.random.default_rng(3)
    uniform = lambda obs, info: int(rng.integers(len(info["admissible_commands"])))  # noqa: E731
    random_rate = np.mean([ep.final_info["won"] for ep in iter_episodes(env, uniform, episode_seeds(rng, 200))])
    assert result["eval_success_rate"] > random_rate + 0.2, (result, random_rate)

    judge = ReachedJudge()
    ckpt, videos = tmp_path / "checkpoints" / "step_4096.zip", RolloutVideos(env_fn, judge)
    ctx = RolloutContext(RunFolder(tmp_path), ckpt, env_fn, judge, videos, out=tmp_path / "r.mp4", episodes=2)
    video = TextPPOAgent(encoder=HashingEncoder()).rollout(ctx)
    assert video.stat().st_size > 1000 and len(judge.batches) == 1  # the curve: one batched score

    more = TextPPOAgent(
        encoder=HashingEncoder(),
        total_timesteps=4352,
        n_envs=4,
        n_steps=64,
        batch_size=64,
        eval_episodes=2,
        video=False,
    )
    resumed = train(more, tmp_path, seed=1, resume=True)
    assert resumed["steps"] == 4352  # one more rollout on top of the 4096 loaded


class ReachedJudge(RewardModel):
    """A text judge: 1.0 for a message saying the target was reached."""

    input_key = "message"

    def __init__(self):
        self.batches = []

    def predict(self, batch):
        self.batches.append(len(batch))
        return np.array([1.0 if "reached" in m else 0.0 for m in batch], dtype=np.float32)


def test_reward_model_rewrites_each_rollout_in_one_batch(tmp_path):
    judge = ReachedJudge()
    agent = TextPPOAgent(
        encoder=HashingEncoder(),
        total_timesteps=2048,
        n_envs=4,
        n_steps=64,
        batch_size=64,
        learning_rate=1e-3,
        env_reward_coef=0.0,
        model_reward_coef=1.0,
        eval_episodes=100,
        video=False,
    )
    result = train(agent, tmp_path, reward=judge)
    assert judge.batches == [256] * 8  # n_envs * n_steps messages per rollout, one call each
    assert result["eval_success_rate"] > 0.75, result  # learned from the judge alone


class Constant(RewardModel):
    """A text judge that gives every message the same score."""

    input_key = "message"

    def predict(self, batch):
        return np.full(len(batch), 0.25, dtype=np.float32)


def test_metrics_rows_carry_the_reward_models_mean(tmp_path):
    agent = TextPPOAgent(
        encoder=HashingEncoder(),
        total_timesteps=128,
        n_envs=2,
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        eval_episodes=1,
        video=False,
    )
    result = train(agent, tmp_path, reward=Constant())
    rows, _ = RunFolder(tmp_path).read_metrics()
    assert [r["step"] for r in rows] == [64, 128] and result["steps"] == 128
    assert all(r["model_reward_mean"] == pytest.approx(0.25) for r in rows)
    for r in rows:  # episodes of at most 4 steps, each scored 0.25 per step
        assert 0.25 <= r["ep_model_return_mean"] <= 1.0 and {"success_rate", "distinct_successes"} <= set(r)
    assert not (tmp_path / "result.json").exists()  # the train job writes it, not the agent
