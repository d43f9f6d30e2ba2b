"""How fast are the tabletop envs (cloth fold/spread, push), and how well do their scripted experts do?

1. Speed per env: physics steps/s (``mj_step`` alone), env steps/s with random actions (physics +
   a rendered ``info["frame"]`` + the ground-truth metric every step), and render frames/s.
2. Rendering: the env's renderer (shadows, reflections, skybox and multisampling off) against MuJoCo's
   default offscreen renderer with those effects on, same cloth scene, same size, same run.
   ``ratio = fast fps / default-effects fps``.
3. Experts: success rate and final metric of the scripted experts per action-noise level.

    python benchmarks/cloth_env.py [--steps 200] [--width 128] [--episodes 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: headless rendering

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from vlmrl.envs.cloth import (  # noqa: E402
    ClothFoldEnv,
    ClothSpreadEnv,
    make_cloth_fold,
    make_cloth_spread,
)
from vlmrl.envs.experts import ScriptedFoldPolicy, ScriptedPushPolicy, ScriptedSpreadPolicy  # noqa: E402
from vlmrl.envs.push import PushEnv, make_push  # noqa: E402
from vlmrl.rollouts import play_episode  # noqa: E402


def physics_rate(env, steps: int) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(env.model, env.data)
    return steps / (time.perf_counter() - t0)


def env_rate(env, steps: int, rng: np.random.Generator) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, size=4).astype(np.float32))
    return steps / (time.perf_counter() - t0)


def render_rate(render, frames: int) -> float:
    render()
    t0 = time.perf_counter()
    for _ in range(frames):
        render()
    return frames / (time.perf_counter() - t0)


def default_effects_rate(env, width: int, height: int, frames: int) -> float:
    """MuJoCo's stock offscreen renderer (4x multisampling, shadows, reflections, skybox), same scene."""
    model = env.model
    saved = model.vis.quality.offsamples
    model.vis.quality.offsamples = 4  # must be set before the GL context exists
    renderer = mujoco.Renderer(model, height=height, width=width)
    model.vis.quality.offsamples = saved
    try:
        cam = model.camera("top").id
        frame = {}

        def render():
            renderer.update_scene(env.data, camera=cam)
            frame["last"] = renderer.render()

        return render_rate(render, frames)
    finally:
        renderer.close()


def expert_table(episodes: int, noises: list[float]) -> dict[str, float]:
    makers = {
        "cloth_fold": (lambda: make_cloth_fold(width=32, height=32), ScriptedFoldPolicy),
        "cloth_spread": (lambda: make_cloth_spread(width=32, height=32), ScriptedSpreadPolicy),
        "push": (lambda: make_push(width=32, height=32), ScriptedPushPolicy),
    }
    figures = {}
    print(f"\n{'expert':<14}{'noise':>7}{'success':>10}{'final metric':>15}{'episodes':>10}")
    for name, (make, policy_cls) in makers.items():
        env = make()
        for noise in noises:
            wins, metrics = [], []
            for ep in range(episodes):
                policy = policy_cls(env, noise=noise, rng=np.random.default_rng(1000 + ep))
                episode = play_episode(env, lambda obs, info, policy=policy: policy(obs), seed=1000 + ep)
                wins.append(episode.final_info["is_success"])
                metrics.append(episode.final_info["gt_metric"])
            rate = float(np.mean(wins))
            print(f"{name:<14}{noise:>7.2f}{rate:>10.2f}{np.mean(metrics):>15.4f}{episodes:>10}")
            figures[f"success_{name}_noise{noise:g}"] = rate
        env.close()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200, help="env steps per speed measurement")
    ap.add_argument("--width", type=int, default=128, help="frame width = height")
    ap.add_argument("--episodes", type=int, default=5, help="expert episodes per noise level (0: skip)")
    ap.add_argument("--noises", default="0,0.2,0.5,1.0", help="expert noise levels, comma-separated")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    size = {"width": args.width, "height": args.width}
    configs = {
        "cloth_fold": lambda: ClothFoldEnv(**size),
        "cloth_fold_selfcollide": lambda: ClothFoldEnv(self_collision=True, **size),
        "cloth_spread": lambda: ClothSpreadEnv(**size),
        "push": lambda: PushEnv(**size),
    }
    figures: dict[str, float] = {}
    header = f"{'env':<24}{'physics steps/s':>17}{'env steps/s':>13}{'render fps':>12}"
    print(f"{header}   ({args.width}x{args.width})")
    for name, make in configs.items():
        env = make()
        phys = physics_rate(env, args.steps * env.frame_skip // 4)
        steps = env_rate(env, args.steps, rng)
        fps = render_rate(lambda env=env: env._renderer.render(env.data), args.steps)
        print(f"{name:<24}{phys:>17.0f}{steps:>13.1f}{fps:>12.0f}")
        figures.update({f"physics_sps_{name}": phys, f"env_sps_{name}": steps, f"render_fps_{name}": fps})
        env.close()

    env = ClothFoldEnv(**size)
    env.reset(seed=0)
    fast = render_rate(lambda: env._renderer.render(env.data), args.steps)
    slow = default_effects_rate(env, args.width, args.width, args.steps)
    env.close()
    print(f"\n{'cloth renderer':<24}{'fps':>10}")
    print(f"{'effects off (env)':<24}{fast:>10.0f}")
    print(f"{'mujoco default effects':<24}{slow:>10.0f}")

    if args.episodes > 0:
        figures.update(expert_table(args.episodes, [float(x) for x in args.noises.split(",")]))

    print()
    for key, value in figures.items():
        print(f"{key}={value:.4g}")
    print(f"render_fps_fast={fast:.1f}")
    print(f"render_fps_default_effects={slow:.1f}")
    print(f"ratio={fast / slow:.2f}")


if __name__ == "__main__":
    main()
