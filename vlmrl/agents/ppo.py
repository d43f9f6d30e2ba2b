"""PPO (stable-baselines3) trained on a foundation-model reward computed once per rollout.

The reward of all ``n_envs x n_steps`` transitions is computed in one batched pass when the rollout ends
(VLM-RM computes CLIP rewards the same way for SAC), written into SB3's rollout buffer with SB3's timeout
bootstrap term kept, and returns/advantages are recomputed. No SB3 class is subclassed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import obs_as_tensor

from vlmrl.agents.base import TrainContext, plain_kwargs
from vlmrl.agents.sb3 import CheckpointEvery, SB3Agent, VideoEvery
from vlmrl.rewards.base import RewardModel
from vlmrl.rollouts import ChunkedScorer, reward_inputs
from vlmrl.runs import EpisodeTracker, RunFolder

log = logging.getLogger(__name__)


class RolloutRewardCallback(BaseCallback):
    """Replaces the env reward in SB3's rollout buffer by ``env_coef * r_env + model_coef * r_model``.

    Reward-model inputs (``info[reward.input_key]``) are gathered at every step. With ``async_scoring`` they
    are scored in a background thread in chunks while the envs keep stepping (rendering and CLIP overlap);
    a reward that ``learns_online`` is scored all at once at rollout end, after ``reward.observe_rollout``
    has seen the rollout. Each rollout appends one ``metrics.jsonl`` row to ``run``. Works for SB3's PPO and
    sb3-contrib's MaskablePPO alike (same rollout buffer).

    Args:
        reward: a :class:`~vlmrl.rewards.base.RewardModel`, or None to train on the env reward.
        run: the run folder the metrics rows go to.
        env_reward_coef: weight of the env's own reward.
        model_reward_coef: weight of the reward model's output.
        async_scoring: score chunks during the rollout (ignored for rewards that learn online).
        chunk_steps: env steps per asynchronous chunk.
        extra_metrics: called at each rollout end; its numbers join the metrics row (e.g. success rates).
    """

    def __init__(
        self,
        reward: RewardModel | None,
        run: RunFolder,
        env_reward_coef: float = 0.0,
        model_reward_coef: float = 1.0,
        async_scoring: bool = True,
        chunk_steps: int = 16,
        extra_metrics: Callable[[], dict[str, float]] | None = None,
    ):
        super().__init__()
        if reward is None and model_reward_coef != 0:
            raise ValueError(
                "no reward model configured but model_reward_coef != 0; set labelers=none "
                "with agents.model_reward_coef=0 and agents.env_reward_coef=1"
            )
        self.reward, self.run = reward, run
        self.env_coef, self.model_coef = float(env_reward_coef), float(model_reward_coef)
        self.async_scoring = async_scoring and reward is not None and not reward.learns_online
        self.chunk_steps = max(1, int(chunk_steps))
        self.extra_metrics = extra_metrics
        self.episodes = EpisodeTracker()
        self._scorer: ChunkedScorer | None = None

    def _on_training_start(self) -> None:
        if self.reward is not None and self._scorer is None:
            self._scorer = ChunkedScorer(self.reward, self.chunk_steps * self.training_env.num_envs, self.async_scoring)

    def _on_rollout_start(self) -> None:
        if self._scorer is not None:
            self._scorer.reset()
        self._env_rewards: list[np.ndarray] = []
        self._dones: list[np.ndarray] = []

    def _on_step(self) -> bool:
        # SB3 adds the timeout bootstrap to `rewards` in place after this call: keep a copy of the raw reward.
        self._env_rewards.append(np.array(self.locals["rewards"], dtype=np.float32, copy=True))
        self._dones.append(np.array(self.locals["dones"], dtype=bool, copy=True))
        if self.reward is None:
            return True
        items = reward_inputs(self.locals["infos"], self.reward.input_key)
        self._scorer.add(items)
        return True

    def _model_rewards(self, env_rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        n_steps, n_envs = env_rewards.shape
        if self.reward is None:
            return np.zeros((n_steps, n_envs), dtype=np.float32)
        self.reward.observe_rollout(self._scorer.inputs, env_rewards, dones, self.num_timesteps)
        flat = self._scorer.result()
        if flat.shape != (n_steps * n_envs,):
            raise ValueError(f"reward model returned shape {flat.shape}, expected ({n_steps * n_envs},)")
        return flat.reshape(n_steps, n_envs)

    def _last_values(self) -> torch.Tensor:
        """V(s_T) of the observation after the rollout's last step, the bootstrap of the recomputed returns.

        SB3's PPO refreshes ``locals["values"]`` right before ``on_rollout_end``; MaskablePPO does not (it would
        be V(s_{T-1})), so both are recomputed from ``model._last_obs``.
        """
        with torch.no_grad():
            return self.model.policy.predict_values(obs_as_tensor(self.model._last_obs, self.model.device))

    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        env_r = np.stack(self._env_rewards)  # (T, E)
        dones = np.stack(self._dones)
        model_r = self._model_rewards(env_r, dones)
        if self.reward is not None or self.env_coef != 1.0:  # else the buffer already holds the training reward
            bootstrap = buf.rewards - env_r  # gamma * V(s_T) on truncated steps, 0 elsewhere
            buf.rewards[:] = self.env_coef * env_r + self.model_coef * model_r + bootstrap
            buf.compute_returns_and_advantage(last_values=self._last_values(), dones=self.locals["dones"])
        self._log(env_r, model_r, dones)

    def _log(self, env_r: np.ndarray, model_r: np.ndarray, dones: np.ndarray) -> None:
        self.episodes.add(env_r, model_r, dones)
        extra = self.reward.metrics() if self.reward is not None else {}
        if self.extra_metrics is not None:
            extra = {**extra, **self.extra_metrics()}
        row = self.run.log_metrics(
            self.num_timesteps,
            env_r.mean(),
            model_r.mean(),
            len(self.episodes.finished),
            returns=self.episodes.means(),
            **extra,
        )
        for k, v in row.items():
            if k not in ("step", "time"):
                self.logger.record(f"reward/{k}", v)

    def _on_training_end(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None


class PPOAgent(SB3Agent):
    """SB3 PPO with a batched rollout-end reward, checkpoints, resume, TensorBoard and videos.

    Hyperparameters are SB3's (see ``agents/ppo.yaml``); the rest configure the loop around it.
    """

    algorithm = PPO

    def __init__(
        self,
        total_timesteps: int = 100_000,
        n_envs: int = 4,
        n_steps: int = 128,
        batch_size: int = 256,
        n_epochs: int = 10,
        gamma: float = 0.95,
        gae_lambda: float = 0.95,
        learning_rate: float = 3e-4,
        ent_coef: float = 0.0,
        clip_range: float = 0.2,
        policy: str = "MlpPolicy",
        policy_kwargs: dict | None = None,
        vec_env: str = "dummy",
        env_reward_coef: float = 0.0,
        model_reward_coef: float = 1.0,
        async_scoring: bool = True,
        checkpoint_every: int = 10_000,
        video_every: int = 0,
        video_episodes: int = 1,
        video_fps: int = 30,
        video_deterministic: bool = True,
        progress_bar: bool = True,
        device: str = "cpu",
        verbose: int = 0,
    ):
        self.check_vec_env(vec_env)
        if batch_size > n_envs * n_steps:
            raise ValueError(f"batch_size {batch_size} exceeds the rollout size n_envs*n_steps={n_envs * n_steps}")
        if total_timesteps <= 0 or checkpoint_every <= 0:
            raise ValueError("total_timesteps and checkpoint_every must be positive")
        self.total_timesteps = int(total_timesteps)
        self.n_envs = int(n_envs)
        self.ppo_kwargs = dict(
            n_steps=int(n_steps),
            batch_size=int(batch_size),
            n_epochs=int(n_epochs),
            gamma=gamma,
            gae_lambda=gae_lambda,
            learning_rate=learning_rate,
            ent_coef=ent_coef,
            clip_range=clip_range,
            policy_kwargs=plain_kwargs(policy_kwargs),
        )
        self.policy, self.vec_env, self.device, self.verbose = policy, vec_env, device, verbose
        self.env_reward_coef, self.model_reward_coef = env_reward_coef, model_reward_coef
        self.async_scoring = async_scoring
        self.checkpoint_every, self.video_every = int(checkpoint_every), int(video_every)
        self.video_episodes, self.video_fps, self.progress_bar = int(video_episodes), int(video_fps), progress_bar
        self.video_deterministic = bool(video_deterministic)

    def train(self, ctx: TrainContext) -> dict[str, Any]:
        """Train (or continue, with ``ctx.resume``) in ``ctx.run``; returns the summary for ``result.json``."""
        run, reward = ctx.run, ctx.reward
        seed = int(ctx.rng.integers(2**31 - 1))
        venv = self.make_venv(ctx, seed)
        last = self.resume_point(ctx)
        if last is not None:
            model = PPO.load(last, env=venv, device=self.device, tensorboard_log=str(run.tb))
            if reward is not None and run.state_dir(last).is_dir():
                reward.load_state(run.state_dir(last))
        else:
            model = PPO(
                self.policy,
                venv,
                seed=seed,
                device=self.device,
                verbose=self.verbose,
                tensorboard_log=str(run.tb),
                **self.ppo_kwargs,
            )
        remaining = self.total_timesteps - model.num_timesteps
        reward_cb = RolloutRewardCallback(reward, run, self.env_reward_coef, self.model_reward_coef, self.async_scoring)
        ckpt_cb = CheckpointEvery(run, self.checkpoint_every, reward)
        callbacks = [reward_cb, ckpt_cb]
        videos = ctx.videos
        if videos is not None and self.video_every > 0:
            callbacks.append(
                VideoEvery(lambda m, path: self._record(videos, m, path, seed), run.videos, self.video_every)
            )
        t0 = time.time()
        try:
            if remaining > 0:
                model.learn(
                    remaining,
                    callback=CallbackList(callbacks),
                    reset_num_timesteps=last is None,
                    tb_log_name="ppo",
                    progress_bar=self.progress_bar,
                )
                ckpt_cb.save()
        finally:
            venv.close()
        final_ckpt = run.latest_checkpoint(self.checkpoint_suffixes)
        video = self._record(videos, model, run.videos / "final.mp4", seed) if videos is not None else None
        return {
            "timesteps": int(model.num_timesteps),
            "train_seconds": round(time.time() - t0, 2),
            "checkpoint": str(final_ckpt),
            "video": None if video is None else str(video),
            "resumed_from": str(last) if last else None,
        }
