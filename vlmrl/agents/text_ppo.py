"""PPO on the text envs, for comparison with the GFlowNet: sb3-contrib's MaskablePPO, not a PPO of our own.

The padded ``Discrete(max_actions)`` action space is masked to the admissible commands. Observations become
``[e(observation), e(command_1), ..., e(command_K)]`` from the same frozen encoder as the GFlowNet, and the
policy scores each (observation, command) pair with a small head, so an action index means "the k-th
admissible command" whatever the command is (a plain linear action head over slots could not generalise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from vlmrl.agents.base import Agent, RolloutContext, TrainContext
from vlmrl.agents.ppo import RolloutRewardCallback
from vlmrl.agents.sb3 import CheckpointEvery
from vlmrl.encoders import SentenceEncoder, TextEncoder
from vlmrl.rollouts import Policy, iter_episodes, no_admissible_commands


def _require_sb3_contrib():
    try:
        import sb3_contrib  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("text PPO needs sb3-contrib (MaskablePPO): pip install -e '.[alfworld]'") from exc


def encode_commands(encoder: TextEncoder, observation: str, commands: list[str], max_actions: int) -> np.ndarray:
    """``float32 ((1 + max_actions) * dim,)``: the observation's and each command's embedding, zero-padded."""
    if len(commands) > max_actions:
        raise ValueError(f"{len(commands)} admissible commands but max_actions={max_actions}: raise max_actions")
    out = np.zeros((1 + max_actions, encoder.dim), dtype=np.float32)
    out[: 1 + len(commands)] = encoder.encode([observation, *commands]).numpy()
    return out.reshape(-1)


class EncodedCommandsObservation(gym.ObservationWrapper):
    """Text observation + admissible commands -> ``float32 ((1 + max_actions) * dim,)`` encoder features.

    Padding slots are zeros; :meth:`action_masks` marks the real ones (the method MaskablePPO calls).
    """

    def __init__(self, env: gym.Env, encoder: TextEncoder):
        super().__init__(env)
        self.encoder = encoder
        self.max_actions = int(env.action_space.n)
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=((1 + self.max_actions) * encoder.dim,), dtype=np.float32
        )

    def observation(self, observation: str) -> np.ndarray:
        """Encode the observation and the current admissible commands."""
        return encode_commands(self.encoder, observation, self.env.unwrapped.admissible_commands, self.max_actions)

    def action_masks(self) -> np.ndarray:
        """``bool (max_actions,)`` valid action indices."""
        return self.env.unwrapped.action_masks()


class CommandScoringExtractor(BaseFeaturesExtractor):
    """Features = [pair scores of the K command slots, value features of the observation].

    ``score_k = MLP([e_s, e_k, e_s * e_k])``; :class:`CommandScoringPolicy` reads the first K features as
    the action logits.
    """

    def __init__(
        self, observation_space: spaces.Box, max_actions: int, dim: int, hidden: int = 128, prior_scale: float = 0.0
    ):
        super().__init__(observation_space, features_dim=max_actions + hidden)
        self.max_actions, self.dim = int(max_actions), int(dim)
        self.pair = nn.Sequential(nn.Linear(3 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.relevance = nn.Parameter(torch.tensor(float(prior_scale)))  # as in the GFlowNet's PairScorer
        self.state = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """``(B, (1+K)*dim)`` -> ``(B, K + hidden)``."""
        x = observations.view(-1, 1 + self.max_actions, self.dim)
        s, a = x[:, :1].expand(-1, self.max_actions, -1), x[:, 1:]
        pair = s * a
        scores = self.pair(torch.cat([s, a, pair], dim=-1)).squeeze(-1) + self.relevance * pair.sum(-1)
        return torch.cat([scores, self.state(x[:, 0])], dim=-1)


class FirstK(nn.Module):
    """Returns the first ``k`` features: the pair scores become the action logits directly."""

    def __init__(self, k: int):
        super().__init__()
        self.k = int(k)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` -> ``(B, k)``."""
        return latent[..., : self.k]


def _policy_class():
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

    class CommandScoringPolicy(MaskableActorCriticPolicy):
        """MaskablePPO's actor-critic with the per-command scores as logits (no slot-mixing linear layer)."""

        def _build(self, lr_schedule) -> None:
            super()._build(lr_schedule)
            self.action_net = FirstK(self.action_space.n)
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    return CommandScoringPolicy


class _SuccessLog(BaseCallback):
    """Counts won episodes: the win rate of each rollout and the distinct winning command sequences so far."""

    def __init__(self):
        super().__init__()
        self.wins: list[bool] = []
        self.successes: set[tuple[str, tuple[str, ...]]] = set()
        self._trail: dict[int, list[str]] = {}

    def _on_step(self) -> bool:
        for i, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"], strict=True)):
            trail = self._trail.setdefault(i, [])
            if "last_command" in info:
                trail.append(info["last_command"])
            if done:
                won = bool(info.get("won", False))
                self.wins.append(won)
                if won:
                    self.successes.add((str(info.get("task_id") or info.get("goal", "")), tuple(trail)))
                self._trail[i] = []
        return True

    def rollout_metrics(self) -> dict[str, float]:
        """``success_rate`` of the episodes that ended since the last call, ``distinct_successes`` so far."""
        row = {
            "success_rate": float(np.mean(self.wins)) if self.wins else 0.0,
            "distinct_successes": len(self.successes),
        }
        self.wins = []
        return row


class _RecordCommand(gym.Wrapper):
    """Adds ``info["last_command"]`` (the command just played) for diversity counts."""

    def step(self, action):
        commands = self.env.unwrapped.admissible_commands
        command = commands[int(action)] if 0 <= int(action) < len(commands) else "<masked>"
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["last_command"] = command
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Forward the mask of the wrapped env."""
        return self.env.unwrapped.action_masks()


class TextPPOAgent(Agent):
    """MaskablePPO over admissible commands with frozen-encoder features (the GFlowNet's PPO baseline).

    Args:
        encoder: frozen :class:`~vlmrl.encoders.TextEncoder` (default all-MiniLM-L6-v2).
        total_timesteps: env steps to train for.
        n_envs: parallel envs (DummyVecEnv).
        n_steps, batch_size, n_epochs, learning_rate, gamma, gae_lambda, ent_coef, clip_range: PPO settings.
        env_reward_coef: weight of the env reward when a reward model is given.
        model_reward_coef: weight of the reward model (``info[reward.input_key]`` of every step, scored once
            per rollout by the PPO agent's callback).
        hidden: width of the pair scorer and value features.
        prior_scale: initial weight of the encoder's (observation, command) similarity in the logits.
        eval_episodes: episodes sampled from the trained policy for the final report.
        video: write ``videos/final.mp4`` of one episode of the trained policy (through ``ctx.videos``).
        checkpoint_every: env steps between checkpoints (``checkpoints/step_<N>.zip``).
        device: torch device.
        torch_threads: CPU threads for torch (1 is fastest for this small head); ``None`` leaves it alone.
    """

    def __init__(
        self,
        encoder: TextEncoder | None = None,
        total_timesteps: int = 20_000,
        n_envs: int = 4,
        n_steps: int = 128,
        batch_size: int = 128,
        n_epochs: int = 4,
        learning_rate: float = 3e-4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        ent_coef: float = 0.01,
        clip_range: float = 0.2,
        env_reward_coef: float = 1.0,
        model_reward_coef: float = 1.0,
        hidden: int = 128,
        prior_scale: float = 0.0,
        eval_episodes: int = 20,
        video: bool = True,
        checkpoint_every: int = 10_000,
        device: str = "cpu",
        torch_threads: int | None = 1,
    ):
        _require_sb3_contrib()
        self.encoder = encoder if encoder is not None else SentenceEncoder()
        self.total_timesteps = int(total_timesteps)
        self.n_envs = int(n_envs)
        self.ppo_kwargs = dict(
            n_steps=int(n_steps),
            batch_size=int(batch_size),
            n_epochs=int(n_epochs),
            learning_rate=float(learning_rate),
            gamma=float(gamma),
            gae_lambda=float(gae_lambda),
            ent_coef=float(ent_coef),
            clip_range=float(clip_range),
        )
        self.env_reward_coef, self.model_reward_coef = float(env_reward_coef), float(model_reward_coef)
        self.hidden = int(hidden)
        self.prior_scale = float(prior_scale)
        self.eval_episodes = int(eval_episodes)
        self.video = bool(video)
        self.checkpoint_every = int(checkpoint_every)
        self.device = device
        self.torch_threads = torch_threads
        self.model = None

    def wrap(self, env: gym.Env) -> gym.Env:
        """The env as the policy sees it: commands recorded, text encoded, episode stats kept."""
        from stable_baselines3.common.monitor import Monitor

        return EncodedCommandsObservation(_RecordCommand(Monitor(env)), self.encoder)

    def train(self, ctx: TrainContext) -> dict[str, Any]:
        """Train MaskablePPO on ``ctx.env_fn()`` envs; writes checkpoints and metrics rows to ``ctx.run``.

        ``ctx.reward`` (a :class:`~vlmrl.rewards.base.RewardModel`, e.g. an LLM judge reading
        ``info["message"]``) rewrites the rollout's rewards once per rollout with the PPO agent's callback;
        ``None`` trains on the env reward. Returns the summary with the final evaluation.
        """
        from sb3_contrib import MaskablePPO

        if ctx.env_fn is None:
            raise ValueError("text PPO needs an env: pick one with envs=numberline (or blackjack, alfworld)")
        run, reward, rng, env_fn = ctx.run, ctx.reward, ctx.rng, ctx.env_fn
        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        vec = DummyVecEnv([lambda: self.wrap(env_fn()) for _ in range(self.n_envs)])
        vec.seed(int(rng.integers(2**31)))
        max_actions = int(vec.action_space.n)
        latest = run.latest_checkpoint(self.checkpoint_suffixes) if ctx.resume else None
        if latest is not None:
            self.model = MaskablePPO.load(latest, env=vec, device=self.device)
            if reward is not None and run.state_dir(latest).is_dir():
                reward.load_state(run.state_dir(latest))
        else:
            self.model = MaskablePPO(
                _policy_class(),
                vec,
                seed=int(rng.integers(2**31)),
                device=self.device,
                verbose=0,
                policy_kwargs=dict(
                    features_extractor_class=CommandScoringExtractor,
                    features_extractor_kwargs=dict(
                        max_actions=max_actions, dim=self.encoder.dim, hidden=self.hidden, prior_scale=self.prior_scale
                    ),
                    net_arch=dict(pi=[], vf=[]),
                    share_features_extractor=True,
                ),
                **self.ppo_kwargs,
            )
        successes = _SuccessLog()
        env_coef, model_coef = (self.env_reward_coef, self.model_reward_coef) if reward is not None else (1.0, 0.0)
        reward_cb = RolloutRewardCallback(
            reward, run, env_coef, model_coef, async_scoring=False, extra_metrics=successes.rollout_metrics
        )
        ckpt_cb = CheckpointEvery(run, self.checkpoint_every, reward)
        remaining = max(0, self.total_timesteps - int(self.model.num_timesteps))
        try:
            if remaining > 0:
                self.model.learn(
                    remaining,
                    callback=CallbackList([reward_cb, successes, ckpt_cb]),
                    reset_num_timesteps=latest is None,
                )
                ckpt_cb.save()
        finally:
            vec.close()
        env = self.wrap(env_fn())
        evaluation = self.evaluate(env, rng, self.eval_episodes)
        env.close()
        video = None
        if self.video and ctx.videos is not None:
            video = ctx.videos.record(
                self.text_policy(),
                run.videos / "final.mp4",
                episodes=1,
                seed=int(rng.integers(2**31)),
                title="MaskablePPO",
                frames="info",
                fps=2,
                stop=no_admissible_commands,
            )
        return {
            "steps": int(self.model.num_timesteps),
            "train_distinct_successes": len(successes.successes),
            "checkpoint": str(run.latest_checkpoint(self.checkpoint_suffixes)),
            "video": str(video) if video else None,
            "resumed_from": str(latest) if latest else None,
            **evaluation,
        }

    def act(self, obs: np.ndarray, env: gym.Env, deterministic: bool = False) -> int:
        """One action for an encoded observation, masked to the admissible commands."""
        assert self.model is not None, "train() or load a model first"
        action, _ = self.model.predict(obs, action_masks=env.action_masks(), deterministic=deterministic)
        return int(action)

    def rollout(self, ctx: RolloutContext) -> Path:
        """Load ``ctx.checkpoint`` and write ``ctx.episodes`` of its policy to ``ctx.out`` (``vlmrl rollout``)."""
        from sb3_contrib import MaskablePPO

        checkpoint = ctx.checkpoint or self.find_checkpoint(ctx.run)
        if checkpoint is None:
            raise FileNotFoundError(f"{ctx.run.path} has no checkpoints/step_*.zip to roll out")
        self.model = MaskablePPO.load(checkpoint, device=self.device)
        return ctx.videos.record(
            self.text_policy(deterministic=True if ctx.deterministic is None else ctx.deterministic),
            ctx.out,
            ctx.episodes,
            ctx.seed,
            title=f"MaskablePPO {Path(checkpoint).name}",
            frames="info",
            fps=2,
            stop=no_admissible_commands,
        )

    def act_text(self, observation: str, commands: list[str], deterministic: bool = False) -> int:
        """One command index for a text observation (same interface as the GFlowNet's policy)."""
        assert self.model is not None, "train() or load a model first"
        max_actions = int(self.model.action_space.n)
        mask = np.arange(max_actions) < len(commands)
        obs = encode_commands(self.encoder, observation, commands, max_actions)
        action, _ = self.model.predict(obs, action_masks=mask, deterministic=deterministic)
        return int(action)

    def text_policy(self, deterministic: bool = False) -> Policy:
        """``policy(obs, info) -> command index`` on the raw text env, reading ``info["admissible_commands"]``."""
        return lambda obs, info: self.act_text(obs, list(info["admissible_commands"]), deterministic)

    def evaluate(
        self, env: gym.Env, rng: np.random.Generator, episodes: int, deterministic: bool = False
    ) -> dict[str, float]:
        """Sample ``episodes`` from the policy in the wrapped ``env`` (:meth:`wrap`): success rate and distinct
        successful command sequences per task.
        """  # noqa: D205
        per_task: dict[str, set[tuple[str, ...]]] = {}
        wins = []
        seeds = (int(rng.integers(2**31)) for _ in range(episodes))
        for ep in iter_episodes(env, lambda obs, info: self.act(obs, env, deterministic), seeds):
            info = ep.final_info
            task = str(info.get("task_id") or info.get("goal", ""))
            per_task.setdefault(task, set())
            wins.append(bool(info.get("won")))
            if info.get("won"):
                per_task[task].add(tuple(step["last_command"] for step in ep.infos))
        counts = [len(v) for v in per_task.values()]
        return {
            "eval_success_rate": float(np.mean(wins)) if wins else float("nan"),
            "eval_distinct_successes_per_task": float(np.mean(counts)) if counts else 0.0,
        }
