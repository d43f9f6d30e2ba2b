"""Score rollouts with a reward source and compare with the env's own reward (``vlmrl evaluate-reward``).

This is how a user picks prompts, alpha or a CLIP size before spending GPU hours: roll out a few episodes
(random actions or a checkpoint's policy), score every step's observation with the reward model, and
report how well its ranking agrees with the ground truth (Spearman, Kendall, EPIC), plus the frames it
scores highest and lowest side by side.

EPIC here compares next-state rewards on the visited transitions: the model reads only the observation
after each step, and the env's reward is known only on the transitions that happened, so it is treated as
a function of the state it led to. With ``D_S`` the visited states the canonicalization is exact for such
rewards (see :mod:`vlmrl.rewards.quality`). Outputs in ``out``: ``reward_eval.json`` (numbers),
``scores.npz`` (every score), ``extremes.png`` and ``reward_eval.html``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmrl.report import html as H
from vlmrl.report import plots
from vlmrl.rewards.base import RewardModel
from vlmrl.rewards.quality import extreme_indices, reward_agreement
from vlmrl.rollouts import Episode, Policy, iter_episodes, score_in_batches
from vlmrl.runs import atomic_path, write_bytes, write_json, write_text


@dataclass
class Rollouts:
    """Transitions of a few episodes: the reward model's inputs and the ground truth.

    Attributes:
        inputs: per step, ``info[input_key]`` after the step (a ``uint8 (H, W, 3)`` frame or a message).
        env_rewards: ``float64 (N,)`` the env's own reward of each step.
        episode_ids: ``int64 (N,)`` episode index of each step.
        steps: ``int64 (N,)`` step index within its episode.
    """

    inputs: list
    env_rewards: np.ndarray
    episode_ids: np.ndarray
    steps: np.ndarray


def collect_rollouts(
    env_fn: Callable[[], Any],
    policy: Policy | None,
    episodes: int,
    max_steps: int,
    input_key: str,
    rng: np.random.Generator,
    truth_key: str = "env_reward",
) -> Rollouts:
    """Run ``episodes`` episodes (at most ``max_steps`` steps each) and keep what the reward model reads.

    Args:
        env_fn: builds the env; every step's ``info`` must carry ``input_key``.
        policy: ``policy(obs, info) -> action``; ``None`` samples uniformly random actions.
        episodes: number of episodes.
        max_steps: cap on steps per episode (the env's own time limit may end it first).
        input_key: what the reward model reads from ``info`` (``"frame"`` or ``"message"``).
        rng: seeds the env resets and the random actions.
        truth_key: the ``info`` entry holding the ground truth; ``"env_reward"`` falls back to the reward
            ``step`` returns. Use a task metric here when the env publishes one.
    """
    if episodes < 1 or max_steps < 1:
        raise ValueError(f"need episodes >= 1 and max_steps >= 1, got episodes={episodes} max_steps={max_steps}")
    env = env_fn()
    inputs, rewards, ep_ids, steps = [], [], [], []
    try:
        env.action_space.seed(int(rng.integers(2**31 - 1)))
        act = policy if policy is not None else (lambda obs, info: env.action_space.sample())
        seeds = (int(rng.integers(2**31 - 1)) for _ in range(episodes))  # drawn lazily, one per reset
        for ep, episode in enumerate(iter_episodes(env, act, seeds, max_steps=max_steps)):
            inputs += _model_inputs(episode, input_key)
            rewards += _ground_truth(episode, truth_key, input_key)
            ep_ids += [ep] * len(episode)
            steps += range(len(episode))
    finally:
        env.close()
    return Rollouts(inputs, np.asarray(rewards), np.asarray(ep_ids, np.int64), np.asarray(steps, np.int64))


def _model_inputs(episode: Episode, input_key: str) -> list:
    """``info[input_key]`` after every step, or an error naming envs that emit it."""
    if any(input_key not in info for info in episode.infos):
        raise ValueError(
            f"the env's info has no {input_key!r} but the reward model reads it; choose an env that "
            f"emits it (e.g. envs=humanoid for frames, envs=nethack for messages)"
        )
    return episode.inputs(input_key)


def _ground_truth(episode: Episode, truth_key: str, input_key: str) -> list[float]:
    """The ground truth of every step: the env's own reward, or ``info[truth_key]``."""
    if truth_key == "env_reward":
        return [float(info.get("env_reward", r)) for info, r in zip(episode.infos, episode.rewards, strict=True)]
    missing = next((info for info in episode.infos if truth_key not in info), None)
    if missing is not None:
        raise ValueError(
            f"the env's info has no ground truth {truth_key!r}; pass truth_key=env_reward "
            f"or one of: {', '.join(sorted(k for k in missing if k != input_key))}"
        )
    return [float(info[truth_key]) for info in episode.infos]


def evaluate_reward(
    env_fn: Callable[[], Any],
    reward: RewardModel,
    out: str | Path,
    rng: np.random.Generator,
    policy: Policy | None = None,
    episodes: int = 4,
    max_steps: int = 100,
    top_k: int = 6,
    batch_size: int = 256,
    title: str = "",
    setup: dict | None = None,
    truth_key: str = "env_reward",
    max_per_episode: int | None = 2,
    rollouts: Rollouts | None = None,
) -> dict[str, Any]:
    """Roll out, score, compare with the ground truth and write the outputs into ``out``.

    Pass ``rollouts`` (from :func:`collect_rollouts`) to score transitions already collected, e.g. to compare
    several reward settings on the very same frames; ``env_fn``, ``policy``, ``episodes``, ``max_steps`` and
    ``truth_key`` are then unused. ``max_per_episode`` caps how many of the highest (and lowest) scored frames
    come from one episode, so the extremes show different situations; ``None`` shows the plain top and bottom
    ``top_k``.

    Returns:
        The agreement numbers (see :func:`~vlmrl.rewards.quality.reward_agreement`), timings and the
        paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = reward.input_key
    t0 = time.perf_counter()
    roll = (
        rollouts if rollouts is not None else collect_rollouts(env_fn, policy, episodes, max_steps, key, rng, truth_key)
    )
    t1 = time.perf_counter()
    model = score_in_batches(reward, roll.inputs, batch_size).astype(np.float64)
    t2 = time.perf_counter()
    with atomic_path(out / "scores.npz") as tmp:
        np.savez_compressed(
            tmp, model_reward=model, ground_truth=roll.env_rewards, episode=roll.episode_ids, step=roll.steps
        )
    numbers = reward_agreement(model, roll.env_rewards, roll.episode_ids)
    top, bottom = extreme_indices(model, top_k, roll.episode_ids, max_per_episode)
    png = plots.extremes_png(
        roll.inputs,
        top,
        bottom,
        model,
        roll.env_rewards,
        title=f"{title}: highest (top) and lowest (bottom) model reward".strip(": ")
        + (f", at most {max_per_episode} per episode" if max_per_episode else ""),
        where=[f"episode {e}, step {t}" for e, t in zip(roll.episode_ids, roll.steps, strict=True)],
    )
    write_bytes(out / "extremes.png", png)
    result: dict[str, Any] = {
        **numbers,
        "model_reward_mean": float(model.mean()),
        "model_reward_std": float(model.std()),
        "env_reward_mean": float(roll.env_rewards.mean()),
        "env_reward_std": float(roll.env_rewards.std()),
        "rollout_seconds": round(t1 - t0, 3),
        "scoring_seconds": round(t2 - t1, 3),
        "inputs_per_second": round(len(model) / max(t2 - t1, 1e-9), 1),
        "input_key": key,
        "truth_key": truth_key,
        "reward": type(reward).__name__,
        "policy": "random" if policy is None else "checkpoint",
        "rollouts_reused": rollouts is not None,
        "setup": setup or {},
        "top": [
            {
                "index": int(i),
                "episode": int(roll.episode_ids[i]),
                "step": int(roll.steps[i]),
                "model_reward": float(model[i]),
                "env_reward": float(roll.env_rewards[i]),
            }
            for i in top
        ],
        "bottom": [
            {
                "index": int(i),
                "episode": int(roll.episode_ids[i]),
                "step": int(roll.steps[i]),
                "model_reward": float(model[i]),
                "env_reward": float(roll.env_rewards[i]),
            }
            for i in bottom
        ],
    }
    page = _page(result, model, roll, png, top, bottom, title)
    result["html"] = str(write_text(out / "reward_eval.html", page))
    result["extremes_png"] = str(out / "extremes.png")
    write_json(out / "reward_eval.json", result)
    return result


def _verdict(rho: float) -> str:
    if not np.isfinite(rho):
        return "undefined: one of the two rewards is constant over these transitions"
    strength = "strong" if abs(rho) >= 0.7 else "moderate" if abs(rho) >= 0.4 else "weak"
    sign = "agreement" if rho > 0 else "disagreement (the model prefers what the ground truth penalizes)"
    return f"{strength} {sign}"


def _page(result, model, roll: Rollouts, png: bytes, top, bottom, title: str) -> str:
    n, eps = len(model), int(result.get("episodes", 0))
    rho = result["spearman"]
    summary = (
        f"Scored {n:,} transitions from {eps} episode(s) of a {result['policy']} policy with "
        f"{result['reward']} (reads info[{result['input_key']!r}]). Per-step Spearman {rho:.3f}: "
        f"{_verdict(rho)}. EPIC distance {result['epic']:.3f} (0 = same reward up to shaping and scale, "
        f"0.71 = unrelated, 1 = opposite)."
    )
    if "episode_spearman" in result:
        summary += f" Episode returns: Spearman {result['episode_spearman']:.3f}."
    rows = [
        (k, result[k])
        for k in (
            "spearman",
            "kendall",
            "pearson",
            "epic",
            "episode_spearman",
            "episode_kendall",
            "transitions",
            "episodes",
            "model_reward_mean",
            "model_reward_std",
            "env_reward_mean",
            "env_reward_std",
            "inputs_per_second",
        )
        if k in result
    ]
    body = [
        f"<h1>Reward quality: {H.esc(title or result['reward'])}</h1>",
        H.section(
            "summary",
            "Summary",
            f'<div class="summary"><p>{H.esc(summary)}</p></div>' + H.key_value_table(rows),
        ),
        H.section(
            "extremes",
            "Highest and lowest scored",
            H.png_img(png, "extremes")
            + H.esc(
                "Top row: what the model likes most; bottom row: what it likes least. Each shows the model's "
                "reward and the env's own reward for the same step."
            ),
        ),
        H.section(
            "scatter",
            "Model vs ground truth",
            H.plot(
                plots.scatter_svg(model, roll.env_rewards, roll.episode_ids),
                "One dot per step, coloured by episode. A reward that ranks like the ground truth rises left to right.",
            ),
        ),
        H.section(
            "method",
            "How the numbers are computed",
            "<p>"
            + H.esc(
                "Spearman and Kendall (tau-b) compare rankings of all scored steps; Pearson compares values. "
                "EPIC (Gleave et al. 2020) canonicalizes both rewards to remove potential shaping, "
                "then takes sqrt((1 - Pearson)/2) over the visited transitions. "
                "The model reads only the observation after "
                "each step and the env's reward is known only on visited transitions, so both are treated as "
                "next-state rewards with the visited states as the state distribution; for such rewards the "
                "canonical form is the reward minus its mean, so EPIC equals the Pearson distance here."
            )
            + "</p>",
        ),
    ]
    if result.get("setup"):
        body.append(H.section("setup", "Setup", H.key_value_table(sorted(result["setup"].items()))))
    if result["input_key"] != "frame":
        rows = [("highest", int(i)) for i in top] + [("lowest", int(i)) for i in bottom]
        body.append(
            H.section(
                "messages",
                "Messages",
                H.table(
                    ["row", "message", "model reward", "env reward"],
                    [[which, str(roll.inputs[i]), float(model[i]), float(roll.env_rewards[i])] for which, i in rows],
                ),
            )
        )
    return H.page(f"vlmrl reward quality: {title}", "\n".join(body))


def write_comparison(results: dict[str, dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """A page and a JSON ranking several reward settings scored on the same rollouts.

    Args:
        results: per variant name, the dict :func:`evaluate_reward` returned (its ``html`` links the details).
        out: folder for ``comparison.html`` and ``comparison.json``.
        title: page title.
    """
    out = Path(out)
    names = sorted(results, key=lambda n: -np.nan_to_num(results[n]["spearman"], nan=-2.0))
    cols = ("spearman", "kendall", "pearson", "epic", "episode_spearman", "model_reward_std")
    rows = [[n, *(results[n].get(c, "") for c in cols)] for n in names]
    write_json(out / "comparison.json", {n: {c: results[n].get(c) for c in (*cols, "html")} for n in names})
    links = "".join(
        f'<li><a href="{H.esc(Path(results[n]["html"]).relative_to(out).as_posix())}">{H.esc(n)}</a></li>'
        for n in names
    )
    best = names[0]
    summary = (
        f"{len(names)} reward settings scored on the same {int(results[best]['transitions']):,} transitions. "
        f"Best rank agreement with the ground truth: {best} (Spearman {results[best]['spearman']:.3f}, "
        f"EPIC {results[best]['epic']:.3f})."
    )
    body = [
        f"<h1>Reward settings compared: {H.esc(title)}</h1>",
        H.section("summary", "Summary", f'<div class="summary"><p>{H.esc(summary)}</p></div>'),
        H.section("table", "Agreement with the ground truth", H.table(["setting", *cols], rows)),
        H.section(
            "bars",
            "Spearman by setting",
            H.plot(
                plots.bar_svg(
                    names,
                    [float(np.nan_to_num(results[n]["spearman"])) for n in names],
                    "Spearman",
                    "Rank agreement with the ground truth",
                    ylim=(-1.05, 1.15),
                )
            ),
        ),
        H.section("details", "Per-setting pages (extremes, scatter)", f"<ul>{links}</ul>"),
    ]
    return write_text(out / "comparison.html", H.page(f"vlmrl reward comparison: {title}", "\n".join(body)))
