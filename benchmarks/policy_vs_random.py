"""Does a trained PPO policy beat a random one on the env's ground-truth metric?

Rolls out the run's last checkpoint (deterministic and sampled) and a uniform random policy on the same
reset seeds with the run's own env config, and compares the final ``info["gt_metric"]`` (or the episode
return with ``--metric return``).

    python benchmarks/policy_vs_random.py runs/cloth_fold_teacher/<timestamp> --episodes 20 --goal min
"""

from __future__ import annotations

import argparse

import numpy as np
from hydra.utils import instantiate
from stable_baselines3 import PPO

import vlmrl  # noqa: F401  (MUJOCO_GL)
from vlmrl.runs import RunFolder


def episode_score(env, act, seed: int, metric: str) -> float:
    obs, info = env.reset(seed=seed)
    done, ret = False, 0.0
    while not done:
        obs, r, term, trunc, info = env.step(act(obs))
        ret += float(r)
        done = term or trunc
    return float(info["gt_metric"]) if metric == "gt_metric" else ret


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--metric", choices=["gt_metric", "return"], default="gt_metric")
    ap.add_argument("--goal", choices=["min", "max"], default="min", help="is a lower or a higher metric better")
    ap.add_argument("--seed", type=int, default=10_000)
    args = ap.parse_args()
    run = RunFolder.open(args.run_dir)
    cfg = run.load_config()
    ckpt = run.latest_checkpoint((".zip",))
    if ckpt is None:
        raise SystemExit(f"{args.run_dir} has no checkpoints/step_*.zip")
    model = PPO.load(ckpt, device="cpu")
    env = instantiate(cfg.envs)
    rng = np.random.default_rng(args.seed)
    low, high = env.action_space.low, env.action_space.high
    policies = {
        "ppo (deterministic)": lambda o: model.predict(o, deterministic=True)[0],
        "ppo (sampled)": lambda o: model.predict(o, deterministic=False)[0],
        "random": lambda o: rng.uniform(low, high).astype(env.action_space.dtype),
    }
    scores = {
        k: [episode_score(env, act, args.seed + ep, args.metric) for ep in range(args.episodes)]
        for k, act in policies.items()
    }
    env.close()
    print(f"{cfg.name}: {ckpt.name}, {args.episodes} episodes, final {args.metric} ({args.goal} is better)")
    print(f"{'policy':<22}{'mean':>10}{'sem':>10}")
    for k, v in scores.items():
        print(f"{k:<22}{np.mean(v):>10.4f}{np.std(v) / np.sqrt(len(v)):>10.4f}")
    ppo, rand = np.mean(scores["ppo (deterministic)"]), np.mean(scores["random"])
    print(f"ppo={ppo:.4f}\nrandom={rand:.4f}")
    print(f"ratio={(rand / ppo) if args.goal == 'min' else (ppo / rand):.3f}")


if __name__ == "__main__":
    main()
