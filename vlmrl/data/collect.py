"""Generate sub-optimal offline datasets from our envs: scripted experts with noise, random actions, mixtures.

A *behaviour mixture* is a list of components ``{policy: expert|random|checkpoint, noise: σ, fraction: f}``;
episodes are split between components by fraction (largest remainder) and recorded with the component's id in
``infos["policy_id"]`` and its noise in ``infos["noise"]``. Every episode's seed is drawn up front, and
episodes are saved in parts (``parts/part_00000.npz``), so a killed collection resumes with identical data.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from vlmrl.data.dataset import OfflineDataset
from vlmrl.data.storage import load_dataset, save_dataset
from vlmrl.rollouts import play_episode
from vlmrl.runs import check_fingerprint, job_fingerprint

POLICIES = ("expert", "random", "checkpoint")


@dataclass(frozen=True)
class Behaviour:
    """One component of a behaviour mixture.

    Attributes:
        policy: ``expert`` (the env's scripted expert), ``random`` (uniform actions) or ``checkpoint``
            (a saved stable-baselines3 policy at ``path``).
        noise: std of the Gaussian added to every action (clipped to the action space).
        fraction: share of the episodes collected with this component (normalised over the mixture).
        path: checkpoint file for ``policy: checkpoint``.
        expert_args: keyword arguments of the scripted expert for ``policy: expert`` (e.g. ``{decoy: mirror}``).
    """

    policy: str = "expert"
    noise: float = 0.0
    fraction: float = 1.0
    path: str | None = None
    expert_args: Mapping[str, Any] | None = None

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r}: use one of {', '.join(POLICIES)}")
        if not np.isfinite(self.noise) or self.noise < 0:
            raise ValueError(f"noise={self.noise}: must be a finite number >= 0")
        if not self.fraction > 0:
            raise ValueError(f"fraction={self.fraction}: must be > 0")
        if self.policy == "checkpoint" and not self.path:
            raise ValueError("policy=checkpoint needs path=/path/to/checkpoints/step_N.zip")
        if self.expert_args is not None:  # plain dict (a Hydra DictConfig would not serialise into metadata)
            object.__setattr__(self, "expert_args", {str(k): v for k, v in dict(self.expert_args).items()})
        if self.expert_args and self.policy != "expert":
            raise ValueError(f"expert_args is for policy=expert, not policy={self.policy!r}")


def parse_mixture(mixture: Sequence[Behaviour | Mapping[str, Any]]) -> list[Behaviour]:
    """Behaviours from config dicts (or already-built ones); at least one."""
    out = [m if isinstance(m, Behaviour) else Behaviour(**dict(m)) for m in mixture]
    if not out:
        raise ValueError("the behaviour mixture is empty: give at least one {policy, noise, fraction}")
    return out


def split_episodes(mixture: Sequence[Behaviour], episodes: int) -> np.ndarray:
    """``int64 (episodes,)`` component index of every episode, by fraction with largest-remainder rounding."""
    fractions = np.array([b.fraction for b in mixture], np.float64)
    share = fractions / fractions.sum() * episodes
    counts = np.floor(share).astype(np.int64)
    for k in np.argsort(-(share - counts), kind="stable")[: episodes - counts.sum()]:
        counts[k] += 1
    return np.repeat(np.arange(len(mixture)), counts)


class _Actor:
    """Turns one behaviour into ``act(obs) -> action`` for one env."""

    def __init__(self, behaviour: Behaviour, env: gym.Env, expert_fn: Callable | None, rng: np.random.Generator):
        self.behaviour, self.env, self.rng = behaviour, env, rng
        self.space = env.action_space
        self.expert = None
        self.model = None
        if behaviour.policy == "expert":
            if expert_fn is None:
                raise ValueError(
                    "policy=expert needs a scripted expert for this env: set collect.expert"
                    " (e.g. {_target_: vlmrl.envs.experts.ScriptedPushPolicy, _partial_: true})"
                )
            self.expert = expert_fn(env, noise=behaviour.noise, rng=rng, **dict(behaviour.expert_args or {}))
        elif behaviour.policy == "checkpoint":
            from stable_baselines3 import PPO

            path = Path(behaviour.path)
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint {path} does not exist: pass a checkpoints/step_N.zip file")
            self.model = PPO.load(path, device="cpu")

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.expert is not None:  # the scripted expert adds its own noise
            return np.asarray(self.expert(obs))
        if self.model is not None:
            action, _ = self.model.predict(obs, deterministic=True)
        else:
            action = self.rng.uniform(self.space.low, self.space.high).astype(self.space.dtype)
        if self.behaviour.noise > 0 and isinstance(self.space, gym.spaces.Box):
            action = action + self.behaviour.noise * self.rng.standard_normal(self.space.shape)
            action = np.clip(action, self.space.low, self.space.high).astype(self.space.dtype)
        return np.asarray(action)


def run_episode(env: gym.Env, actor: _Actor, seed: int, keep_frames: bool) -> dict[str, np.ndarray]:
    """Play one episode and lay it out as dataset arrays.

    Transition ``t`` is ``(o_t, a_t, r_t, o_{t+1})``; its reward is the env's own (``info["env_reward"]`` where
    a wrapper replaced it) and its frame, ``info["frame"]`` of step ``t``, shows ``o_{t+1}``.
    """
    episode = play_episode(env, lambda obs, info: actor.act(obs), seed=seed)
    terminals, timeouts = np.zeros(len(episode), bool), np.zeros(len(episode), bool)
    terminals[-1] = episode.terminated
    timeouts[-1] = episode.truncated and not episode.terminated
    out = {
        "observations": np.asarray([np.asarray(o, np.float32) for o in episode.observations[:-1]]),
        "actions": np.asarray(episode.actions),
        "rewards": episode.env_rewards,
        "terminals": terminals,
        "timeouts": timeouts,
    }
    if keep_frames:
        if any("frame" not in info for info in episode.infos):
            raise KeyError(
                "the env's info has no 'frame': build it with render_mode='rgb_array' or collect.frames=false"
            )
        out["frames"] = np.stack([np.asarray(info["frame"], np.uint8) for info in episode.infos])
    out["gt_metric"] = np.asarray([float(i.get("gt_metric", np.nan)) for i in episode.infos], np.float32)
    out["is_success"] = np.asarray([float(i.get("is_success", np.nan)) for i in episode.infos], np.float32)
    return out


def collect(
    env_fn: Callable[[], gym.Env],
    mixture: Sequence[Behaviour | Mapping[str, Any]],
    episodes: int,
    rng: np.random.Generator,
    expert_fn: Callable | None = None,
    keep_frames: bool = True,
    metadata: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
    part_episodes: int = 20,
    progress: Callable[[int, int], None] | None = None,
    settings: Mapping[str, Any] | None = None,
    fresh: bool = False,
) -> OfflineDataset:
    """Collect ``episodes`` episodes from ``env_fn()`` with a behaviour mixture.

    Args:
        env_fn: builds the env (with ``render_mode="rgb_array"`` when ``keep_frames``).
        mixture: behaviours and their episode fractions.
        episodes: total number of episodes.
        rng: draws every episode's seed and component order, up front.
        expert_fn: ``expert_fn(env, noise=, rng=)`` builds the env's scripted expert (``policy: expert``).
        keep_frames: record ``info["frame"]`` as ``frames`` (image reward models read them).
        metadata: merged into the dataset's metadata (``env``, ``task`` ...).
        work_dir: where finished parts are kept so an interrupted collection resumes; ``None`` keeps none.
        part_episodes: episodes per saved part.
        progress: optional ``(episodes_done, episodes_total)`` callback.
        settings: everything else that shapes the episodes (the env's config, e.g. the job's
            :func:`~vlmrl.runs.job_fingerprint`); kept parts are reused only when these and the arguments match.
        fresh: delete the kept parts first instead of resuming.

    Raises:
        DifferentJob: ``work_dir`` holds parts collected with other settings (and ``fresh`` is false).
    """
    mixture = parse_mixture(mixture)
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: collect at least one episode")
    if part_episodes < 1:
        raise ValueError(f"part_episodes={part_episodes}: save at least one episode per part")
    component = rng.permutation(split_episodes(mixture, episodes))
    seeds = rng.integers(0, 2**31 - 1, size=episodes)
    parts_dir = None if work_dir is None else Path(work_dir) / "parts"
    spec = {"episodes": episodes, "part_episodes": part_episodes, "frames": keep_frames}
    spec["mixture"] = [asdict(b) for b in mixture]
    if parts_dir is not None:
        if fresh:
            shutil.rmtree(parts_dir, ignore_errors=True)
        episode_plan = hashlib.sha256(seeds.astype(np.int64).tobytes() + component.astype(np.int64).tobytes())
        fingerprint = job_fingerprint(
            {}, extra={**dict(settings or {}), "collect": spec, "episode_plan": episode_plan.hexdigest()[:16]}
        )
        check_fingerprint(
            parts_dir,
            fingerprint,
            f"{parts_dir} holds parts of a different collection",
            "pass collect.fresh=true to start afresh (the kept parts are deleted) or change collect.out",
            has_output=parts_dir.is_dir() and any(parts_dir.glob("part_*.npz")),
        )
    meta = {"source": "collect", "mixture": spec["mixture"], **dict(metadata or {})}
    parts: list[OfflineDataset] = []
    env = env_fn()
    try:
        for p, start in enumerate(range(0, episodes, part_episodes)):
            part_file = None if parts_dir is None else parts_dir / f"part_{p:05d}.npz"
            if part_file is not None and part_file.exists():
                parts.append(load_dataset(part_file))
            else:
                parts.append(
                    _collect_part(env, mixture, component, seeds, start, part_episodes, expert_fn, keep_frames, meta)
                )
                if part_file is not None:
                    save_dataset(parts[-1], part_file)
            if progress is not None:
                progress(min(start + part_episodes, episodes), episodes)
    finally:
        env.close()
    return OfflineDataset.concatenate(parts, metadata=meta)


def _collect_part(env, mixture, component, seeds, start, count, expert_fn, keep_frames, meta) -> OfflineDataset:
    episodes = []
    for e in range(start, min(start + count, len(seeds))):
        k = int(component[e])
        actor = _Actor(mixture[k], env, expert_fn, np.random.default_rng(int(seeds[e])))
        ep = run_episode(env, actor, int(seeds[e]), keep_frames)
        n = len(ep["rewards"])
        ep["policy_id"] = np.full(n, k, np.int64)
        ep["noise"] = np.full(n, mixture[k].noise, np.float32)
        ep["episode_seed"] = np.full(n, int(seeds[e]), np.int64)
        episodes.append(ep)
    cat = {k: np.concatenate([ep[k] for ep in episodes]) for k in episodes[0]}
    info_keys = [k for k in ("gt_metric", "is_success") if np.isfinite(cat[k]).all()]  # envs without a metric
    info_keys += ["policy_id", "noise", "episode_seed"]
    return OfflineDataset(
        observations=cat["observations"],
        actions=cat["actions"],
        rewards=cat["rewards"],
        terminals=cat["terminals"],
        timeouts=cat["timeouts"],
        frames=cat.get("frames"),
        infos={k: cat[k] for k in info_keys},
        metadata=meta,
    )


def remove_parts(work_dir: str | Path) -> None:
    """Delete the resumable parts (and the work folder, if nothing else is in it) once the dataset is written."""
    shutil.rmtree(Path(work_dir) / "parts", ignore_errors=True)
    if Path(work_dir).is_dir() and not any(Path(work_dir).iterdir()):
        Path(work_dir).rmdir()
