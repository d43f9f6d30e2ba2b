"""What the stable-baselines3 agents (PPO, SAC) share: periodic callbacks, vec envs, resume point, videos, rollout."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from vlmrl.agents.base import Agent, RolloutContext, TrainContext, VideoRecorder
from vlmrl.rewards.base import RewardModel
from vlmrl.runs import RunFolder, atomic_path

log = logging.getLogger(__name__)


class AtRolloutEnds(BaseCallback):
    """Calls :meth:`due` at the first rollout end at or past each multiple of ``every`` env steps.

    Acting at rollout ends (not mid-rollout) keeps a saved model consistent with its rollout buffer. Off-policy
    agents pass ``at="start"``: the next rollout's start comes after the gradient steps on the last one.
    """

    def __init__(self, every: int, at: str = "end"):
        super().__init__()
        if at not in ("end", "start"):
            raise ValueError(f"at={at!r}: use 'end' or 'start'")
        self.every, self.at = int(every), at
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.at == "start":
            self._maybe()

    def _on_rollout_end(self) -> None:
        if self.at == "end":
            self._maybe()

    def _maybe(self) -> None:
        if self.num_timesteps >= self._next:
            self.due()
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def due(self) -> None:
        """The periodic action."""
        raise NotImplementedError


class CheckpointEvery(AtRolloutEnds):
    """Saves ``checkpoints/step_<N>.zip`` atomically every ``every`` steps, with the reward source's state.

    ``reward.save_state`` writes into ``checkpoints/step_<N>/`` (:meth:`RunFolder.state_dir`), and so does
    ``extra_state(state_dir)`` (e.g. SAC's replay buffer); the model file is written last, so a checkpoint that
    exists is complete.
    """

    def __init__(
        self,
        run: RunFolder,
        every: int,
        reward: RewardModel | None = None,
        at: str = "end",
        extra_state: Callable[[Path], None] | None = None,
    ):
        super().__init__(every, at)
        self.run, self.reward, self.extra_state = run, reward, extra_state

    def due(self) -> None:
        """Checkpoint now."""
        self.save()

    def save(self) -> Path:
        """Write the model (and reward state) for the current step.

        The agents call it again after ``learn``: a rollout-end save precedes that rollout's gradient update.
        """
        path = self.run.checkpoint_path(self.num_timesteps, ".zip")
        state_dir = self.run.state_dir(path)
        if self.reward is not None or self.extra_state is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
        if self.reward is not None:
            self.reward.save_state(state_dir)
        if self.extra_state is not None:
            self.extra_state(state_dir)
        with atomic_path(path) as tmp:  # a kill mid-save never leaves a truncated checkpoint behind
            self.model.save(tmp)
        return path


class VideoEvery(AtRolloutEnds):
    """Writes ``videos/step_<N>.mp4`` of the current policy every ``every`` steps."""

    def __init__(self, record: Callable[[BaseAlgorithm, Path], Path], directory: Path, every: int):
        super().__init__(every)
        self.record, self.directory = record, Path(directory)

    def due(self) -> None:
        """Record the current policy."""
        self.record(self.model, self.directory / f"step_{self.num_timesteps}.mp4")


class SB3Agent(Agent):
    """An agent around one SB3 algorithm class: subclasses set :attr:`algorithm` and the attributes below."""

    algorithm: type[BaseAlgorithm]
    n_envs: int = 1
    vec_env: str = "dummy"
    device: str = "cpu"
    video_episodes: int = 1
    video_fps: int = 30
    video_deterministic: bool = True

    @staticmethod
    def check_vec_env(vec_env: str) -> str:
        """``vec_env`` if it names a vec env kind, else one-line error."""
        if vec_env not in ("dummy", "subproc"):
            raise ValueError(f"vec_env must be 'dummy' or 'subproc', got {vec_env!r}")
        return vec_env

    def make_venv(self, ctx: TrainContext, seed: int) -> VecEnv:
        """``n_envs`` copies of ``ctx.env_fn`` seeded from ``seed``."""
        vec_cls = SubprocVecEnv if self.vec_env == "subproc" else DummyVecEnv
        return make_vec_env(ctx.env_fn, n_envs=self.n_envs, seed=seed, vec_env_cls=vec_cls)

    def resume_point(self, ctx: TrainContext) -> Path | None:
        """The checkpoint to continue from (None: start afresh; a warning when resuming found none)."""
        last = ctx.run.latest_checkpoint(self.checkpoint_suffixes) if ctx.resume else None
        if last is not None:
            log.info("resuming from %s", last)
        elif ctx.resume:
            log.warning("resume=true but %s has no checkpoint yet: starting from scratch", ctx.run.checkpoints)
        return last

    def _record(
        self, videos: VideoRecorder, model: BaseAlgorithm, path: Path, seed: int, deterministic: bool | None = None
    ) -> Path:
        """Roll out ``model`` and write an mp4 with the reward curve under the frames (``video_deterministic``)."""
        deterministic = self.video_deterministic if deterministic is None else deterministic
        return videos.record(
            lambda obs, info: model.predict(obs, deterministic=deterministic)[0], path, self.video_episodes, seed,
            fps=self.video_fps,
        )  # fmt: skip

    def rollout(self, ctx: RolloutContext) -> Path:
        """Load ``ctx.checkpoint`` and write ``ctx.episodes`` of its policy to ``ctx.out`` (``vlmrl rollout``)."""
        checkpoint = ctx.checkpoint or self.find_checkpoint(ctx.run)
        if checkpoint is None:
            raise FileNotFoundError(f"{ctx.run.path} has no checkpoints/step_*.zip to roll out")
        model = self.algorithm.load(checkpoint, device=self.device)
        deterministic = self.video_deterministic if ctx.deterministic is None else ctx.deterministic
        return ctx.videos.record(
            lambda obs, info: model.predict(obs, deterministic=deterministic)[0], ctx.out, ctx.episodes, ctx.seed,
            fps=self.video_fps,
        )  # fmt: skip
