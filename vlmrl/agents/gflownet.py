"""GFlowNet policy over admissible text commands, trained with trajectory balance (GFlowVLM, CPU-sized).

A trajectory tau = (s_0, a_0, ..., s_T) is a played episode; its reward is ``R(tau) = exp(r(tau) / T)`` with
``r`` from the env (success), an LLM judge or a learned reward model. Trajectory balance (Malkin et al. 2022):

    L_TB(tau) = ( log Z(s_0) + sum_t log P_F(a_t | s_t) - log R(tau) - sum_t log P_B(s_t | s_{t+1}) )^2

with ``P_B = 1`` (each text history has one parent) and ``log Z`` learned, conditioned on the first
observation since every game has its own partition function. ``P_F`` scores each (observation, command)
pair with a frozen text encoder and a small trainable head; the encoder is swappable (a bigger sentence
model, a VLM) through config.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from vlmrl.agents.base import Agent, RolloutContext, TrainContext
from vlmrl.encoders import SentenceEncoder, TextEncoder
from vlmrl.rewards.base import RewardModel
from vlmrl.rollouts import no_admissible_commands, play_episode, score_in_batches
from vlmrl.runs import RunFolder, atomic_path

# ---------------------------------------------------------------------------------------------------------
# The trainable part: a pair scorer for P_F and a log Z head.
# ---------------------------------------------------------------------------------------------------------


class PairScorer(nn.Module):
    """Scores (observation, command) pairs; also holds the log Z head.

    ``logit = MLP([e_s, e_a, e_s * e_a]) + beta * <e_s, e_a>``, where ``beta`` (trainable) starts at
    ``prior_scale``: with a sentence encoder, ``<e_s, e_a>`` is its zero-shot relevance of a command to the
    observation, a hook for a pretrained prior (GFlowVLM starts from a pretrained VLM). With MiniLM on the
    shipped ALFWorld games this prior did not raise zero-shot success (2% vs 3% for uniform at 30-40 steps),
    so it defaults to 0. ``log Z = w . e_s0 + b``.
    """

    def __init__(self, dim: int, hidden: int = 128, prior_scale: float = 0.0):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(3 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.relevance = nn.Parameter(torch.tensor(float(prior_scale)))
        self.log_z = nn.Linear(dim, 1)

    def forward(self, obs_emb: torch.Tensor, act_emb: torch.Tensor) -> torch.Tensor:
        """``obs_emb (K, dim)`` (one row per command), ``act_emb (K, dim)`` -> logits ``(K,)``."""
        pair = obs_emb * act_emb
        mlp = self.score(torch.cat([obs_emb, act_emb, pair], dim=-1)).squeeze(-1)
        return mlp + self.relevance * pair.sum(-1)


def trajectory_balance_loss(
    log_z: torch.Tensor,
    sum_log_pf: torch.Tensor,
    log_reward: torch.Tensor,
    sum_log_pb: torch.Tensor | None = None,
) -> torch.Tensor:
    """Trajectory balance, averaged over a batch of trajectories.

    Args:
        log_z: ``(B,)`` log Z(s_0) of each trajectory's start.
        sum_log_pf: ``(B,)`` sum over steps of log P_F(a_t | s_t).
        log_reward: ``(B,)`` log R(tau) = r(tau) / T.
        sum_log_pb: ``(B,)`` sum of log P_B; ``None`` means 0 (tree-shaped state space).

    Returns:
        Scalar ``mean_b (log Z + sum log P_F - log R - sum log P_B)^2``.
    """
    delta = log_z + sum_log_pf - log_reward
    if sum_log_pb is not None:
        delta = delta - sum_log_pb
    return (delta**2).mean()


@dataclass
class Trajectory:
    """One played episode, as the policy saw it.

    Attributes:
        observations: text of each decision state s_0..s_{T-1}.
        commands: admissible commands at each decision state.
        actions: chosen index into ``commands[t]``.
        env_return: sum of the env's rewards.
        won: whether the env reported success.
        task: which game / task this was (for counting distinct successes).
        final_input: what the reward model reads at the end (``info[input_key]`` of the last step).
        log_reward: ``r(tau) / T``, filled in once the reward source has scored the batch.
    """

    observations: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    env_return: float = 0.0
    won: bool = False
    task: str = ""
    final_input: Any = None
    step_inputs: list[Any] = field(default_factory=list)
    step_rewards: list[float] = field(default_factory=list)
    model_reward: float = 0.0
    log_reward: float = 0.0

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """(task, command sequence): identifies a trajectory for diversity counts and replay dedup."""
        return self.task, tuple(c[a] for c, a in zip(self.commands, self.actions, strict=True))


def _task_of(info: dict[str, Any], first_obs: str) -> str:
    return str(info.get("task_id") or info.get("goal") or first_obs)


class GFlowNetAgent(Agent):
    """Trajectory-balance GFlowNet over admissible text commands, with exploration and a replay buffer.

    Args:
        encoder: frozen :class:`TextEncoder` (default :class:`SentenceEncoder`, all-MiniLM-L6-v2).
        hidden: width of the pair scorer's hidden layer.
        prior_scale: initial weight of the encoder's zero-shot (observation, command) similarity in the
            logits (see :class:`PairScorer`); 0 starts from a uniform-ish policy.
        lr: learning rate of the scorer.
        lr_log_z: learning rate of the log Z head (larger, as in the TB paper).
        reward_temperature: T in ``R(tau) = exp(r / T)``; smaller T concentrates on high reward. With a 0/1
            success reward, Z also sums the failures (R = 1 each), so successes dominate the sampler only if
            ``1/T > log(#failing trajectories)`` (about steps * log(#commands)): 0.1 suits NumberLine,
            ALFWorld's 30-step episodes need about 0.01.
        explore_temperature: softmax temperature of the sampling policy during training (>= 1 explores).
        epsilon: probability of a uniform random command at each training step.
        episodes_per_iteration: on-policy episodes per iteration.
        updates_per_iteration: trajectory-balance gradient steps per iteration (each on the new episodes plus
            a fresh replay sample).
        replay_size: high-reward trajectories kept (deduplicated by command sequence).
        replay_per_iteration: replayed trajectories added to each update.
        replay_min_reward: only trajectories with ``r(tau)`` above this enter the replay.
        total_episodes: training budget in episodes.
        env_reward_coef: weight of the env's return in ``r(tau)``.
        model_reward_coef: weight of the reward model's score of the final step in ``r(tau)``.
        eval_episodes: episodes sampled from the trained policy (no exploration) for the final report.
        checkpoint_every: iterations between checkpoints.
        video: write ``videos/final.mp4`` of one evaluation episode.
        device: torch device of the head.
        torch_threads: CPU threads for torch during training; 1 is fastest for this small head (more
            threads only add synchronisation on tiny matrices); ``None`` leaves torch's setting alone.
    """

    checkpoint_suffixes = (".pt",)

    def __init__(
        self,
        encoder: TextEncoder | None = None,
        hidden: int = 128,
        prior_scale: float = 0.0,
        lr: float = 3e-3,
        lr_log_z: float = 1e-1,
        reward_temperature: float = 0.1,
        explore_temperature: float = 1.0,
        epsilon: float = 0.1,
        episodes_per_iteration: int = 8,
        updates_per_iteration: int = 4,
        replay_size: int = 64,
        replay_per_iteration: int = 4,
        replay_min_reward: float = 0.0,
        total_episodes: int = 400,
        env_reward_coef: float = 1.0,
        model_reward_coef: float = 1.0,
        eval_episodes: int = 20,
        checkpoint_every: int = 10,
        video: bool = True,
        device: str = "cpu",
        torch_threads: int | None = 1,
    ):
        if reward_temperature <= 0 or explore_temperature <= 0:
            raise ValueError("reward_temperature and explore_temperature must be > 0")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon={epsilon} is not a probability: use 0 <= epsilon <= 1")
        self.encoder = encoder if encoder is not None else SentenceEncoder()
        self.hidden = int(hidden)
        self.prior_scale = float(prior_scale)
        self.lr, self.lr_log_z = float(lr), float(lr_log_z)
        self.reward_temperature = float(reward_temperature)
        self.explore_temperature = float(explore_temperature)
        self.epsilon = float(epsilon)
        self.episodes_per_iteration = int(episodes_per_iteration)
        self.updates_per_iteration = int(updates_per_iteration)
        self.replay_size = int(replay_size)
        self.replay_per_iteration = int(replay_per_iteration)
        self.replay_min_reward = float(replay_min_reward)
        self.total_episodes = int(total_episodes)
        self.env_reward_coef = float(env_reward_coef)
        self.model_reward_coef = float(model_reward_coef)
        self.eval_episodes = int(eval_episodes)
        self.checkpoint_every = int(checkpoint_every)
        self.video = bool(video)
        self.device = torch.device(device)
        self.torch_threads = torch_threads
        self.scorer: PairScorer | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.replay: list[Trajectory] = []
        self.episodes_done = 0
        self.steps_done = 0

    # --- policy -------------------------------------------------------------------------------------------
    def build(self, rng: np.random.Generator) -> None:
        """Create the trainable head, initialised from ``rng``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**31)))
            self.scorer = PairScorer(self.encoder.dim, self.hidden, self.prior_scale).to(self.device)
        self.optimizer = torch.optim.Adam(
            [
                {"params": [*self.scorer.score.parameters(), self.scorer.relevance], "lr": self.lr},
                {"params": self.scorer.log_z.parameters(), "lr": self.lr_log_z},
            ]
        )

    def logits(self, observation: str, commands: Sequence[str]) -> torch.Tensor:
        """Unnormalised log P_F over ``commands`` in state ``observation``: ``(K,)``."""
        assert self.scorer is not None, "call build() or train() first"
        obs = self.encoder.encode([observation]).to(self.device).expand(len(commands), -1)
        acts = self.encoder.encode(list(commands)).to(self.device)
        return self.scorer(obs, acts)

    def log_z(self, first_observations: Sequence[str]) -> torch.Tensor:
        """Learned log Z of each start state: ``(B,)``."""
        assert self.scorer is not None, "call build() or train() first"
        return self.scorer.log_z(self.encoder.encode(list(first_observations)).to(self.device)).squeeze(-1)

    def act(
        self,
        observation: str,
        commands: Sequence[str],
        rng: np.random.Generator,
        explore: bool = False,
        greedy: bool = False,
    ) -> int:
        """Pick a command index: sampled from P_F (tempered and epsilon-mixed when ``explore``) or argmax."""
        if not commands:
            raise ValueError("no admissible commands to choose from: the episode should have ended")
        with torch.no_grad():
            logits = self.logits(observation, commands).double().cpu().numpy()
        if greedy:
            return int(np.argmax(logits))
        if explore and rng.random() < self.epsilon:
            return int(rng.integers(len(commands)))
        scaled = logits / (self.explore_temperature if explore else 1.0)
        probs = np.exp(scaled - scaled.max())
        return int(rng.choice(len(commands), p=probs / probs.sum()))

    def play(
        self,
        env: gym.Env,
        rng: np.random.Generator,
        policy: Callable[[str, list[str]], int] | None = None,
        input_key: str | None = None,
    ) -> Trajectory:
        """Play one episode (reset seed drawn from ``rng``) with ``policy(observation, commands) -> index``.

        The default policy is this agent sampling with exploration. ``input_key`` keeps what a reward model
        reads (``info[input_key]``) of every step and of the last one.
        """
        choose = policy or (lambda obs, cmds: self.act(obs, cmds, rng, explore=True))
        traj = Trajectory()

        def recording_policy(obs: str, info: dict[str, Any]) -> int:
            commands = list(info["admissible_commands"])
            action = choose(obs, commands)
            traj.observations.append(obs)
            traj.commands.append(commands)
            traj.actions.append(action)
            return action

        episode = play_episode(env, recording_policy, seed=int(rng.integers(2**31)), stop=no_admissible_commands)
        traj.task = _task_of(episode.reset_info, episode.observations[0])
        traj.step_rewards = [float(r) for r in episode.rewards]
        traj.env_return = float(sum(traj.step_rewards))
        traj.won = bool(episode.final_info.get("won", False))
        if input_key is not None:
            traj.step_inputs = episode.inputs(input_key)
            traj.final_input = episode.final_info.get(input_key)
        return traj

    # --- learning ---------------------------------------------------------------------------------------
    def sum_log_pf(self, traj: Trajectory) -> torch.Tensor:
        """sum_t log P_F(a_t | s_t) under the current (untempered) policy, with gradients."""
        total = torch.zeros((), device=self.device)
        for obs, commands, action in zip(traj.observations, traj.commands, traj.actions, strict=True):
            total = total + torch.log_softmax(self.logits(obs, commands), dim=0)[action]
        return total

    def score_rewards(self, trajs: list[Trajectory], reward: RewardModel | None = None) -> None:
        """Fill ``model_reward`` and ``log_reward = r / T`` for a batch (one batched reward-model call).

        The reward source first observes the batch's steps (it may label and retrain on them), then scores
        each trajectory's last step.
        """
        if reward is not None and trajs:
            inputs = [x for t in trajs for x in t.step_inputs]
            env_rewards = np.asarray([r for t in trajs for r in t.step_rewards], np.float32)[:, None]
            dones = np.zeros_like(env_rewards, dtype=bool)
            ends = np.cumsum([len(t.step_rewards) for t in trajs]) - 1
            dones[ends[ends >= 0], 0] = True
            reward.observe_rollout(inputs, env_rewards, dones, num_timesteps=self.steps_done)
            finals = [t.final_input for t in trajs]
            scores = score_in_batches(reward, finals, batch_size=len(finals), side_effect_free=False)
            for t, s in zip(trajs, scores, strict=True):
                t.model_reward = float(s)
        for t in trajs:
            model_term = self.model_reward_coef * t.model_reward if reward is not None else 0.0
            r = self.env_reward_coef * t.env_return + model_term
            t.log_reward = r / self.reward_temperature

    def update(self, trajs: list[Trajectory]) -> dict[str, float]:
        """One trajectory-balance step on ``trajs``; returns the loss and mean log Z."""
        assert self.scorer is not None and self.optimizer is not None
        trajs = [t for t in trajs if t.actions]
        if not trajs:
            return {"loss": float("nan"), "log_z": float("nan")}
        log_z = self.log_z([t.observations[0] for t in trajs])
        sum_log_pf = torch.stack([self.sum_log_pf(t) for t in trajs])
        log_reward = torch.tensor([t.log_reward for t in trajs], dtype=torch.float32, device=self.device)
        loss = trajectory_balance_loss(log_z, sum_log_pf, log_reward)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach()), "log_z": float(log_z.detach().mean())}

    def remember(self, trajs: list[Trajectory]) -> None:
        """Keep the best ``replay_size`` distinct trajectories with reward above ``replay_min_reward``."""
        threshold = self.replay_min_reward / self.reward_temperature
        pool = {t.key: t for t in self.replay}
        for t in trajs:
            if t.actions and t.log_reward > threshold:
                pool[t.key] = t
        self.replay = sorted(pool.values(), key=lambda t: -t.log_reward)[: self.replay_size]

    def sample_replay(self, rng: np.random.Generator) -> list[Trajectory]:
        """Up to ``replay_per_iteration`` distinct replayed trajectories, uniformly."""
        n = min(self.replay_per_iteration, len(self.replay))
        return [self.replay[i] for i in rng.choice(len(self.replay), size=n, replace=False)] if n else []

    # --- the Agent interface ---------------------------------------------------------------------------
    def train(self, ctx: TrainContext) -> dict[str, Any]:
        """Train on ``ctx.env_fn()`` episodes; writes checkpoints, metrics rows and ``videos/final.mp4``.

        ``ctx.reward`` (a :class:`~vlmrl.rewards.base.RewardModel`) scores ``info[reward.input_key]`` of each
        episode's last step; None trains on the env's reward alone. ``ctx.rng`` is the source of all
        randomness (head init, episode seeds, sampling); ``ctx.resume`` continues from the newest checkpoint.

        Returns:
            Summary: episodes, steps, train/eval success rates, distinct successful trajectories, paths.
        """
        if ctx.env_fn is None:
            raise ValueError("the GFlowNet plays a text env: set envs= (e.g. envs=numberline)")
        rng, run, reward = ctx.rng, ctx.run, ctx.reward
        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        input_key = reward.input_key if reward is not None else None
        env = ctx.env_fn()
        self.build(rng)
        if ctx.resume:
            latest = self.find_checkpoint(run)
            if latest is not None:
                self.load(latest)
                if reward is not None and run.state_dir(latest).is_dir():
                    reward.load_state(run.state_dir(latest))
        successes: set[tuple[str, tuple[str, ...]]] = set()
        iteration = 0
        last_ckpt: Path | None = None
        try:
            while self.episodes_done < self.total_episodes:
                batch = [self.play(env, rng, input_key=input_key) for _ in range(self.episodes_per_iteration)]
                self.score_rewards(batch, reward)
                self.remember(batch)
                for _ in range(self.updates_per_iteration):
                    stats = self.update(batch + self.sample_replay(rng))
                self.episodes_done += len(batch)
                self.steps_done += sum(len(t.actions) for t in batch)
                successes.update(t.key for t in batch if t.won)
                iteration += 1
                model_reward_mean = float(np.mean([t.model_reward for t in batch]))
                extra = {
                    "success_rate": float(np.mean([t.won for t in batch])),
                    "log_reward_mean": float(np.mean([t.log_reward for t in batch])),
                    "replay_size": len(self.replay),
                    "distinct_successes": len(successes),
                    **stats,
                }
                if reward is not None:
                    extra.update({k: float(v) for k, v in reward.metrics().items()})
                run.log_metrics(
                    self.steps_done,
                    env_reward_mean=float(np.mean([r for t in batch for r in t.step_rewards] or [0.0])),
                    model_reward_mean=model_reward_mean,
                    episodes=self.episodes_done,
                    returns={
                        "ep_env_return_mean": float(np.mean([t.env_return for t in batch])),
                        "ep_model_return_mean": model_reward_mean,
                    },
                    **extra,
                )
                if iteration % self.checkpoint_every == 0:
                    last_ckpt = self._checkpoint(run, reward)
        finally:
            last_ckpt = self._checkpoint(run, reward)
        evaluation = self.evaluate(env, rng, self.eval_episodes)
        env.close()
        video_path = None
        if self.video and ctx.videos is not None:
            video_path = ctx.videos.record(
                self._sampling_policy(rng),
                run.videos / "final.mp4",
                episodes=1,
                seed=int(rng.integers(2**31)),
                title="GFlowNet",
                frames="info",
                fps=2,
                stop=no_admissible_commands,
            )
        return {
            "episodes": self.episodes_done,
            "steps": self.steps_done,
            "train_distinct_successes": len(successes),
            "checkpoint": str(last_ckpt),
            "video": str(video_path) if video_path else None,
            **evaluation,
        }

    def _checkpoint(self, run: RunFolder, reward: RewardModel | None) -> Path:
        """``checkpoints/step_<steps>.pt`` and, beside it, the reward source's state."""
        path = self.save(run.checkpoint_path(self.steps_done, ".pt"))
        if reward is not None:
            reward.save_state(run.state_dir(path))
        return path

    def _sampling_policy(self, rng: np.random.Generator, greedy: bool = False) -> Callable[[str, dict], int]:
        """``policy(obs, info)`` sampling P_F (no exploration) over ``info["admissible_commands"]``."""
        return lambda obs, info: self.act(obs, list(info["admissible_commands"]), rng, greedy=greedy)

    def evaluate(self, env: gym.Env, rng: np.random.Generator, episodes: int) -> dict[str, float]:
        """Sample ``episodes`` from P_F (no exploration): success rate and distinct successes per task."""
        per_task: dict[str, set[tuple[str, ...]]] = {}
        wins = []
        for _ in range(episodes):
            traj = self.play(env, rng, policy=lambda o, c: self.act(o, c, rng))
            wins.append(traj.won)
            per_task.setdefault(traj.task, set())
            if traj.won:
                per_task[traj.task].add(traj.key[1])
        counts = [len(v) for v in per_task.values()]
        return {
            "eval_success_rate": float(np.mean(wins)) if wins else float("nan"),
            "eval_distinct_successes_per_task": float(np.mean(counts)) if counts else 0.0,
        }

    def rollout(self, ctx: RolloutContext) -> Path:
        """Load ``ctx.checkpoint`` and write ``ctx.episodes`` of its policy to ``ctx.out`` (``vlmrl rollout``).

        ``ctx.deterministic`` plays the argmax command; the default samples P_F, which is what a GFlowNet is for.
        """
        checkpoint = ctx.checkpoint or self.find_checkpoint(ctx.run)
        if checkpoint is None:
            raise FileNotFoundError(f"{ctx.run.path} has no GFlowNet checkpoint (checkpoints/step_<N>.pt)")
        self.load(checkpoint)
        policy = self._sampling_policy(np.random.default_rng(ctx.seed), greedy=bool(ctx.deterministic))
        return ctx.videos.record(
            policy,
            ctx.out,
            episodes=ctx.episodes,
            seed=ctx.seed,
            title=f"GFlowNet {Path(checkpoint).name}",
            frames="info",
            fps=2,
            stop=no_admissible_commands,
        )

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write head, optimizer, replay and counters atomically to ``path``."""
        assert self.scorer is not None and self.optimizer is not None
        path = Path(path)
        state = {
            "scorer": self.scorer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": [t.__dict__ | {"final_input": None, "step_inputs": []} for t in self.replay],
            "episodes_done": self.episodes_done,
            "steps_done": self.steps_done,
            "encoder": {"name": self.encoder.name, "dim": self.encoder.dim},
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def load(self, path: str | Path) -> None:
        """Restore what :meth:`save` wrote (the head must have been built with the same encoder)."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["encoder"]["dim"] != self.encoder.dim:
            raise ValueError(
                f"checkpoint {path} was trained with a {state['encoder']['name']} encoder of dim"
                f" {state['encoder']['dim']}, not {self.encoder.dim}: use the same agents.encoder"
            )
        if self.scorer is None:
            self.build(np.random.default_rng(0))
        assert self.scorer is not None and self.optimizer is not None
        self.scorer.load_state_dict(state["scorer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay = [Trajectory(**t) for t in state["replay"]]
        self.episodes_done = int(state["episodes_done"])
        self.steps_done = int(state["steps_done"])


def random_policy(rng: np.random.Generator) -> Callable[[str, list[str]], int]:
    """Uniform choice among the admissible commands: the baseline every learner must beat."""
    return lambda obs, commands: int(rng.integers(len(commands)))


__all__ = [
    "GFlowNetAgent",
    "PairScorer",
    "Trajectory",
    "random_policy",
    "trajectory_balance_loss",
]
