"""The one interface every agent implements: ``train(ctx)`` and ``rollout(ctx)``."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig, OmegaConf

from vlmrl.rewards.base import RewardModel
from vlmrl.runs import RunFolder


class VideoRecorder(abc.ABC):
    """Writes rollout videos for an agent (built by the job from ``vlmrl.report``; agents never import it)."""

    @abc.abstractmethod
    def record(
        self,
        policy: Callable[[Any, dict], Any],
        path: Path,
        episodes: int,
        seed: int | None,
        title: str = "",
        frames: Literal["render", "info"] = "render",
        fps: int | None = None,
        stop: Callable[[dict], bool] | None = None,
    ) -> Path:
        """Roll ``policy(obs, info) -> action`` out for ``episodes`` and write an mp4 with the reward curve.

        ``frames`` picks ``env.render()`` after each step or the text envs' ``info["frame"]`` from the reset
        on; ``fps`` None keeps the recorder's own; ``stop(info)`` ends an episode early (as truncated).
        """


@dataclasses.dataclass
class TrainContext:
    """Everything a job hands an agent to train in a run folder.

    Attributes:
        env_fn: builds one env (``render_mode="rgb_array"``); None for agents that need none.
        reward: the reward source, or None to train on the env's own reward.
        run: the run folder; the agent writes checkpoints, metrics and videos through it.
        rng: the job's generator; agents draw their seeds from it.
        resume: continue from the run folder's last checkpoint.
        videos: records rollout videos (None: no videos).
        cfg: the composed job config (for agents that record it in checkpoints).
    """

    env_fn: Callable[[], gym.Env] | None
    reward: RewardModel | None
    run: RunFolder
    rng: np.random.Generator
    resume: bool = False
    videos: VideoRecorder | None = None
    cfg: DictConfig | None = None


@dataclasses.dataclass
class RolloutContext:
    """What ``vlmrl rollout`` hands an agent to replay a trained policy.

    Attributes:
        run: the trained run's folder.
        checkpoint: the checkpoint to load (None: the agent's newest in ``run``).
        env_fn: builds one env.
        reward: the run's reward source (its score is drawn under the frames), or None.
        videos: writes the video.
        out: the mp4 to write.
        episodes: how many episodes.
        seed: seed of the first episode.
        deterministic: greedy actions; None means the agent's own default.
    """

    run: RunFolder
    checkpoint: Path | None
    env_fn: Callable[[], gym.Env]
    reward: RewardModel | None
    videos: VideoRecorder
    out: Path
    episodes: int = 1
    seed: int = 0
    deterministic: bool | None = None


class Agent(abc.ABC):
    """Trains a policy in a run folder and replays it; PPO, SAC, text PPO, GFlowNet and IQL implement it."""

    #: checkpoint file suffixes this agent writes (``checkpoints/step_<N><suffix>``)
    checkpoint_suffixes: tuple[str, ...] = (".zip",)
    #: False for agents that learn from stored rewards (offline IQL): the job then builds no reward source
    uses_reward_source: bool = True

    @abc.abstractmethod
    def train(self, ctx: TrainContext) -> dict[str, Any]:
        """Train (or continue, with ``ctx.resume``); returns the summary the job writes to ``result.json``."""

    @abc.abstractmethod
    def rollout(self, ctx: RolloutContext) -> Path:
        """Load a checkpoint and write ``ctx.episodes`` of its policy to ``ctx.out``; returns the video path."""

    def find_checkpoint(self, run: RunFolder) -> Path | None:
        """The checkpoint :meth:`rollout` loads by default: the newest one in ``run``."""
        return run.latest_checkpoint(self.checkpoint_suffixes)


def plain_kwargs(kwargs: Any) -> dict | None:
    """``policy_kwargs`` from config as plain dicts and lists (SB3 checks ``isinstance(net_arch, list)``)."""
    if kwargs is None:
        return None
    if isinstance(kwargs, DictConfig):
        return OmegaConf.to_container(kwargs, resolve=True)
    return dict(kwargs)
