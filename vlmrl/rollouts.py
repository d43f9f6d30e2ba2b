"""The one rollout layer: an episode generator and a batched scorer.

Collection, evaluation, videos, reward evaluation and the text agents all play episodes through
:func:`iter_episodes` and score reward-model inputs through :func:`score_in_batches` (or
:class:`ChunkedScorer`, which overlaps scoring with env stepping).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from vlmrl.rewards.base import RewardModel

Policy = Callable[[Any, dict], Any]
"""``policy(observation, info) -> action``; ``info`` is the last reset/step info (text policies read
``info["admissible_commands"]`` from it)."""


def no_admissible_commands(info: dict) -> bool:
    """Stop predicate of text envs: the game offers no command, so the episode ends there."""
    return not info["admissible_commands"]


def as_batch(items: Sequence) -> np.ndarray | list:
    """Frames become one ``(N, H, W, 3)`` array; text stays a list."""
    if len(items) and isinstance(items[0], np.ndarray):
        return np.stack(items)
    return list(items)


def reward_inputs(infos: Sequence[dict], key: str) -> list:
    """``info[key]`` of each info: what a reward model reads; a missing key is named with the fix."""
    try:
        return [info[key] for info in infos]
    except KeyError:
        raise KeyError(
            f"the reward model reads info[{key!r}] but the env does not provide it; "
            f"use an env that emits {key}s (e.g. emit_frames=true)"
        ) from None


@dataclasses.dataclass
class Episode:
    """One played episode.

    Attributes:
        observations: ``T + 1`` observations (the reset one first).
        actions: ``T`` actions.
        rewards: ``float32 (T,)`` rewards ``env.step`` returned.
        infos: ``T`` step infos.
        reset_info: the info ``env.reset`` returned.
        frames: with ``frames="render"``, ``T`` frames from ``env.render()`` after each step; with
            ``frames="info"``, ``info["frame"]`` of the reset and of each step (``T + 1``); else empty.
        terminated: the last step terminated the episode (a real end, not a time limit).
        truncated: the last step hit a time limit (or the episode was stopped).
    """

    observations: list
    actions: list
    rewards: np.ndarray
    infos: list[dict]
    reset_info: dict
    frames: list[np.ndarray]
    terminated: bool
    truncated: bool

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def final_info(self) -> dict:
        """The last step's info (the reset info for an empty episode)."""
        return self.infos[-1] if self.infos else self.reset_info

    @property
    def env_rewards(self) -> np.ndarray:
        """``float32 (T,)`` the env's own rewards (``info["env_reward"]`` where a wrapper replaced them)."""
        return np.asarray(
            [info.get("env_reward", r) for info, r in zip(self.infos, self.rewards, strict=True)], np.float32
        )

    def inputs(self, key: str, with_reset: bool = False) -> list:
        """``info[key]`` of each step (the reset info's first when ``with_reset``): what a reward model reads."""
        return reward_inputs(([self.reset_info] if with_reset else []) + self.infos, key)

    @property
    def success(self) -> float:
        """``info["is_success"]`` at the last step (NaN when the env does not say)."""
        return float(self.final_info.get("is_success", np.nan))

    @property
    def gt_metric(self) -> float:
        """``info["gt_metric"]`` at the last step (NaN when the env has none)."""
        return float(self.final_info.get("gt_metric", np.nan))


def play_episode(
    env: gym.Env,
    policy: Policy,
    seed: int | None = None,
    frames: Literal["render", "info"] | None = None,
    max_steps: int | None = None,
    stop: Callable[[dict], bool] | None = None,
) -> Episode:
    """Play one episode of ``policy`` in ``env`` from ``env.reset(seed=seed)``.

    Args:
        env: the env (not closed here).
        policy: ``policy(obs, info) -> action``.
        seed: the reset seed (None: continue the env's generator).
        frames: keep ``env.render()`` after each step (``"render"``), ``info["frame"]`` from reset on
            (``"info"``), or nothing.
        max_steps: stop (as truncated) after this many steps.
        stop: stop (as truncated) before acting when ``stop(info)`` is true (e.g. no admissible command).
    """
    obs, info = env.reset(seed=None if seed is None else int(seed))
    reset_info = info
    observations, actions, rewards, infos, kept = [obs], [], [], [], []
    if frames == "info":
        kept.append(np.asarray(info["frame"]))
    terminated = truncated = False
    while not (terminated or truncated):
        if (max_steps is not None and len(actions) >= max_steps) or (stop is not None and stop(info)):
            truncated = True
            break
        action = policy(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        infos.append(info)
        if frames == "render":
            frame = env.render()
            if frame is None:
                raise ValueError("env.render() returned None: create the env with render_mode='rgb_array'")
            kept.append(np.asarray(frame))
        elif frames == "info":
            kept.append(np.asarray(info["frame"]))
    return Episode(
        observations, actions, np.asarray(rewards, np.float32), infos, reset_info, kept, bool(terminated),
        bool(truncated),
    )  # fmt: skip


def iter_episodes(
    env: gym.Env,
    policy: Policy,
    seeds: Iterable[int | None],
    frames: Literal["render", "info"] | None = None,
    max_steps: int | None = None,
    stop: Callable[[dict], bool] | None = None,
) -> Iterator[Episode]:
    """One :func:`play_episode` per seed, lazily (the env is not closed here)."""
    for seed in seeds:
        yield play_episode(env, policy, seed, frames=frames, max_steps=max_steps, stop=stop)


def episode_seeds(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` reset seeds drawn from ``rng``."""
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]


def score_in_batches(
    reward: RewardModel, inputs: Sequence | np.ndarray, batch_size: int = 256, side_effect_free: bool = True
) -> np.ndarray:
    """Score every input in batches; ``float32 (N,)``.

    Uses ``reward.evaluate`` (no side effects) by default, ``reward.predict`` with ``side_effect_free=False``.

    Raises:
        ValueError: when the model returns the wrong number of rewards, or NaN/inf.
    """
    fn = reward.evaluate if side_effect_free else reward.predict
    out = []
    for start in range(0, len(inputs), max(1, int(batch_size))):
        chunk = inputs[start : start + batch_size]
        batch = as_batch(chunk) if not isinstance(chunk, np.ndarray) else chunk
        out.append(_checked(fn(batch), len(chunk), reward, fn.__name__))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _checked(rewards: Any, n: int, reward: RewardModel, method: str = "predict") -> np.ndarray:
    rewards = np.asarray(rewards, np.float32).reshape(-1)
    name = f"{type(reward).__name__}.{method}"
    if len(rewards) != n:
        raise ValueError(f"{name} returned {len(rewards)} rewards for a batch of {n}; it must return (N,)")
    if not np.isfinite(rewards).all():
        raise ValueError(f"{name} returned NaN or inf rewards")
    return rewards


class ChunkedScorer:
    """Scores reward-model inputs in chunks, in a background thread when ``asynchronous``.

    ``add`` queues one env step's inputs; every ``chunk_size`` items go to ``reward.predict`` while the
    caller keeps stepping envs, so rendering and model inference overlap. ``result`` returns all rewards
    in the order the inputs were added.
    """

    def __init__(self, reward: RewardModel, chunk_size: int, asynchronous: bool = True):
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
        self.inputs.extend(items)
        if not self.asynchronous:
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
            if not self.inputs:
                return np.zeros(0, np.float32)
            return _checked(self.reward.predict(as_batch(self.inputs)), len(self.inputs), self.reward)
        if self._pending:
            self._submit()
        if not self._futures:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(f.result(), dtype=np.float32).reshape(-1) for f in self._futures])

    def close(self) -> None:
        """Stop the worker thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def evaluation_episodes(policy: Policy, env_fn: Callable, seeds: Sequence[int]) -> list[Episode]:
    """One episode of ``policy(obs, info)`` per seed in a fresh ``env_fn()``."""
    env = env_fn()
    try:
        return list(iter_episodes(env, policy, seeds))
    finally:
        env.close()


def episode_env_rewards(episode: Episode) -> list[float]:
    """The env's own reward of each step in float64 (``Episode.env_rewards`` is float32), as the return sums it."""
    return [float(info.get("env_reward", r)) for info, r in zip(episode.infos, episode.rewards, strict=True)]


def summarise_evaluation(episodes: Sequence[Episode]) -> dict[str, float]:
    """The final ground-truth metric, success rate and env return over evaluation episodes.

    Returns:
        ``gt_metric_mean``/``gt_metric_std`` (the metric at the last step), ``success_rate`` (``is_success`` at
        the last step), ``return_mean`` (sum of ``info["env_reward"]``, else the env reward) and ``episodes``.
    """
    metrics = [ep.gt_metric for ep in episodes]
    return {
        "episodes": float(len(episodes)),
        "gt_metric_mean": float(np.mean(metrics)),
        "gt_metric_std": float(np.std(metrics)),
        "success_rate": float(np.mean([ep.success for ep in episodes])),
        "return_mean": float(np.mean([sum(episode_env_rewards(ep)) for ep in episodes])),
    }


def evaluate_policy(policy: Policy, env_fn: Callable, seeds: Sequence[int]) -> dict[str, float]:
    """Run one episode of ``policy(obs, info)`` per seed; :func:`summarise_evaluation` of them."""
    return summarise_evaluation(evaluation_episodes(policy, env_fn, seeds))
