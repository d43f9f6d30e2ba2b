"""PPO (stable-baselines3) trained on a foundation-model reward computed once per rollout.

The reward of all ``n_envs x n_steps`` transitions is computed in one batched pass when the rollout ends
(VLM-RM computes CLIP rewards the same way for SAC), written into SB3's rollout buffer with SB3's timeout
bootstrap term kept, and returns/advantages are recomputed. No SB3 class is subclassed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from vlmrl.report.video import as_batch, rollout_video
from vlmrl.runs import latest_checkpoint

log = logging.getLogger(__name__)


class ChunkedScorer:
    """Scores reward-model inputs in chunks, in a background thread when ``asynchronous``.

    ``add`` queues one env step's inputs; every ``chunk_size`` items go to ``reward.predict`` while the
    caller keeps stepping envs, so rendering and model inference overlap. ``result`` returns all rewards
    in the order the inputs were added.
    """

    def __init__(self, reward, chunk_size: int, asynchronous: bool = True):
        self.reward, self.chunk_size, self.asynchronous = reward, max(1, int(chunk_size)), asynchronous
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward") if asynchronous else None
        self.reset()

    def reset(self) -> None:
        """Forget queued inputs and results (start of a rollout)."""
        self.inputs: list = []
        self._pending: list = []
        self._futures: list[Future] = []

    def add(self, items: list) -> None:
        """Queue inputs; submits a chunk for scoring when enough have gathered."""
        if not self.asynchronous:
            self.inputs.extend(items)
            return
        self._pending.extend(items)
        if len(self._pending) >= self.chunk_size:
            self._submit()

    def _submit(self) -> None:
        batch, self._pending = as_batch(self._pending), []
        self._futures.append(self._pool.submit(self.reward.predict, batch))

    def result(self) -> np.ndarray:
        """``float32 (N,)`` rewards of everything added since ``reset``."""
        if not self.asynchronous:
            return np.asarray(self.reward.predict(as_batch(self.inputs)), dtype=np.float32)
        if self._pending:
            self._submit()
        return np.concatenate([np.asarray(f.result(), dtype=np.float32) for f in self._futures])

    def close(self) -> None:
        """Stop the worker thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class RolloutRewardCallback(BaseCallback):
    """Replaces the env reward in SB3's rollout buffer by ``env_coef * r_env + model_coef * r_model``.

    Reward-model inputs (``info[reward.input_key]``) are gathered at every step. With ``async_scoring`` they
    are scored in a background thread in chunks while the envs keep stepping (rendering and CLIP overlap);
    otherwise all at once at rollout end, after ``reward.observe_rollout`` (if any) has seen the rollout.

    Args:
        reward: a :class:`~vlmrl.rewards.base.RewardModel`, or None to train on the env reward.
        env_reward_coef: weight of the env's own reward.
        model_reward_coef: weight of the reward model's output.
        async_scoring: score chunks during the rollout (only for rewards without ``observe_rollout``).
        chunk_steps: env steps per asynchronous chunk.
        metrics_path: ``metrics.jsonl`` to append one line per rollout to.
    """

    def __init__(
        self,
        reward,
        env_reward_coef: float = 0.0,
        model_reward_coef: float = 1.0,
        async_scoring: bool = True,
        chunk_steps: int = 16,
        metrics_path: Path | None = None,
    ):
        super().__init__()
        if reward is None and model_reward_coef != 0:
            raise ValueError(
                "no reward model configured but model_reward_coef != 0; set labelers=none "
                "with agents.model_reward_coef=0 and agents.env_reward_coef=1"
            )
        self.reward = reward
        self.env_coef, self.model_coef = float(env_reward_coef), float(model_reward_coef)
        self.async_scoring = async_scoring and reward is not None and not hasattr(reward, "observe_rollout")
        self.chunk_steps = max(1, int(chunk_steps))
        self.metrics_path = metrics_path
        self._scorer: ChunkedScorer | None = None
        self._t0 = time.time()
        self._ep_model_ret: np.ndarray | None = None
        self._ep_env_ret: np.ndarray | None = None
        self._finished: list[tuple[float, float]] = []

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
        key = self.reward.input_key
        try:
            items = [info[key] for info in self.locals["infos"]]
        except KeyError:
            raise KeyError(
                f"the reward model reads info[{key!r}] but the env does not provide it; "
                f"use an env that emits {key}s (e.g. emit_frames=true)"
            ) from None
        self._scorer.add(items)
        return True

    def _model_rewards(self, n_steps: int, n_envs: int) -> np.ndarray:
        if self.reward is None:
            return np.zeros((n_steps, n_envs), dtype=np.float32)
        if hasattr(self.reward, "observe_rollout"):  # never asynchronous: it may retrain the model first
            self.reward.observe_rollout(
                self._scorer.inputs, np.stack(self._env_rewards), np.stack(self._dones), self.num_timesteps
            )
        flat = self._scorer.result()
        if flat.shape != (n_steps * n_envs,):
            raise ValueError(f"reward model returned shape {flat.shape}, expected ({n_steps * n_envs},)")
        return flat.reshape(n_steps, n_envs)

    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        env_r = np.stack(self._env_rewards)  # (T, E)
        dones = np.stack(self._dones)
        bootstrap = buf.rewards - env_r  # gamma * V(s_T) on truncated steps, 0 elsewhere
        model_r = self._model_rewards(*env_r.shape)
        buf.rewards[:] = self.env_coef * env_r + self.model_coef * model_r + bootstrap
        buf.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
        self._log(env_r, model_r, dones)

    def _log(self, env_r: np.ndarray, model_r: np.ndarray, dones: np.ndarray) -> None:
        if self._ep_env_ret is None:
            self._ep_env_ret = np.zeros(env_r.shape[1])
            self._ep_model_ret = np.zeros(env_r.shape[1])
        for t in range(env_r.shape[0]):
            self._ep_env_ret += env_r[t]
            self._ep_model_ret += model_r[t]
            for e in np.flatnonzero(dones[t]):
                self._finished.append((float(self._ep_env_ret[e]), float(self._ep_model_ret[e])))
                self._ep_env_ret[e] = self._ep_model_ret[e] = 0.0
        row: dict[str, Any] = {
            "step": int(self.num_timesteps),
            "time": round(time.time() - self._t0, 3),
            "env_reward_mean": float(env_r.mean()),
            "model_reward_mean": float(model_r.mean()),
            "episodes": len(self._finished),
        }
        recent = self._finished[-20:]
        if recent:
            row["ep_env_return_mean"] = float(np.mean([r[0] for r in recent]))
            row["ep_model_return_mean"] = float(np.mean([r[1] for r in recent]))
        if self.reward is not None and hasattr(self.reward, "metrics"):
            row.update({k: float(v) for k, v in self.reward.metrics().items()})
        for k, v in row.items():
            if k not in ("step", "time"):
                self.logger.record(f"reward/{k}", v)
        if self.metrics_path is not None:
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    def _on_training_end(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None


class AtRolloutEnds(BaseCallback):
    """Calls :meth:`due` at the first rollout end at or past each multiple of ``every`` env steps.

    Acting at rollout ends (not mid-rollout) keeps a saved model consistent with its rollout buffer.
    """

    def __init__(self, every: int):
        super().__init__()
        self.every = int(every)
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self._next:
            self.due()
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def due(self) -> None:
        """The periodic action."""
        raise NotImplementedError


class CheckpointEvery(AtRolloutEnds):
    """Saves ``checkpoints/step_<N>.zip`` atomically every ``every`` steps, with the reward source's state.

    ``reward.save_state`` (if any) writes into ``checkpoints/step_<N>/``.
    """

    def __init__(self, directory: Path, every: int, reward=None):
        super().__init__(every)
        self.directory, self.reward = Path(directory), reward

    def due(self) -> None:
        """Checkpoint now."""
        self.save()

    def save(self) -> Path:
        """Write the model (and reward state) for the current step."""
        self.directory.mkdir(parents=True, exist_ok=True)
        step = self.num_timesteps
        if self.reward is not None and hasattr(self.reward, "save_state"):
            state_dir = self.directory / f"step_{step}"
            state_dir.mkdir(exist_ok=True)
            self.reward.save_state(state_dir)
        final = self.directory / f"step_{step}.zip"
        tmp = self.directory / f".step_{step}.{os.getpid()}.tmp.zip"
        self.model.save(tmp)
        os.replace(tmp, final)  # a kill mid-save never leaves a truncated checkpoint behind
        return final


class VideoEvery(AtRolloutEnds):
    """Writes ``videos/step_<N>.mp4`` of the current policy every ``every`` steps."""

    def __init__(self, agent: PPOAgent, env_fn, reward, directory: Path, every: int, episodes: int, seed: int):
        super().__init__(every)
        self.agent, self.env_fn, self.reward = agent, env_fn, reward
        self.directory, self.episodes, self.seed = Path(directory), episodes, seed

    def due(self) -> None:
        """Record the current policy."""
        self.agent.write_rollout_video(
            self.model,
            self.env_fn,
            self.reward,
            self.directory / f"step_{self.num_timesteps}.mp4",
            self.episodes,
            self.seed,
        )


class PPOAgent:
    """SB3 PPO with a batched rollout-end reward, checkpoints, resume, TensorBoard and videos.

    Hyperparameters are SB3's (see ``agents/ppo.yaml``); the rest configure the loop around it.
    """

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
        progress_bar: bool = True,
        device: str = "cpu",
        verbose: int = 0,
    ):
        if vec_env not in ("dummy", "subproc"):
            raise ValueError(f"vec_env must be 'dummy' or 'subproc', got {vec_env!r}")
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
            policy_kwargs=dict(policy_kwargs) if policy_kwargs else None,
        )
        self.policy, self.vec_env, self.device, self.verbose = policy, vec_env, device, verbose
        self.env_reward_coef, self.model_reward_coef = env_reward_coef, model_reward_coef
        self.async_scoring = async_scoring
        self.checkpoint_every, self.video_every = int(checkpoint_every), int(video_every)
        self.video_episodes, self.video_fps, self.progress_bar = int(video_episodes), int(video_fps), progress_bar

    def train(
        self, env_fn, reward, run_dir: Path, rng: np.random.Generator, resume: bool = False, **_
    ) -> dict[str, Any]:
        """Train (or continue) a run in ``run_dir``; returns a summary written to ``result.json`` too."""
        run_dir = Path(run_dir)
        ckpt_dir, video_dir = run_dir / "checkpoints", run_dir / "videos"
        seed = int(rng.integers(2**31 - 1))
        vec_cls = SubprocVecEnv if self.vec_env == "subproc" else DummyVecEnv
        venv = make_vec_env(env_fn, n_envs=self.n_envs, seed=seed, vec_env_cls=vec_cls)
        last = latest_checkpoint(run_dir, (".zip",)) if resume else None
        if last is not None:
            log.info("resuming from %s", last)
            model = PPO.load(last, env=venv, device=self.device, tensorboard_log=str(run_dir / "tb"))
            state_dir = last.with_suffix("")
            if reward is not None and hasattr(reward, "load_state") and state_dir.is_dir():
                reward.load_state(state_dir)
        else:
            if resume:
                log.warning("resume=true but %s has no checkpoint yet: starting from scratch", ckpt_dir)
            model = PPO(
                self.policy,
                venv,
                seed=seed,
                device=self.device,
                verbose=self.verbose,
                tensorboard_log=str(run_dir / "tb"),
                **self.ppo_kwargs,
            )
        remaining = self.total_timesteps - model.num_timesteps
        reward_cb = RolloutRewardCallback(
            reward,
            self.env_reward_coef,
            self.model_reward_coef,
            self.async_scoring,
            metrics_path=run_dir / "metrics.jsonl",
        )
        ckpt_cb = CheckpointEvery(ckpt_dir, self.checkpoint_every, reward)
        callbacks = [reward_cb, ckpt_cb]
        if self.video_every > 0:
            callbacks.append(VideoEvery(self, env_fn, reward, video_dir, self.video_every, self.video_episodes, seed))
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
        final_ckpt = latest_checkpoint(run_dir, (".zip",))
        video = self.write_rollout_video(model, env_fn, reward, video_dir / "final.mp4", self.video_episodes, seed)
        return {
            "timesteps": int(model.num_timesteps),
            "train_seconds": round(time.time() - t0, 2),
            "checkpoint": str(final_ckpt),
            "video": str(video),
            "resumed_from": str(last) if last else None,
        }

    def write_rollout_video(
        self, model, env_fn, reward, path: Path, episodes: int, seed: int, deterministic: bool = True
    ) -> Path:
        """Roll out ``model`` and write an mp4 with the reward curve under the frames."""
        return rollout_video(
            lambda obs: model.predict(obs, deterministic=deterministic)[0],
            env_fn,
            path,
            episodes,
            seed,
            reward=reward,
            fps=self.video_fps,
        )

    def rollout(
        self, checkpoint: Path, env_fn, reward, out: Path, episodes: int, seed: int, deterministic: bool = True, **_
    ) -> Path:
        """Load a checkpoint and write its rollout video (``vlmrl rollout``)."""
        model = PPO.load(checkpoint, device=self.device)
        return self.write_rollout_video(model, env_fn, reward, out, episodes, seed, deterministic)
