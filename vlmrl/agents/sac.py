"""SAC (stable-baselines3) on foundation-model rewards written into the replay buffer (VLM-RM, PEBBLE).

Zero-shot rewards (CLIP): the reward inputs of the steps collected since the last gradient phase are scored in
one batch (in chunks, in a background thread, while the envs keep stepping) and written into SB3's replay buffer
at rollout end, i.e. before SAC's gradient steps on them. Learned rewards (preference ensembles): every
``feedback_steps`` env steps the reward source sees those steps (it labels pairs and retrains on its own
schedule); when it retrained, every stored transition is relabeled with the new model in batches (PEBBLE).
The env's own reward is kept beside the buffer, so a relabel never loses it. No SB3 class is subclassed.

Differences from PEBBLE: queries are drawn from the last ``recent_rollouts`` feedback chunks of the reward source
(its :class:`~vlmrl.preferences.RolloutFragmenter`), not from the whole buffer, and there is no unsupervised
(state-entropy) pre-training phase: ``learning_starts`` random steps come first.

Memory: a learned reward keeps what it reads, the frames, uint8 and aligned with the buffer:
``H * W * 3`` bytes per transition, i.e. 1.23 GB per 100k transitions at 64x64, 0.31 GB at 32x32 and 15 GB at
224x224 (``frame_size`` stores them smaller; the preference nets resize to their ``image_size`` anyway).
Zero-shot rewards score each frame once and keep none.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from vlmrl.agents.base import TrainContext, plain_kwargs
from vlmrl.agents.sb3 import CheckpointEvery, SB3Agent, VideoEvery
from vlmrl.rewards.base import RewardModel
from vlmrl.rewards.preference import downsample_frames
from vlmrl.rollouts import ChunkedScorer, episode_seeds, evaluate_policy, reward_inputs, score_in_batches
from vlmrl.runs import EpisodeTracker, RunFolder, atomic_path, write_json

log = logging.getLogger(__name__)

REPLAY_FILE = "replay.pkl"  # SB3's replay buffer (observations, actions, training rewards, dones, timeouts)
SIDE_FILE = "replay_side.npz"  # what vlmrl keeps aligned with it: env rewards, model rewards, frames
CALLBACK_FILE = "replay_callback.json"


class ReplayRewardCallback(BaseCallback):
    """Writes ``env_coef * r_env + model_coef * r_model`` into SB3's replay buffer before each gradient phase.

    At every step the buffer position the transition goes to is recorded (SB3 stores it right after the callback's
    ``on_step``); at rollout end (SB3 calls it before ``train``) the new transitions are scored and written. With a
    reward that ``learns_online`` the frames are kept aligned with the buffer and the whole buffer is relabeled each
    time :meth:`RewardModel.observe_rollout` reports a change. One ``metrics.jsonl`` row per ``log_every`` steps.

    Args:
        reward: a :class:`~vlmrl.rewards.base.RewardModel`, or None to train on the env reward.
        run: the run folder the metrics rows go to.
        env_reward_coef: weight of the env's own reward.
        model_reward_coef: weight of the reward model's output.
        async_scoring: score zero-shot rewards in chunks during the rollout.
        chunk_steps: env steps per asynchronous chunk.
        feedback_steps: env steps handed to a learned reward's ``observe_rollout`` at once.
        frame_size: store frames of a learned reward at this square size (None: as the env emits them).
        relabel_batch: frames per reward-model call when relabeling.
        log_every: env steps between metrics rows.
    """

    def __init__(
        self,
        reward: RewardModel | None,
        run: RunFolder,
        env_reward_coef: float = 0.0,
        model_reward_coef: float = 1.0,
        async_scoring: bool = True,
        chunk_steps: int = 16,
        feedback_steps: int = 1000,
        frame_size: int | None = None,
        relabel_batch: int = 1024,
        log_every: int = 1000,
    ):
        super().__init__()
        if reward is None and model_reward_coef != 0:
            raise ValueError(
                "no reward model configured but model_reward_coef != 0; set labelers=none "
                "with agents.model_reward_coef=0 and agents.env_reward_coef=1"
            )
        self.reward, self.run = reward, run
        self.env_coef, self.model_coef = float(env_reward_coef), float(model_reward_coef)
        self.learns_online = reward is not None and reward.learns_online
        self.async_scoring = async_scoring and reward is not None and not self.learns_online
        self.chunk_steps, self.feedback_steps = max(1, int(chunk_steps)), max(1, int(feedback_steps))
        self.frame_size = None if frame_size is None else int(frame_size)
        self.relabel_batch, self.log_every = max(1, int(relabel_batch)), max(1, int(log_every))
        self.env_rewards: np.ndarray | None = None  # (buffer_size, n_envs), aligned with the replay buffer
        self.model_rewards: np.ndarray | None = None
        self.frames: np.ndarray | None = None  # (buffer_size, n_envs, S, S, 3) uint8, learned rewards only
        self.relabels, self.relabel_seconds = 0, 0.0
        self.episodes = EpisodeTracker()
        self.successes: list[float] = []
        self._feedback: list[int] = []  # buffer positions of the steps not yet shown to the reward source
        self._next_log = 0
        self._interval: list[tuple[float, float]] = []
        self._scorer: ChunkedScorer | None = None

    # ---- SB3 hooks ---------------------------------------------------------------------------------------------
    def _on_training_start(self) -> None:
        buf, n_envs = self.model.replay_buffer, self.training_env.num_envs
        if self.env_rewards is None or self.env_rewards.shape != (buf.buffer_size, n_envs):
            self.env_rewards = np.zeros((buf.buffer_size, n_envs), np.float32)
            self.model_rewards = np.zeros((buf.buffer_size, n_envs), np.float32)
        if self.reward is not None and self._scorer is None:
            self._scorer = ChunkedScorer(self.reward, self.chunk_steps * n_envs, self.async_scoring)
        self._next_log = max(self._next_log, (self.num_timesteps // self.log_every + 1) * self.log_every)

    def _on_rollout_start(self) -> None:
        if self._scorer is not None:
            self._scorer.reset()
        self._positions: list[int] = []
        self._dones: list[np.ndarray] = []

    def _on_step(self) -> bool:
        pos = self.model.replay_buffer.pos  # where SB3 stores this step's transition next
        self._positions.append(pos)
        self.env_rewards[pos] = np.asarray(self.locals["rewards"], np.float32)
        dones = np.array(self.locals["dones"], dtype=bool, copy=True)
        self._dones.append(dones)
        infos = self.locals["infos"]
        self.successes.extend(float(infos[e].get("is_success", np.nan)) for e in np.flatnonzero(dones))
        if self.reward is None:
            return True
        items = reward_inputs(infos, self.reward.input_key)
        if self.learns_online:
            self._store_frames(pos, np.stack(items))
            self._feedback.append(pos)
        else:
            self._scorer.add(items)
        return True

    def _on_rollout_end(self) -> None:
        if not self._positions:
            return
        pos = np.asarray(self._positions)
        if self.reward is not None:
            if self.learns_online:
                if len(self._feedback) >= self.feedback_steps and self._observe():
                    self.relabel()  # covers this rollout's transitions too
                else:
                    self.model_rewards[pos] = self._predict(self.frames[pos])
            else:
                flat = self._scorer.result()
                if flat.shape != (pos.size * self.env_rewards.shape[1],):
                    raise ValueError(f"reward model returned shape {flat.shape} for {pos.size} steps")
                self.model_rewards[pos] = flat.reshape(pos.size, -1)
        self._write(pos)
        env_r, model_r, dones = self.env_rewards[pos], self.model_rewards[pos], np.stack(self._dones)
        self.episodes.add(env_r, model_r, dones)
        self._interval.append((float(env_r.mean()), float(model_r.mean())))
        if self.num_timesteps >= self._next_log:
            self._log()
            self._next_log = (self.num_timesteps // self.log_every + 1) * self.log_every

    def _on_training_end(self) -> None:
        if self._interval:  # the last steps since the last row
            self._log()
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None

    # ---- rewards -----------------------------------------------------------------------------------------------
    def _store_frames(self, pos: int, frames: np.ndarray) -> None:
        if self.frame_size is not None:
            frames = downsample_frames(frames, self.frame_size)
        if self.frames is None:
            size = self.env_rewards.shape
            self.frames = np.zeros((*size, *frames.shape[1:]), np.uint8)
            log.info("replay frames: %.2f GB for %d transitions", self.frames.nbytes / 1e9, size[0] * size[1])
        self.frames[pos] = frames

    def _predict(self, frames: np.ndarray) -> np.ndarray:
        flat = frames.reshape(-1, *frames.shape[2:])
        return score_in_batches(self.reward, flat, self.relabel_batch, side_effect_free=False).reshape(frames.shape[:2])

    def _observe(self) -> bool:
        """Hand the pending feedback steps to the reward source; True when it changed."""
        pos = np.asarray(self._feedback)
        self._feedback = []
        frames = self.frames[pos]  # (T, n_envs, H, W, 3)
        inputs = frames.reshape(-1, *frames.shape[2:])
        dones = self.model.replay_buffer.dones[pos].astype(bool)
        return bool(self.reward.observe_rollout(inputs, self.env_rewards[pos], dones, self.num_timesteps))

    def filled(self) -> int:
        """Replay-buffer rows that hold transitions."""
        buf = self.model.replay_buffer
        return buf.buffer_size if buf.full else buf.pos

    def relabel(self) -> None:
        """Rescore every stored transition with the current reward model (PEBBLE) and rewrite its reward."""
        t0 = time.perf_counter()
        n = self.filled()
        if n:
            self.model_rewards[:n] = self._predict(self.frames[:n])
            self._write(np.arange(n))
        self.relabels += 1
        self.relabel_seconds += time.perf_counter() - t0
        log.info("relabeled %d transitions in %.2fs", n * self.env_rewards.shape[1], time.perf_counter() - t0)

    def _write(self, pos: np.ndarray) -> None:
        rewards = self.env_coef * self.env_rewards[pos] + self.model_coef * self.model_rewards[pos]
        self.model.replay_buffer.rewards[pos] = rewards

    def _log(self) -> None:
        env_mean, model_mean = (float(np.mean(x)) for x in zip(*self._interval, strict=True))
        self._interval = []
        extra = self.reward.metrics() if self.reward is not None else {}
        recent = [s for s in self.successes[-20:] if not np.isnan(s)]
        if recent:
            extra = {**extra, "ep_success_rate": float(np.mean(recent))}
        if self.learns_online:
            extra = {**extra, "relabels": float(self.relabels)}  # timings go to result.json (rows are compared)
        row = self.run.log_metrics(
            self.num_timesteps, env_mean, model_mean, len(self.episodes.finished), returns=self.episodes.means(),
            **extra,
        )  # fmt: skip
        for k, v in row.items():
            if k not in ("step", "time"):
                self.logger.record(f"reward/{k}", v)

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the aligned arrays and the loop's counters (the replay buffer itself is SB3's to save)."""
        arrays = {"env_rewards": self.env_rewards, "model_rewards": self.model_rewards}
        if self.frames is not None:  # only the filled rows: the empty rest of a 100k buffer would be 1.2 GB of zeros
            arrays["frames"] = self.frames[: self.filled()]
        arrays["feedback"] = np.asarray(self._feedback, np.int64)
        with atomic_path(directory / SIDE_FILE) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        finished = np.asarray(self.episodes.finished, np.float64).tolist()
        state = {"relabels": self.relabels, "relabel_seconds": self.relabel_seconds, "successes": self.successes,
                 "finished": finished, "next_log": self._next_log}  # fmt: skip
        write_json(directory / CALLBACK_FILE, state, indent=None)

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote."""
        with np.load(directory / SIDE_FILE) as z:
            self.env_rewards, self.model_rewards = z["env_rewards"].copy(), z["model_rewards"].copy()
            self.frames = None
            if "frames" in z.files:
                stored = z["frames"]
                self.frames = np.zeros((*self.env_rewards.shape, *stored.shape[2:]), np.uint8)
                self.frames[: len(stored)] = stored
            self._feedback = z["feedback"].tolist()
        state = json.loads((directory / CALLBACK_FILE).read_text())
        self.relabels, self.relabel_seconds = int(state["relabels"]), float(state["relabel_seconds"])
        self.successes = [float(s) for s in state["successes"]]
        self.episodes.finished = [tuple(r) for r in state["finished"]]
        self._next_log = int(state["next_log"])


class SACAgent(SB3Agent):
    """SB3 SAC with rewards written into its replay buffer, checkpoints with the buffer, resume, TensorBoard, videos.

    Hyperparameters are SB3's (see ``agents/sac.yaml``); the rest configure the loop around it. At the end the
    deterministic policy is evaluated for ``eval_episodes`` on the env's ground truth (``info["is_success"]``,
    ``info["gt_metric"]``), written to ``result.json``.
    """

    algorithm = SAC

    def __init__(
        self,
        total_timesteps: int = 100_000,
        n_envs: int = 1,
        buffer_size: int = 100_000,
        learning_starts: int = 1000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        learning_rate: float = 3e-4,
        train_freq: int | list | tuple = 1,
        gradient_steps: int = 1,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        policy: str = "MlpPolicy",
        policy_kwargs: dict | None = None,
        vec_env: str = "dummy",
        env_reward_coef: float = 0.0,
        model_reward_coef: float = 1.0,
        async_scoring: bool = True,
        feedback_steps: int = 1000,
        frame_size: int | None = None,
        relabel_batch: int = 1024,
        log_every: int = 1000,
        checkpoint_every: int = 10_000,
        video_every: int = 0,
        video_episodes: int = 1,
        video_fps: int = 30,
        video_deterministic: bool = True,
        eval_episodes: int = 20,
        torch_threads: int | None = 1,
        progress_bar: bool = True,
        device: str = "cpu",
        verbose: int = 0,
    ):
        self.check_vec_env(vec_env)
        if total_timesteps <= 0 or checkpoint_every <= 0:
            raise ValueError("total_timesteps and checkpoint_every must be positive")
        if buffer_size < 1 or batch_size < 1:
            raise ValueError(f"buffer_size={buffer_size} and batch_size={batch_size} must be >= 1")
        self.total_timesteps, self.n_envs = int(total_timesteps), int(n_envs)
        self.sac_kwargs = dict(
            buffer_size=int(buffer_size),
            learning_starts=int(learning_starts),
            batch_size=int(batch_size),
            tau=tau,
            gamma=gamma,
            learning_rate=learning_rate,
            train_freq=tuple(train_freq) if isinstance(train_freq, list | tuple) else int(train_freq),
            gradient_steps=int(gradient_steps),
            ent_coef=ent_coef,
            target_entropy=target_entropy,
            policy_kwargs=plain_kwargs(policy_kwargs),
        )
        self.policy, self.vec_env, self.device, self.verbose = policy, vec_env, device, verbose
        self.reward_kwargs = dict(
            env_reward_coef=env_reward_coef, model_reward_coef=model_reward_coef, async_scoring=async_scoring,
            feedback_steps=feedback_steps, frame_size=frame_size, relabel_batch=relabel_batch, log_every=log_every,
        )  # fmt: skip
        self.checkpoint_every, self.video_every = int(checkpoint_every), int(video_every)
        self.video_episodes, self.video_fps = int(video_episodes), int(video_fps)
        self.video_deterministic = bool(video_deterministic)
        self.eval_episodes = int(eval_episodes)
        self.torch_threads, self.progress_bar = torch_threads, progress_bar

    def train(self, ctx: TrainContext) -> dict[str, Any]:
        """Train (or continue, with ``ctx.resume``) in ``ctx.run``; returns the summary for ``result.json``."""
        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        run, reward = ctx.run, ctx.reward
        seed = int(ctx.rng.integers(2**31 - 1))
        venv = self.make_venv(ctx, seed)
        reward_cb = ReplayRewardCallback(reward, run, **self.reward_kwargs)
        last = self.resume_point(ctx)
        if last is not None:
            model = SAC.load(last, env=venv, device=self.device, tensorboard_log=str(run.tb))
            state = run.state_dir(last)
            if reward is not None:
                reward.load_state(state)
            model.load_replay_buffer(state / REPLAY_FILE)
            reward_cb.load(state)
        else:
            model = SAC(
                self.policy, venv, seed=seed, device=self.device, verbose=self.verbose, tensorboard_log=str(run.tb),
                **self.sac_kwargs,
            )  # fmt: skip

        def save_replay(directory: Path) -> None:  # runs before the model file is written
            with atomic_path(directory / REPLAY_FILE) as tmp:
                model.save_replay_buffer(tmp)
            reward_cb.save(directory)
            newest = run.latest_checkpoint(self.checkpoint_suffixes)  # still the resumable one until this save ends
            prune_replays(run, {directory} | ({run.state_dir(newest)} if newest is not None else set()))

        ckpt_cb = CheckpointEvery(run, self.checkpoint_every, reward, at="start", extra_state=save_replay)
        callbacks: list[BaseCallback] = [reward_cb, ckpt_cb]
        videos = ctx.videos
        if videos is not None and self.video_every > 0:
            callbacks.append(
                VideoEvery(lambda m, path: self._record(videos, m, path, seed), run.videos, self.video_every)
            )
        t0 = time.time()
        remaining = self.total_timesteps - model.num_timesteps
        try:
            if remaining > 0:
                model.learn(
                    remaining, callback=CallbackList(callbacks), reset_num_timesteps=last is None, tb_log_name="sac",
                    progress_bar=self.progress_bar,
                )  # fmt: skip
                final = ckpt_cb.save()
                prune_replays(run, {run.state_dir(final)})
        finally:
            venv.close()
        train_seconds = round(time.time() - t0, 2)
        result: dict[str, Any] = {"timesteps": int(model.num_timesteps), "train_seconds": train_seconds}
        if self.eval_episodes > 0 and ctx.env_fn is not None:
            seeds = episode_seeds(np.random.default_rng(seed + 1), self.eval_episodes)
            evaluation = evaluate_policy(lambda o, i: model.predict(o, deterministic=True)[0], ctx.env_fn, seeds)
            result.update({f"eval_{k}": v for k, v in evaluation.items()})
        if reward_cb.learns_online:
            result.update(relabels=reward_cb.relabels, relabel_seconds=round(reward_cb.relabel_seconds, 2))
        video = self._record(videos, model, run.videos / "final.mp4", seed) if videos is not None else None
        result.update(
            checkpoint=str(run.latest_checkpoint(self.checkpoint_suffixes)),
            video=None if video is None else str(video),
            resumed_from=str(last) if last else None,
        )
        return result


def prune_replays(run: RunFolder, keep: set[Path]) -> None:
    """Delete the replay buffers of every checkpoint folder not in ``keep`` (they are large; the newest resumes)."""
    for path in run.checkpoints.glob(f"step_*/{REPLAY_FILE}"):
        if path.parent not in keep:
            for name in (REPLAY_FILE, SIDE_FILE):
                (path.parent / name).unlink(missing_ok=True)
