"""Does a policy trained on a learned reward do the task about as well as one trained on the true reward?

For each task, the same learner (SAC) and env-step budget under (a) the true reward (``<task>_true_sac``), (b) the
reward learned from a perfect simulated teacher (``<task>_teacher_sac``), (c) from a noisy teacher (B-Pref mistake
rate 0.1), and (d) a uniform random policy; ``--ppo`` adds PPO on the true reward (``<task>_true_ppo``) on the
first task, so the learner's choice is measured too. Every trained policy is evaluated deterministically on the
same reset seeds on the env's ground truth (``info["is_success"]``, ``info["gt_metric"]`` at the last step).
``--labels 250,500,1000`` adds perfect-teacher runs at those label budgets (success against label budget).

    python benchmarks/learned_vs_true.py [--tasks push,cloth_fold,cloth_spread] [--seeds 3] [--jobs 2] [--ppo]
        [--labels 250,500,1000]

Prints one table (mean and standard error over seeds), then key=value lines ending in
``ratio=<success of (b) / success of (a)>`` pooled over tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

import vlmrl  # noqa: F401  (MUJOCO_GL)
from vlmrl.rollouts import evaluate_policy
from vlmrl.runs import RunFolder

VLMRL = str(Path(sys.executable).with_name("vlmrl"))


@dataclass
class Variant:
    """One way of training on a task: an experiment plus overrides (no experiment: the random policy)."""

    name: str
    experiment: str | None
    overrides: list[str] = field(default_factory=list)
    labels: int | None = None


def variants(task: str, ppo: bool, label_budgets: list[int]) -> list[Variant]:
    out = [
        Variant("true", f"{task}_true_sac"),
        Variant("teacher", f"{task}_teacher_sac"),
        Variant("noisy_teacher", f"{task}_teacher_sac", ["labelers.labeler.eps=0.1"]),
        Variant("random", None),
    ]
    if ppo:
        out.append(Variant("ppo_true", f"{task}_true_ppo"))
    for n in label_budgets:
        per_update = max(1, n // 10)  # the teacher experiments label 10 times in their budget
        out.append(Variant(f"teacher_{n}", f"{task}_teacher_sac",
                           [f"labelers.max_labels={n}", f"labelers.queries_per_update={per_update}"], n))  # fmt: skip
    return out


def train(variant: Variant, seed: int, root: Path, extra: list[str]) -> tuple[Path, float]:
    """Run ``vlmrl train`` for one variant and seed; returns its run folder and training seconds.

    A finished run already in ``root`` (its ``result.json`` written) is reused, so an interrupted benchmark
    continues where it stopped when rerun with the same ``--out``.
    """
    run_dir = root / f"{variant.name}_s{seed}"
    result = run_dir / "result.json"
    if not result.exists():
        run_variant(variant, seed, root, run_dir, extra)
    return run_dir, float(json.loads(result.read_text())["train_seconds"])


def run_variant(variant: Variant, seed: int, root: Path, run_dir: Path, extra: list[str]) -> None:
    """One ``vlmrl train`` subprocess into ``run_dir``, its output in ``root/<variant>_s<seed>.log``."""
    cmd = [VLMRL, "train", f"experiments={variant.experiment}", f"seed={seed}", f"run_dir={run_dir}",
           "agents.progress_bar=false", "agents.video_episodes=1", *variant.overrides, *extra]  # fmt: skip
    if "sac" in variant.experiment:
        cmd.append("agents.eval_episodes=0")  # evaluated below, on the seeds every variant shares
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    with open(root / f"{variant.name}_s{seed}.log", "wb") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; see {root / f'{variant.name}_s{seed}.log'}")


def policy_of(run_dir: Path):
    """The deterministic policy of a run's newest SB3 checkpoint, and the run's config."""
    from stable_baselines3 import PPO, SAC

    run = RunFolder.open(run_dir)
    cfg = run.load_config()
    algo = SAC if cfg.agents._target_.endswith("SACAgent") else PPO
    model = algo.load(run.latest_checkpoint((".zip",)), device="cpu")
    return (lambda obs, info: model.predict(obs, deterministic=True)[0]), cfg


def labels_used(run_dir: Path) -> int:
    path = run_dir / "labels" / "stats.json"
    return int(json.loads(path.read_text()).get("queries", 0)) if path.exists() else 0


def evaluate_run(run_dir: Path, seeds: list[int]) -> dict[str, float]:
    policy, cfg = policy_of(run_dir)
    return evaluate_policy(policy, lambda: instantiate(cfg.envs), seeds)


def evaluate_random(experiment: str, seeds: list[int], rng: np.random.Generator) -> dict[str, float]:
    from hydra import compose, initialize_config_dir

    conf = Path(vlmrl.__file__).parent / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("train", overrides=[f"experiments={experiment}"])
    env_fn = lambda: instantiate(cfg.envs)  # noqa: E731
    space = env_fn().action_space
    return evaluate_policy(lambda obs, info: rng.uniform(space.low, space.high).astype(space.dtype), env_fn, seeds)


def mean_se(xs: list[float]) -> tuple[float, float]:
    xs = np.asarray(xs, float)
    return float(xs.mean()), float(xs.std(ddof=1) / np.sqrt(len(xs))) if len(xs) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tasks",
        default="push,cloth_fold,cloth_spread",
        help="comma-separated tasks with <task>_{true,teacher}_sac experiments",
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="training runs at once (each uses one core)")
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes per policy")
    ap.add_argument("--ppo", action="store_true", help="also PPO on the true reward of the first task")
    ap.add_argument("--labels", default="", help="comma-separated label budgets for a perfect-teacher sweep")
    ap.add_argument("--variants", default="true,teacher,noisy_teacher,random",
                    help="comma-separated subset (ppo_true and teacher_<n> come with --ppo and --labels)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=None, help="env steps per run (default: the experiments')")
    ap.add_argument("--out", default=None, help="folder for the runs (default: a temporary one)")
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    budgets = [int(n) for n in args.labels.split(",") if n]
    root = Path(args.out or tempfile.mkdtemp(prefix="vlmrl-learned-vs-true-"))
    root.mkdir(parents=True, exist_ok=True)
    extra = [f"agents.total_timesteps={args.steps}"] if args.steps else []
    eval_seeds = [10_000 + i for i in range(args.episodes)]
    chosen = set(args.variants.split(","))

    jobs = []  # (task, variant, seed)
    for i, task in enumerate(tasks):
        for v in variants(task, args.ppo and i == 0, budgets):
            if v.name not in chosen and v.name != "ppo_true" and v.labels is None:
                continue
            for seed in range(args.seeds):
                jobs.append((task, v, seed))
    results: dict[tuple[str, str], list[dict]] = {}

    def one(job):
        task, v, seed = job
        if v.experiment is None:
            out = evaluate_random(f"{task}_true_sac", eval_seeds, np.random.default_rng(seed))
            return job, {**out, "labels": 0, "wall": 0.0}
        run_dir, wall = train(v, seed, root / task, extra)
        return job, {**evaluate_run(run_dir, eval_seeds), "labels": labels_used(run_dir), "wall": wall}

    for task in tasks:
        (root / task).mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for (task, v, seed), out in pool.map(one, jobs):
            results.setdefault((task, v.name), []).append(out)
            summary = f"success {out['success_rate']:.2f}, gt {out['gt_metric_mean']:.4f}, labels {out['labels']}"
            print(f"  {task} {v.name} seed {seed}: {summary}, {out['wall']:.0f}s", flush=True)

    print(f"\n{args.seeds} seeds, {args.episodes} evaluation episodes each; runs in {root}")
    print(f"{'task':<14}{'variant':<16}{'success':>16}{'final gt metric':>22}{'labels':>9}{'train s':>9}")
    lines = {}
    for (task, name), rows in results.items():
        s, s_se = mean_se([r["success_rate"] for r in rows])
        g, g_se = mean_se([r["gt_metric_mean"] for r in rows])
        labels, wall = np.mean([r["labels"] for r in rows]), np.mean([r["wall"] for r in rows])
        print(f"{task:<14}{name:<16}{s:>9.2f} ± {s_se:<4.2f}{g:>14.4f} ± {g_se:<6.4f}{labels:>9.0f}{wall:>9.0f}")
        lines[f"{task}_{name}_success"] = s
        lines[f"{task}_{name}_gt_metric"] = g
    print(f"\ntotal_seconds={time.perf_counter() - t0:.0f}")
    for k, v in lines.items():
        print(f"{k}={v:.4f}")
    for t in tasks:  # the bar holds per task: learned (perfect teacher) / true success
        t_true, t_teacher = lines.get(f"{t}_true_success", np.nan), lines.get(f"{t}_teacher_success", np.nan)
        print(f"{t}_ratio={t_teacher / t_true if t_true > 0 else float('nan'):.3f}")
    true = np.mean([lines.get(f"{t}_true_success", np.nan) for t in tasks])
    teacher = np.mean([lines.get(f"{t}_teacher_success", np.nan) for t in tasks])
    print(f"ratio={teacher / true if true > 0 else float('nan'):.3f}")


if __name__ == "__main__":
    main()
