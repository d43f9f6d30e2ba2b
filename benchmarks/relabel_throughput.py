"""Relabel scoring throughput: transitions/s of the local backend vs Ray Data on this machine.

Scores N frames with the default preference reward model (3-member CNN ensemble, 64x64 input), once in this
process and once with Ray Data map_batches over reward-model actors (ray.init(num_cpus=C)). Prints a table,
then key=value lines; the last line is ratio=<ray transitions/s / local transitions/s>.

    python benchmarks/relabel_throughput.py --frames 4096 --cpus 2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from vlmrl.data.scoring import score_dataset
from vlmrl.rewards.preference import PreferenceRewardModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs = reward-model actors")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=1024)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(args.frames, args.size, args.size, 3), dtype=np.uint8)
    model = PreferenceRewardModel(ensemble_size=3, image_size=64, seed=0)
    model.predict(frames[:8])  # warm-up

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local = score_dataset(
            model,
            frames,
            f"{tmp}/local",
            "bench",
            backend="local",
            shard_size=args.shard_size,
            batch_size=args.batch_size,
        )
        local_s = time.perf_counter() - t0
        rows.append(("local", f"1 process, {torch.get_num_threads()} torch threads", local_s, args.frames / local_s))

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            remote = score_dataset(
                model,
                frames,
                f"{tmp}/ray",
                "bench",
                backend="ray",
                shard_size=args.shard_size,
                batch_size=args.batch_size,
                num_actors=args.cpus,
            )
            ray_s = time.perf_counter() - t0
        finally:
            ray.shutdown()
        rows.append(
            ("ray", f"{args.cpus} actors x 1 torch thread (init {init_s:.1f}s not counted)", ray_s, args.frames / ray_s)
        )
    max_diff = float(np.abs(remote - local).max())

    print(f"{'backend':8s} {'setup':52s} {'seconds':>8s} {'transitions/s':>14s}")
    for name, setup, secs, tps in rows:
        print(f"{name:8s} {setup:52s} {secs:8.2f} {tps:14.1f}")
    print(f"frames={args.frames}")
    print(f"frame_size={args.size}")
    print(f"ray_init_s={init_s:.2f}")
    print(f"local_tps={rows[0][3]:.1f}")
    print(f"ray_tps={rows[1][3]:.1f}")
    print(f"max_abs_diff={max_diff:.2e}")
    print(f"ratio={rows[1][3] / rows[0][3]:.3f}")


if __name__ == "__main__":
    main()
