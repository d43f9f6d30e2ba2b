import json

import numpy as np
import pytest

pytest.importorskip("sb3_contrib")

from vlmrl.agents.gflownet import GFlowNetAgent, HashingEncoder, random_policy  # noqa: E402
from vlmrl.agents.text_ppo import EncodedCommandsObservation, TextPPOAgent  # noqa: E402
from vlmrl.envs.text_games import NumberLineEnv  # noqa: E402
from vlmrl.rewards.base import RewardModel  # noqa: E402


def env_fn():
    return NumberLineEnv(max_number=3, max_episode_steps=4, max_actions=4)


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
    result = agent.train(env_fn=env_fn, run_dir=tmp_path, rng=np.random.default_rng(0))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(rows) == 16 and rows[-1]["step"] == 4096
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"step_2048.zip", "step_4096.zip"}
    assert (tmp_path / "videos" / "final.mp4").stat().st_size > 1000
    env, rng = env_fn(), np.random.default_rng(3)
    random_rate = np.mean(
        [
            GFlowNetAgent(encoder=HashingEncoder(), video=False).play(env, rng, policy=random_policy(rng))[0].won
            for _ in range(200)
        ]
    )
    assert result["eval_success_rate"] > random_rate + 0.2, (result, random_rate)

    judge = ReachedJudge()
    video = TextPPOAgent(encoder=HashingEncoder()).rollout(
        tmp_path / "checkpoints" / "step_4096.zip", env_fn, reward=judge, out=tmp_path / "r.mp4", episodes=2, seed=0
    )
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
    resumed = more.train(env_fn=env_fn, run_dir=tmp_path, rng=np.random.default_rng(1), resume=True)
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
    result = agent.train(env_fn=env_fn, reward=judge, run_dir=tmp_path, rng=np.random.default_rng(0))
    assert judge.batches == [256] * 8  # n_envs * n_steps messages per rollout, one call each
    assert result["eval_success_rate"] > 0.75, result  # learned from the judge alone
