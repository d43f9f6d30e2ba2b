"""Does IQL on learned (relabeled) rewards beat behaviour cloning, and how close does it land to IQL on true rewards?

Reads the ``result.json`` of IQL train runs (``vlmrl train push_offline seed=K``: one per seed; each trains
``iql`` on the learned rewards, ``bc`` and ``iql_gt`` on the same dataset and evaluates them on the env's
ground-truth metric), prints a table per seed and across seeds, and ends with ``ratio=<bc ÷ iql>`` for a
metric where lower is better (a distance; ``<iql ÷ bc>`` when higher is better), so > 1 means IQL beat BC.

    python benchmarks/offline_iql.py runs/push_offline_s0 runs/push_offline_s1 runs/push_offline_s2
    python benchmarks/offline_iql.py --experiment push_offline --seeds 3    # train the seeds first (~20 min each)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = ("iql", "bc", "iql_gt")


def load_results(run_dirs: list[Path]) -> list[dict]:
    """The ``result.json`` of every run, refusing runs that lack one of the three variants."""
    out = []
    for run in run_dirs:
        path = run / "result.json"
        if not path.exists():
            raise SystemExit(f"{path} does not exist: is {run} a finished IQL run?")
        result = json.loads(path.read_text())
        missing = [v for v in VARIANTS if "gt_metric_mean" not in result.get("variants", {}).get(v, {})]
        if missing:
            raise SystemExit(f"{path}: no evaluation of {', '.join(missing)} (train with all three variants)")
        out.append(result)
    return out


def summarise(results: list[dict]) -> dict[str, dict[str, float]]:
    """Mean over seeds and its standard error (over seed means) of the metric and the success rate."""
    table = {}
    for v in VARIANTS:
        metric = np.array([r["variants"][v]["gt_metric_mean"] for r in results])
        success = np.array([r["variants"][v]["success_rate"] for r in results])
        se = metric.std(ddof=1) / np.sqrt(len(metric)) if len(metric) > 1 else float("nan")
        table[v] = {"metric": float(metric.mean()), "se": float(se), "success": float(success.mean())}
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="*", type=Path)
    ap.add_argument("--experiment", help="train this experiment for --seeds seeds first (runs/<experiment>_s<K>)")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    runs = list(args.run_dirs)
    if args.experiment:
        vlmrl = str(Path(sys.executable).parent / "vlmrl")  # the CLI of this interpreter's environment
        for seed in range(args.seeds):
            run = Path("runs") / f"{args.experiment}_s{seed}"
            cmd = [vlmrl, "train", args.experiment, f"seed={seed}", f"run_dir={run}", "resume=true"]
            subprocess.run(cmd, check=True)
            runs.append(run)
    if not runs:
        ap.error("give run folders or --experiment")
    results = load_results(runs)
    goal = results[0].get("metric_goal", "min")
    first = results[0]
    budget = {v: first["variants"][v]["steps"] for v in VARIANTS}
    print(
        f"{first['dataset']}: {first['transitions']} transitions, {first['episodes']} episodes; "
        f"steps iql/bc/iql_gt {budget['iql']}/{budget['bc']}/{budget['iql_gt']}; "
        f"{first['eval_episodes']} eval episodes per seed; final gt_metric ({goal} is better)"
    )
    print(f"{'run':<28}" + "".join(f"{v + ' metric':>16}{'success':>9}" for v in VARIANTS))
    for run, r in zip(runs, results, strict=True):
        cells = "".join(
            f"{r['variants'][v]['gt_metric_mean']:>16.4f}{r['variants'][v]['success_rate']:>9.2f}" for v in VARIANTS
        )
        print(f"{str(run)[-28:]:<28}{cells}")
    table = summarise(results)
    cells = "".join(f"{table[v]['metric']:>9.4f}±{table[v]['se']:<6.4f}{table[v]['success']:>9.2f}" for v in VARIANTS)
    print(f"{f'mean over {len(results)} seeds':<28}{cells}")
    iql, bc, gt = (table[v]["metric"] for v in VARIANTS)
    print(f"iql_minus_iql_gt={iql - gt:+.4f}")
    print(f"bc_minus_iql={bc - iql:+.4f}")
    ratio = bc / iql if goal == "min" else iql / bc
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
