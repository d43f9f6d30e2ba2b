import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback

from vlmrl.agents.base import RolloutContext, TrainContext
from vlmrl.agents.ppo import PPOAgent, RolloutRewardCallback
from vlmrl.report.video import RolloutVideos
from vlmrl.rewards.base import RewardModel
from vlmrl.runs import RunFolder, latest_checkpoint

REPO = Path(__file__).resolve().parents[2]


class ObsFrame(gym.Wrapper):
    """Pendulum whose info carries a tiny 'frame' made from the observation."""

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        info["frame"] = self.frame = np.full((4, 4, 3), int((obs[0] + 1) * 100), dtype=np.uint8)
        return obs, r, term, trunc, info

    def render(self):
        return self.frame


def make_env():
    return ObsFrame(gym.make("Pendulum-v1", max_episode_steps=10))


class MeanPixel(RewardModel):
    def __init__(self):
        self.calls = 0
        self.observed = None

    def predict(self, batch):
        self.calls += 1
        return np.asarray(batch, dtype=np.float32).mean(axis=(1, 2, 3))


class Observing(MeanPixel):
    learns_online = True

    def observe_rollout(self, inputs, env_rewards, dones, num_timesteps):
        self.observed = (len(inputs), env_rewards.shape, dones.sum(), num_timesteps)
        return False


class Stateful(MeanPixel):
    """Keeps its call count in the checkpoints and reports it as a metric."""

    def __init__(self):
        super().__init__()
        self.loaded_from = None

    def metrics(self):
        return {"predict_calls": self.calls}

    def save_state(self, directory):
        (directory / "calls.txt").write_text(str(self.calls))

    def load_state(self, directory):
        self.loaded_from = directory


class Capture(BaseCallback):
    def __init__(self):
        super().__init__()
        self.frames, self.rewards, self.returns, self.adv, self.values = [], None, None, None, None

    def _on_step(self):
        self.frames.append([i["frame"] for i in self.locals["infos"]])
        return True

    def _on_rollout_end(self):
        buf = self.model.rollout_buffer
        self.rewards, self.returns = buf.rewards.copy(), buf.returns.copy()
        self.adv, self.values, self.starts = buf.advantages.copy(), buf.values.copy(), buf.episode_starts.copy()
        self.last_values = self.locals["values"].cpu().numpy().ravel()
        self.last_dones = self.locals["dones"].copy()


def run_one_rollout(reward, async_scoring, tmp_path, env_coef=0.0):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(make_env, n_envs=2, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=24, batch_size=48, n_epochs=1, gamma=0.9, gae_lambda=0.8, seed=0)
    cb = RolloutRewardCallback(
        reward,
        RunFolder(tmp_path),
        env_reward_coef=env_coef,
        model_reward_coef=1.0,
        async_scoring=async_scoring,
        chunk_steps=5,
    )
    cap = Capture()
    model.learn(48, callback=[cb, cap])
    return cap


def gae(rewards, values, starts, last_values, last_dones, gamma, lam):
    T = len(rewards)
    adv = np.zeros_like(rewards)
    last = 0
    for t in reversed(range(T)):
        nonterminal = 1.0 - (last_dones if t == T - 1 else starts[t + 1])
        next_v = last_values if t == T - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_v * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv


@pytest.mark.parametrize("async_scoring", [False, True])
def test_buffer_rewards_are_the_model_reward_plus_timeout_bootstrap(tmp_path, async_scoring):
    cap = run_one_rollout(MeanPixel(), async_scoring, tmp_path)
    frames = np.array(cap.frames, dtype=np.float32)  # (T, E, 4, 4, 3)
    model_r = frames.mean(axis=(2, 3, 4))
    bootstrap = cap.rewards - model_r
    # episodes of 10 steps are truncated: SB3 adds gamma * V(terminal obs) exactly there, nowhere else
    truncated = np.zeros_like(bootstrap, dtype=bool)
    truncated[9::10] = True
    assert np.allclose(bootstrap[~truncated], 0, atol=1e-5)
    assert np.all(np.abs(bootstrap[truncated]) > 1e-6)
    # returns and advantages were recomputed from the rewritten rewards
    adv = gae(cap.rewards, cap.values, cap.starts, cap.last_values, cap.last_dones, 0.9, 0.8)
    np.testing.assert_allclose(cap.adv, adv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cap.returns, cap.adv + cap.values, rtol=1e-5, atol=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 48 and rows[0]["episodes"] == 4
    assert rows[0]["model_reward_mean"] == pytest.approx(float(model_r.mean()), rel=1e-5)


def test_env_reward_is_kept_with_its_coefficient(tmp_path):
    with pytest.raises(ValueError, match="model_reward_coef"):
        RolloutRewardCallback(None, RunFolder(tmp_path), env_reward_coef=1.0, model_reward_coef=1.0)
    cap = run_one_rollout(MeanPixel(), False, tmp_path, env_coef=0.5)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    env_mean, model_mean = rows[-1]["env_reward_mean"], rows[-1]["model_reward_mean"]
    assert env_mean < 0  # pendulum's own reward is a cost
    frames = np.array(cap.frames, dtype=np.float32)
    assert model_mean == pytest.approx(float(frames.mean()), rel=1e-5)


def test_observe_rollout_sees_the_whole_rollout_before_scoring(tmp_path):
    reward = Observing()
    run_one_rollout(reward, True, tmp_path)  # async is disabled for rewards that learn from rollouts
    n_inputs, shape, n_dones, steps = reward.observed
    assert n_inputs == 48 and shape == (24, 2) and n_dones == 4 and steps == 48
    assert reward.calls == 1


def train_context(tmp_path, reward, seed=0, resume=False):
    videos = RolloutVideos(make_env, reward)
    return TrainContext(make_env, reward, RunFolder(tmp_path), np.random.default_rng(seed), resume, videos)


def test_agent_writes_checkpoints_video_and_resumes(tmp_path):
    agent = PPOAgent(
        total_timesteps=96, n_envs=2, n_steps=24, batch_size=24, n_epochs=1, checkpoint_every=48, progress_bar=False
    )
    out = agent.train(train_context(tmp_path, Stateful()))
    assert out["timesteps"] == 96
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.zip"))
    assert names == ["step_48.zip", "step_96.zip"]
    assert (tmp_path / "videos" / "final.mp4").stat().st_size > 0
    assert (tmp_path / "checkpoints" / "step_48" / "calls.txt").read_text() == "2"  # reward state beside the zip
    rows, _ = RunFolder(tmp_path).read_metrics()
    assert [(r["step"], r["predict_calls"]) for r in rows] == [(48, 2), (96, 4)]  # two async chunks a rollout
    agent2 = PPOAgent(
        total_timesteps=144, n_envs=2, n_steps=24, batch_size=24, n_epochs=1, checkpoint_every=48, progress_bar=False
    )
    reward = Stateful()
    out2 = agent2.train(train_context(tmp_path, reward, resume=True))
    assert reward.loaded_from == tmp_path / "checkpoints" / "step_96"
    assert out2["resumed_from"].endswith("step_96.zip") and out2["timesteps"] == 144
    assert latest_checkpoint(tmp_path).name == "step_144.zip"
    assert not (tmp_path / "result.json").exists()  # the train job writes it, not the agent

    run, reward = RunFolder(tmp_path), MeanPixel()
    ctx = RolloutContext(run, None, make_env, reward, RolloutVideos(make_env, reward), tmp_path / "r.mp4", episodes=2)
    assert agent2.rollout(ctx).stat().st_size > 0 and reward.calls == 1  # newest checkpoint, curve in one batch


def test_killed_train_resumes_from_its_last_checkpoint(tmp_path):
    """`vlmrl train` killed mid-run continues from the last checkpoint with resume=true."""
    args = [
        sys.executable,
        "-m",
        "vlmrl.cli",
        "train",
        "humanoid_kneel",
        "labelers.model=vlmrl-tiny",
        "envs.width=32",
        "envs.height=32",
        "agents.total_timesteps=1024",
        "agents.n_envs=2",
        "agents.n_steps=64",
        "agents.batch_size=128",
        "agents.n_epochs=1",
        "agents.checkpoint_every=128",
        "agents.progress_bar=false",
        f"runs_root={tmp_path}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    ckpts = []
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(tmp_path.glob("humanoid_kneel/*/checkpoints/step_*.zip"))
        if len(ckpts) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"train ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = ckpts[0].parent.parent
    killed_at = latest_checkpoint(run_dir)
    assert 128 <= int(killed_at.stem.split("_")[1]) < 1024
    assert not (run_dir / "result.json").exists()
    done = subprocess.run(args + ["resume=true"], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from"] == str(killed_at)
    assert result["timesteps"] == 1024
    from stable_baselines3 import PPO

    assert PPO.load(latest_checkpoint(run_dir)).num_timesteps == 1024
