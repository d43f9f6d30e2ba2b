"""Does the CLIP reward keep up with the humanoid? Sim S, render R, CLIP C, and all in the loop W.

The serial bound is 1 / (1/S + 1/R + 1/C) steps/s; W above it means rendering and CLIP inference overlap
(ChunkedScorer scores chunks in a background thread while envs step). The CLIP model is picked from a
ladder of small open_clip configs so that C is within 2x of R, the balanced (hardest) case.

    python benchmarks/clip_reward_throughput.py [--steps 600] [--size 224] [--n-envs 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip

import vlmrl  # noqa: F401  (MUJOCO_GL)
from vlmrl.envs.humanoid import make_humanoid
from vlmrl.envs.rendering import FastRenderer
from vlmrl.rewards.clip import CLIPReward
from vlmrl.rollouts import ChunkedScorer

LADDER = [  # (name, vision width, layers, patch) at the frame size; text tower kept tiny
    ("bench-w384-l6-p16", 384, 6, 16),
    ("bench-w256-l4-p16", 256, 4, 16),
    ("bench-w256-l4-p32", 256, 4, 32),
    ("bench-w192-l4-p32", 192, 4, 32),
    ("bench-w128-l2-p32", 128, 2, 32),
    ("bench-w64-l2-p32", 64, 2, 32),
]


def register(size: int) -> None:
    d = Path(tempfile.mkdtemp())
    for name, width, layers, patch in LADDER:
        cfg = {
            "embed_dim": 128,
            "vision_cfg": {"image_size": size, "layers": layers, "width": width, "patch_size": patch, "head_width": 64},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
        }
        (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)


def sim_rate(steps: int) -> float:
    env = make_humanoid(emit_frames=False)
    env.reset(seed=0)
    acts = [env.action_space.sample() for _ in range(steps)]
    t = time.perf_counter()
    for a in acts:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    rate = steps / (time.perf_counter() - t)
    env.close()
    return rate


def render_rate(steps: int, size: int) -> float:
    env = make_humanoid(emit_frames=False)
    env.reset(seed=0)
    r = FastRenderer(env.unwrapped.model, size, size, "vlmrl_side")
    r.render(env.unwrapped.data)
    t = time.perf_counter()
    for _ in range(steps):
        r.render(env.unwrapped.data)
    rate = steps / (time.perf_counter() - t)
    r.close()
    env.close()
    return rate


def clip_rate(model: CLIPReward, frames: np.ndarray, repeats: int = 2) -> float:
    model.predict(frames[:8])
    t = time.perf_counter()
    for _ in range(repeats):
        model.predict(frames)
    return repeats * len(frames) / (time.perf_counter() - t)


def loop_rate(model: CLIPReward, steps: int, n_envs: int, chunk_steps: int, asynchronous: bool) -> float:
    """Env steps/s of the training data path: vector env with frames, rewards scored by ChunkedScorer."""
    from gymnasium.vector import SyncVectorEnv

    venv = SyncVectorEnv([make_humanoid for _ in range(n_envs)])
    venv.reset(seed=0)
    scorer = ChunkedScorer(model, chunk_steps * n_envs, asynchronous)
    n_iter = steps // n_envs
    t = time.perf_counter()
    for _ in range(n_iter):
        _, _, _, _, infos = venv.step(venv.action_space.sample())
        scorer.add(list(infos["frame"]))
    rewards = scorer.result()
    rate = n_iter * n_envs / (time.perf_counter() - t)
    assert rewards.shape == (n_iter * n_envs,)
    scorer.close()
    venv.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n-envs", type=int, default=4)
    ap.add_argument("--chunk-steps", type=int, default=16)
    args = ap.parse_args()
    register(args.size)
    S = sim_rate(args.steps * 2)
    R = render_rate(args.steps // 2, args.size)
    frames = np.random.default_rng(0).integers(0, 256, (128, args.size, args.size, 3), dtype=np.uint8)
    # The rung whose C is closest to R (in ratio): the balanced case where overlap matters most.
    rungs = []
    for name, *_ in LADDER:
        model = CLIPReward(model=name, pretrained="random", batch_size=64)
        rate = clip_rate(model, frames)
        print(f"  ladder {name}: C={rate:.1f} frames/s (R={R:.1f})")
        rungs.append((abs(np.log(rate / R)), name, model, rate))
        if rate > 2 * R:
            break
    _, name, model, C = min(rungs, key=lambda r: r[0])
    if not R / 2 <= C <= 2 * R:
        print(f"  note: no rung within 2x of R; closest is {name}")
    bound = 1.0 / (1.0 / S + 1.0 / R + 1.0 / C)
    W_serial = loop_rate(model, args.steps, args.n_envs, args.chunk_steps, asynchronous=False)
    W = loop_rate(model, args.steps, args.n_envs, args.chunk_steps, asynchronous=True)
    rows = [
        ("sim only S (steps/s)", S),
        ("render only R (fps)", R),
        (f"CLIP only C (frames/s, {name})", C),
        ("serial bound 1/(1/S+1/R+1/C)", bound),
        ("loop, scoring at rollout end (steps/s)", W_serial),
        ("loop W, chunks scored while stepping (steps/s)", W),
    ]
    print(f"\nhumanoid {args.size}x{args.size}, {args.n_envs} envs, {args.steps} steps")
    print(f"{'measure':<50}{'value':>10}")
    for k, v in rows:
        print(f"{k:<50}{v:>10.1f}")
    print(f"S={S:.1f}\nR={R:.1f}\nC={C:.1f}\nW={W:.1f}\nW_serial={W_serial:.1f}\nbound={bound:.1f}")
    print(f"ratio={W / bound:.3f}")


if __name__ == "__main__":
    main()
