import pickle

import numpy as np
import pytest
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from test_ppo import MeanPixel, make_env

from vlmrl.agents.base import TrainContext
from vlmrl.agents.sac import REPLAY_FILE, SIDE_FILE, ReplayRewardCallback, SACAgent
from vlmrl.rewards.base import RewardModel
from vlmrl.runs import RunFolder, latest_checkpoint


class Recording(MeanPixel):
    """Zero-shot stand-in: mean pixel, remembering every reward it gave, in order."""

    def __init__(self):
        super().__init__()
        self.given: list[np.ndarray] = []

    def predict(self, batch):
        out = super().predict(batch)
        self.given.append(out)
        return out


class Retraining(RewardModel):
    """A learned reward whose every observed rollout 'retrains' it: the reward is mean pixel + version."""

    learns_online = True

    def __init__(self):
        self.version = 0
        self.observed_steps = 0

    def predict(self, batch):
        return np.asarray(batch, np.float32).mean(axis=(1, 2, 3)) + 1000.0 * self.version

    def observe_rollout(self, inputs, env_rewards, dones, num_timesteps):
        assert len(inputs) == env_rewards.size
        self.observed_steps += len(inputs)
        self.version += 1
        return True

    def save_state(self, directory):
        (directory / "version.txt").write_text(f"{self.version} {self.observed_steps}")

    def load_state(self, directory):
        self.version, self.observed_steps = map(int, (directory / "version.txt").read_text().split())


def sac(venv, **kw):
    kw = {"learning_starts": 0, "batch_size": 16, "train_freq": 8, "gradient_steps": 2, "buffer_size": 1000, **kw}
    return SAC("MlpPolicy", venv, policy_kwargs={"net_arch": [16]}, seed=0, device="cpu", **kw)


def test_zero_shot_rewards_are_in_the_buffer_before_every_gradient_phase(tmp_path):
    venv = make_vec_env(make_env, n_envs=2, seed=0)
    model = sac(venv)
    reward = Recording()
    cb = ReplayRewardCallback(reward, RunFolder(tmp_path), env_reward_coef=0.5, model_reward_coef=2.0, chunk_steps=3)
    checked = []
    train = model.train

    def checking_train(gradient_steps, batch_size):
        n = model.replay_buffer.pos
        given = np.concatenate(reward.given).reshape(n, 2)  # step-major, two envs
        want = 0.5 * cb.env_rewards[:n] + 2.0 * given
        np.testing.assert_allclose(model.replay_buffer.rewards[:n], want, rtol=1e-6)
        assert not np.allclose(model.replay_buffer.rewards[:n], cb.env_rewards[:n])  # the env reward was replaced
        checked.append(n)
        return train(gradient_steps=gradient_steps, batch_size=batch_size)

    model.train = checking_train
    model.learn(64, callback=cb)
    assert checked == [8, 16, 24, 32]  # 8 steps x 2 envs per phase, 64 env steps
    assert cb.env_rewards[:32].std() > 0  # Pendulum's own reward kept beside the buffer


def test_every_stored_reward_is_relabeled_after_a_retrain(tmp_path):
    venv = make_vec_env(make_env, n_envs=1, seed=0)
    model = sac(venv)
    reward = Retraining()
    cb = ReplayRewardCallback(reward, RunFolder(tmp_path), feedback_steps=16)
    versions_seen = []
    train = model.train

    def checking_train(gradient_steps, batch_size):
        n = model.replay_buffer.pos
        versions_seen.append(np.unique(np.floor(model.replay_buffer.rewards[:n] / 1000.0)).tolist())
        return train(gradient_steps=gradient_steps, batch_size=batch_size)

    model.train = checking_train
    model.learn(96, callback=cb)
    n = model.replay_buffer.pos
    assert n == 96 and cb.relabels == 6 and reward.observed_steps == 96
    want = reward.predict(cb.frames[:n, 0])
    np.testing.assert_allclose(model.replay_buffer.rewards[:n, 0], want, rtol=1e-6)
    # one reward model at a time: right after each retrain every transition carries the new version
    assert all(len(v) == 1 for v in versions_seen), versions_seen
    assert versions_seen[-1] == [6.0]


def test_a_replay_buffer_that_wraps_keeps_frames_and_rewards_aligned(tmp_path):
    venv = make_vec_env(make_env, n_envs=1, seed=0)
    model = sac(venv, buffer_size=40)
    reward = Retraining()
    cb = ReplayRewardCallback(reward, RunFolder(tmp_path), feedback_steps=24, frame_size=2)
    model.learn(96, callback=cb)
    assert model.replay_buffer.full and cb.frames.shape == (40, 1, 2, 2, 3)
    np.testing.assert_allclose(model.replay_buffer.rewards[:, 0], reward.predict(cb.frames[:, 0]), rtol=1e-6)


def test_a_missing_reward_input_is_named():
    class Messages(MeanPixel):
        input_key = "message"

    model = sac(make_vec_env(make_env, n_envs=1, seed=0))
    with pytest.raises(KeyError, match="message"):
        model.learn(8, callback=ReplayRewardCallback(Messages(), RunFolder("/tmp/unused-sac-run")))


def agent(**kw):
    kw = {"total_timesteps": 120, "learning_starts": 10, "batch_size": 16, "buffer_size": 500, "train_freq": 4,
          "gradient_steps": 1, "checkpoint_every": 60, "log_every": 30, "feedback_steps": 20, "eval_episodes": 2,
          "policy_kwargs": {"net_arch": [16]}, "progress_bar": False, **kw}  # fmt: skip
    return SACAgent(**kw)


def test_resume_continues_with_the_replay_buffer_and_the_reward_state(tmp_path):
    run = RunFolder(tmp_path / "run")
    first = agent().train(TrainContext(make_env, Retraining(), run, np.random.default_rng(0)))
    assert first["timesteps"] == 120 and first["eval_episodes"] == 2.0 and "eval_return_mean" in first
    assert first["relabels"] == 6
    ckpt = latest_checkpoint(run.path)
    assert ckpt.name == "step_120.zip"
    state = run.state_dir(ckpt)
    assert (state / REPLAY_FILE).exists() and (state / SIDE_FILE).exists()
    # only the newest checkpoint keeps its (large) replay buffer
    assert [p.parent.name for p in run.checkpoints.glob(f"*/{REPLAY_FILE}")] == ["step_120"]
    with open(state / REPLAY_FILE, "rb") as f:
        stored = pickle.load(f)
    assert stored.pos == 120
    with np.load(state / SIDE_FILE) as z:
        first_frames = z["frames"]
    assert first_frames.shape[:2] == (120, 1) and first_frames.any()  # the filled rows only, not the 500 allocated

    reward = Retraining()
    second = agent(total_timesteps=200).train(
        TrainContext(make_env, reward, run, np.random.default_rng(0), resume=True)
    )
    assert second["timesteps"] == 200 and second["resumed_from"].endswith("step_120.zip")
    assert reward.observed_steps == 200 and reward.version == 10  # the reward state came back and went on
    with open(run.state_dir(latest_checkpoint(run.path)) / REPLAY_FILE, "rb") as f:
        stored = pickle.load(f)
    assert stored.pos == 200  # the buffer continued: 120 restored transitions + 80 new ones
    side = np.load(run.state_dir(latest_checkpoint(run.path)) / SIDE_FILE)
    np.testing.assert_allclose(stored.rewards[:200, 0], reward.predict(side["frames"][:200, 0]), rtol=1e-6)
    np.testing.assert_array_equal(side["frames"][:120], first_frames)  # the restored frames, not zeros
    steps = [r["step"] for r in run.read_metrics()[0]]
    assert steps == sorted(steps) and steps[-1] == 200


def test_true_reward_training_needs_no_reward_model(tmp_path):
    with pytest.raises(ValueError, match="model_reward_coef"):
        agent().train(TrainContext(make_env, None, RunFolder(tmp_path / "r"), np.random.default_rng(0)))
    out = agent(env_reward_coef=1.0, model_reward_coef=0.0, total_timesteps=40).train(
        TrainContext(make_env, None, RunFolder(tmp_path / "ok"), np.random.default_rng(0))
    )
    assert out["timesteps"] == 40 and "relabels" not in out
