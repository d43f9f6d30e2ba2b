"""Wrapper overhead: steps/s of raw NLE (NetHackScore-v0, default observations) vs our NetHack env.

Our env asks NLE for only the observation keys it uses and decodes the message every step; the 288x480
RGB frame of the tty is drawn when ``info["frame"]`` is read (default), at every step, or not at all.
Target: >= 0.9 of raw NLE steps/s (``ratio``, default lazy frames).

    python benchmarks/nethack_wrapper.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import nle  # noqa: F401
import numpy as np

from vlmrl.envs.nethack import make_nethack


def steps_per_s(env: gym.Env, actions: np.ndarray) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return len(actions) / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    actions = np.random.default_rng(0).integers(0, 23, size=args.steps)
    rows: dict[str, list[float]] = {
        "raw NLE": [],
        "wrapper (lazy frame, default)": [],
        "wrapper (frame every step)": [],
        "wrapper (no frame)": [],
    }
    for _ in range(args.repeats):  # interleaved, best of N: the machine is shared and noisy
        rows["raw NLE"].append(steps_per_s(gym.make("NetHackScore-v0", max_episode_steps=1000), actions))
        rows["wrapper (lazy frame, default)"].append(steps_per_s(make_nethack("score"), actions))
        rows["wrapper (frame every step)"].append(steps_per_s(make_nethack("score", frame_in_info=True), actions))
        rows["wrapper (no frame)"].append(steps_per_s(make_nethack("score", frame_in_info=False), actions))
    best = {k: max(v) for k, v in rows.items()}
    print(f"{'env':<30}{'steps/s':>10}{'vs raw':>8}")
    for k, v in best.items():
        print(f"{k:<30}{v:>10.0f}{v / best['raw NLE']:>8.2f}")
    print(f"raw_steps_per_s={best['raw NLE']:.0f}")
    print(f"wrapper_steps_per_s={best['wrapper (lazy frame, default)']:.0f}")
    print(f"wrapper_eager_frame_steps_per_s={best['wrapper (frame every step)']:.0f}")
    print(f"wrapper_noframe_steps_per_s={best['wrapper (no frame)']:.0f}")
    print(f"eager_frame_ratio={best['wrapper (frame every step)'] / best['raw NLE']:.3f}")
    print(f"ratio={best['wrapper (lazy frame, default)'] / best['raw NLE']:.3f}")


if __name__ == "__main__":
    main()
