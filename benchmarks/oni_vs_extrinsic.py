"""Does ONI's intrinsic reward help on NetHackScore at the main job's budget, against the env reward alone?

Trains ``nethack_oni_default`` (ONI: LLM-judged messages plus ``c_ext`` times the score) and the same PPO on
the env reward only (``labelers=none agents.model_reward_coef=0 agents.env_reward_coef=1``) for each seed, each
run in its own folder with its own label store (as a first ``make run`` pays for its labels). Each final
checkpoint then plays the same ``--episodes`` seeded games with sampled actions; their final in-game score,
dungeon depth and gold are averaged per run, and runs are summarised as mean ± standard error over seeds; a
uniformly random policy plays the same games in the same env as the floor.
``return_first``/``return_last`` are the training curve's first and last 20-episode mean env return (for ONI
the in-game score too: the step penalty is off).

    python benchmarks/oni_vs_extrinsic.py [--seeds 0 1 2] [--episodes 20] [--jobs 2] [--set agents.total_timesteps=1e5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

VARIANTS = {
    "oni": [],
    "extrinsic": ["labelers=none", "agents.model_reward_coef=0", "agents.env_reward_coef=1"],
}
EXPERIMENT = "nethack_oni_default"
FINAL = ("score", "depth", "gold")


def train(variant: str, seed: int, root: Path, overrides: list[str], timeout: float) -> Path:
    """Run ``vlmrl train`` for one variant and seed in a fresh folder under ``root``; returns the run folder."""
    run_dir = root / f"{variant}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun into the same --out starts afresh
    cmd = [sys.executable, "-m", "vlmrl.cli", "train", EXPERIMENT, f"seed={seed}", f"runs_root={run_dir / 'runs'}",
           f"run_dir={run_dir / 'run'}", "agents.progress_bar=false", *VARIANTS[variant], *overrides]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(root / f"{variant}_seed{seed}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    return run_dir / "run"


def evaluate(run_dir: Path, episodes: int, seed: int, random_policy: bool = False) -> dict[str, float]:
    """Final ``score``, ``depth`` and ``gold`` of the run's last checkpoint (sampled actions, as trained), or
    of uniformly random actions in the run's env with ``random_policy``, averaged over ``episodes``."""
    from hydra.utils import instantiate
    from stable_baselines3 import PPO

    from vlmrl.rollouts import play_episode
    from vlmrl.runs import RunFolder

    run = RunFolder.open(run_dir)
    env = instantiate(run.load_config().envs)
    if random_policy:
        env.action_space.seed(seed)
        policy = lambda obs, info: env.action_space.sample()  # noqa: E731
    else:
        model = PPO.load(run.latest_checkpoint((".zip",)), device="cpu")
        policy = lambda obs, info: model.predict(obs, deterministic=False)[0]  # noqa: E731
    finals = []
    for ep in range(episodes):
        episode = play_episode(env, policy, seed + ep)
        finals.append([episode.final_info[k] for k in FINAL])
    env.close()
    return dict(zip(FINAL, np.mean(finals, axis=0).tolist(), strict=True))


def summarise(run_dir: Path) -> dict[str, float]:
    """Training-side numbers of a run: wall time, steps, labels, and the env return of the first and last rows."""
    result = json.loads((run_dir / "result.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    returns = [r["ep_env_return_mean"] for r in rows if "ep_env_return_mean" in r]
    return {
        "train_s": float(result["train_seconds"]),
        "steps": float(result["timesteps"]),
        "labels": float(rows[-1].get("oni/labels_known", 0.0)),
        "model_reward_mean": float(np.mean([r["model_reward_mean"] for r in rows])),
        "return_first": float(returns[0]) if returns else float("nan"),
        "return_last": float(returns[-1]) if returns else float("nan"),
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes per final checkpoint")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra overrides for both variants")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per training run")
    ap.add_argument("--jobs", type=int, default=1, help="training runs at once (each takes about one core)")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="oni_vs_extrinsic_"))
    root.mkdir(parents=True, exist_ok=True)
    per_run: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}

    def one(variant: str, seed: int) -> None:
        t0 = time.time()
        run_dir = train(variant, seed, root, args.overrides, args.timeout)
        row = {"wall_s": time.time() - t0, **summarise(run_dir)}
        row.update(evaluate(run_dir, args.episodes, seed=10_000))  # the same games for every run
        per_run[variant].append(row)
        print(f"# {variant} seed={seed}: " + " ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)

    pairs = [(v, s) for s in args.seeds for v in args.variants]  # interleaved: a noisy machine slows all alike
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(one, v, s) for v, s in pairs]:
            future.result()
    first = root / f"{args.variants[0]}_seed{args.seeds[0]}" / "run"
    random_row = evaluate(first, args.episodes, seed=10_000, random_policy=True)  # the same games, no learning
    print("# random: " + " ".join(f"{k}={v:.4g}" for k, v in random_row.items()), flush=True)
    keys = ["score", "depth", "gold", "return_first", "return_last", "model_reward_mean", "labels", "steps",
            "train_s", "wall_s"]  # fmt: skip
    print(f"\n{EXPERIMENT}, seeds {args.seeds}, {args.episodes} sampled episodes per final checkpoint (mean ± se)")
    print(f"{'variant':<11}" + "".join(f"{k:>20}" for k in keys))
    stats = {v: {k: mean_se([r[k] for r in rows]) for k in keys} for v, rows in per_run.items()}
    for v, s in stats.items():
        print(f"{v:<11}" + "".join(f"{f'{m:.3g} ± {e:.2g}':>20}" for m, e in s.values()))
    print(f"{'random':<11}" + "".join(f"{random_row[k]:>20.3g}" if k in random_row else f"{'-':>20}" for k in keys))
    print()
    for k, v in random_row.items():
        print(f"random_{k}={v:.4g}")
    for v, s in stats.items():
        for k, (m, e) in s.items():
            print(f"{v}_{k}={m:.4g}\n{v}_{k}_se={e:.4g}")
    if {"oni", "extrinsic"} <= set(stats):
        base = stats["extrinsic"]["score"][0]
        print(f"ratio={stats['oni']['score'][0] / base if base else float('nan'):.3f}")


if __name__ == "__main__":
    main()
