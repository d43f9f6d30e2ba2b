"""Which reward scaling should IQL use: ``standard`` (zero mean, unit std) or the IQL paper's ``return_range``?

For each seed, trains ``push_offline`` (IQL on the learned rewards, ``iql``, and on the true rewards,
``iql_gt``; the same relabeled dataset) once per scaler, each in ``runs/iql_scale/<scaler>_s<K>`` (a finished
run is reused, a killed one resumed), and compares the final ground-truth metric of the same evaluation
episodes: mean ± standard error over seeds and success rates. Ends with ``ratio=<return_range ÷ standard>``
of the learned-reward IQL's metric (a distance on push: < 1 means the paper's scaling is better).

    python benchmarks/iql_reward_scale.py [--experiment push_offline] [--seeds 3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCALERS = ("standard", "return_range")
VARIANTS = ("iql", "iql_gt")


def train(experiment: str, scaler: str, seed: int, root: Path) -> dict:
    """Train (or resume, or reuse) one run; its ``result.json``."""
    run = root / f"{scaler}_s{seed}"
    if not (run / "result.json").exists():
        vlmrl = str(Path(sys.executable).parent / "vlmrl")  # the CLI of this interpreter's environment
        cmd = [vlmrl, "train", experiment, f"seed={seed}", f"run_dir={run}", "resume=true",
               f"agents.reward_scaler={scaler}", f"agents.variants=[{','.join(VARIANTS)}]"]  # fmt: skip
        run.parent.mkdir(parents=True, exist_ok=True)
        with open(root / f"{scaler}_s{seed}.log", "a") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads((run / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="push_offline")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (each uses one CPU thread)")
    ap.add_argument("--root", type=Path, default=Path("runs/iql_scale"))
    args = ap.parse_args()
    jobs = [(s, k) for k in range(args.seeds) for s in SCALERS]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda j: train(args.experiment, *j, args.root), jobs), strict=True))
    goal = next(iter(results.values())).get("metric_goal", "min")
    print(f"{args.experiment}: final gt_metric ({goal} is better), {args.seeds} seeds")
    seeds = "".join(f"{'seed ' + str(k):>10}" for k in range(args.seeds))
    print(f"{'scaler':<14}{'variant':<9}{seeds}{'mean':>10}{'se':>9}{'success':>9}")
    mean = {}
    for scaler in SCALERS:
        for v in VARIANTS:
            m = np.array([results[scaler, k]["variants"][v]["gt_metric_mean"] for k in range(args.seeds)])
            succ = np.mean([results[scaler, k]["variants"][v]["success_rate"] for k in range(args.seeds)])
            se = m.std(ddof=1) / np.sqrt(len(m)) if len(m) > 1 else float("nan")
            mean[scaler, v] = float(m.mean())
            cells = "".join(f"{x:>10.4f}" for x in m)
            print(f"{scaler:<14}{v:<9}{cells}{m.mean():>10.4f}{se:>9.4f}{succ:>9.2f}")
    for scaler in SCALERS:
        for v in VARIANTS:
            print(f"{scaler}_{v}={mean[scaler, v]:.4f}")
    print(f"ratio={mean['return_range', 'iql'] / mean['standard', 'iql']:.3f}")


if __name__ == "__main__":
    main()
