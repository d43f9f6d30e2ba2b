"""What does vlmrl's SAC loop cost on top of plain stable-baselines3 SAC, reward-model compute aside?

The same env (the CPU-sized push task), hyperparameters, seed and env-step budget, timed three ways, alternating
(``--repeats`` rounds, the best time of each kept, so load noise on a shared machine counts least):

1. plain SB3 ``SAC.learn`` on the env reward;
2. ``SACAgent.train`` on the env reward (reward writing, metrics rows, final checkpoint with the replay buffer);
3. ``SACAgent.train`` with a learned reward that costs nothing (returns zeros, "retrains" every 1,000 steps): frames
   stored aligned with the buffer and the whole buffer relabeled after every retrain, the model's compute ~0.

    python benchmarks/sac_overhead.py [--steps 3000] [--repeats 2]

Prints a table, then key=value lines ending in ``ratio=<plain seconds / vlmrl seconds>`` for the learned-reward arm
(>= 0.91 means <= 10 % overhead).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env

import vlmrl  # noqa: F401  (MUJOCO_GL)
from vlmrl.agents.base import TrainContext
from vlmrl.agents.sac import SACAgent
from vlmrl.envs.push import make_push
from vlmrl.rewards.base import RewardModel
from vlmrl.runs import RunFolder

ENV = dict(start="behind", max_episode_steps=40, width=64, height=64, success_threshold=0.05, max_goal_distance=0.2,
           workspace=((-0.35, -0.35, 0.02), (0.35, 0.35, 0.021)))  # fmt: skip
SAC_KW = dict(
    buffer_size=30_000, learning_starts=500, batch_size=256, gamma=0.95, policy_kwargs={"net_arch": [128, 128]}
)


def make_env():
    return make_push(**ENV)


class FreeLearnedReward(RewardModel):
    """A learned reward whose model costs nothing: zeros, and a 'retrain' at every observed chunk."""

    learns_online = True

    def predict(self, batch):
        return np.zeros(len(batch), np.float32)

    def observe_rollout(self, inputs, env_rewards, dones, num_timesteps):
        return True


def plain(steps: int) -> float:
    t0 = time.perf_counter()  # env and model construction timed as in the other arms (SACAgent.train builds both)
    venv = make_vec_env(make_env, n_envs=1, seed=0)
    model = SAC("MlpPolicy", venv, seed=0, device="cpu", **SAC_KW)
    model.learn(steps)
    dt = time.perf_counter() - t0
    venv.close()
    return dt


def ours(steps: int, reward: RewardModel | None, root: Path) -> float:
    coefs = {"env_reward_coef": 1.0, "model_reward_coef": 0.0 if reward is None else 1.0}
    agent = SACAgent(total_timesteps=steps, eval_episodes=0, progress_bar=False, checkpoint_every=10 * steps,
                     feedback_steps=1000, log_every=1000, torch_threads=None, **SAC_KW, **coefs)  # fmt: skip
    run = RunFolder(tempfile.mkdtemp(dir=root))
    # the seed the agent draws from this generator is not 0, but env and network cost do not depend on it
    ctx = TrainContext(make_env, reward, run, np.random.default_rng(0))
    t0 = time.perf_counter()
    agent.train(ctx)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="vlmrl-sac-overhead-"))
    arms = {
        "plain SB3 SAC": lambda: plain(args.steps),
        "vlmrl SAC, env reward": lambda: ours(args.steps, None, root),
        "vlmrl SAC, free learned reward": lambda: ours(args.steps, FreeLearnedReward(), root),
    }
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(args.repeats):
        for name, fn in arms.items():
            times[name].append(fn())
    best = {k: min(v) for k, v in times.items()}
    base = best["plain SB3 SAC"]
    print(f"{args.steps} env steps, push task, best of {args.repeats}")
    print(f"{'arm':<34}{'seconds':>10}{'steps/s':>10}{'overhead':>10}")
    for name, t in best.items():
        print(f"{name:<34}{t:>10.2f}{args.steps / t:>10.1f}{t / base - 1:>+10.1%}")
    print(f"plain_seconds={base:.2f}")
    print(f"env_reward_overhead={best['vlmrl SAC, env reward'] / base - 1:.4f}")
    print(f"learned_reward_overhead={best['vlmrl SAC, free learned reward'] / base - 1:.4f}")
    print(f"ratio={base / best['vlmrl SAC, free learned reward']:.3f}")


if __name__ == "__main__":
    main()
