"""Does the GFlowNet find successful and diverse trajectories? GFlowNet vs MaskablePPO vs random.

On NumberLine and the shipped ALFWorld games, for several seeds: each learner gets the same env-step budget
(PPO gets as many steps as the GFlowNet used), then each policy (and a uniform-random one) samples
``--eval-episodes`` episodes. Reported per (env, method): success rate and the number of distinct
successful command sequences per task (GFlowVLM's diversity claim; a task is a start state and goal). On
NumberLine, diversity is also counted over many episodes from two fixed starts ("fixed-start"), where a
reward-maximiser settles on the shortest path and a GFlowNet samples every successful path (detours
included) in proportion to its reward. Prints a table, then key=value lines;
the last line is ``ratio=`` GFlowNet success / random success (pooled over envs and seeds, same run).

    .venv/bin/python benchmarks/gflownet_vs_ppo.py --envs numberline --encoder hashing      # ~10 min
    .venv/bin/python benchmarks/gflownet_vs_ppo.py --envs alfworld --encoder hashing --eval-episodes 30
    .venv/bin/python benchmarks/gflownet_vs_ppo.py --envs numberline --numberline-episodes 320   # MiniLM

The ALFWorld default is the two "look" games at 30 steps: the only shipped task type where random play
succeeds often enough (~13%) for learning from the sparse success signal in a CPU budget; on the other task
types random play wins ~0% at 30 steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vlmrl.agents.gflownet import GFlowNetAgent, random_policy
from vlmrl.encoders import HashingEncoder, SentenceEncoder

DEFAULT_T = {"numberline": 0.1, "alfworld": 0.01}


def make_env_fn(name: str, args):
    if name == "numberline":
        from vlmrl.envs.text_games import NumberLineEnv

        return lambda: NumberLineEnv(max_number=args.max_number, max_episode_steps=args.numberline_steps)
    if name == "alfworld":
        from vlmrl.envs.alfworld import AlfWorldEnv

        games = args.alfworld_games.split(",") if args.alfworld_games else None
        return lambda: AlfWorldEnv(games=games, max_episode_steps=args.alfworld_steps)
    raise SystemExit(f"unknown env {name!r}: use numberline or alfworld")


def evaluate(env, policy_for, episodes: int, rng: np.random.Generator):
    """Success rate and mean distinct successful command sequences per task, for a (obs, cmds) -> idx policy."""
    player = GFlowNetAgent(encoder=HashingEncoder(dim=8), video=False)  # only its play() loop is used
    wins, per_task = [], {}
    for _ in range(episodes):
        traj = player.play(env, rng, policy=policy_for(rng))
        wins.append(traj.won)
        per_task.setdefault(traj.task, set())
        if traj.won:
            per_task[traj.task].add(traj.key[1])
    return float(np.mean(wins)), float(np.mean([len(v) for v in per_task.values()]))


class FixedStart:
    """Resets a NumberLine env to one start and target, to sample many episodes of the same task."""

    def __init__(self, env, current: int, target: int):
        self.env, self.options = env, {"current": current, "target": target}

    def reset(self, seed=None):
        return self.env.reset(seed=seed, options=self.options)

    def step(self, action):
        return self.env.step(action)


def diversity(env_name, env, policy_for, args, rng) -> float:
    """NumberLine: distinct successful command sequences among ``--diversity-episodes`` from fixed starts."""
    if env_name != "numberline":
        return float("nan")
    counts = []
    for current, target in ((0, 3), (4, 1)):
        _, distinct = evaluate(FixedStart(env, current, target), policy_for, args.diversity_episodes, rng)
        counts.append(distinct)
    return float(np.mean(counts))


def run(env_name: str, seed: int, encoder, args, workdir: Path) -> list[dict]:
    from vlmrl.agents.base import TrainContext
    from vlmrl.agents.text_ppo import TextPPOAgent
    from vlmrl.runs import RunFolder

    env_fn = make_env_fn(env_name, args)
    episodes = args.numberline_episodes if env_name == "numberline" else args.alfworld_episodes
    rows = []

    t = time.time()
    gfn = GFlowNetAgent(
        encoder=encoder,
        total_episodes=episodes,
        eval_episodes=0,
        video=False,
        lr=args.lr,
        reward_temperature=args.reward_temperature or DEFAULT_T[env_name],
        prior_scale=args.prior_scale,
    )
    gfn.train(TrainContext(env_fn, None, RunFolder(workdir / f"{env_name}_gfn_{seed}"), np.random.default_rng(seed)))
    env = env_fn()
    gfn_policy = lambda rng: lambda o, c: gfn.act(o, c, rng)  # noqa: E731
    success, distinct = evaluate(env, gfn_policy, args.eval_episodes, np.random.default_rng(10_000 + seed))
    fixed = diversity(env_name, env, gfn_policy, args, np.random.default_rng(20_000 + seed))
    rows.append(
        dict(
            env=env_name,
            method="gflownet",
            seed=seed,
            success=success,
            distinct=distinct,
            fixed=fixed,
            steps=gfn.steps_done,
            seconds=time.time() - t,
        )
    )
    budget = gfn.steps_done

    t = time.time()
    n_envs, n_steps = 4, 64
    ppo = TextPPOAgent(
        encoder=encoder,
        total_timesteps=max(budget, n_envs * n_steps),
        n_envs=n_envs,
        n_steps=n_steps,
        batch_size=64,
        learning_rate=1e-3,
        eval_episodes=0,
        checkpoint_every=10**9,
        prior_scale=args.prior_scale,
        video=False,
    )
    ppo.train(TrainContext(env_fn, None, RunFolder(workdir / f"{env_name}_ppo_{seed}"), np.random.default_rng(seed)))
    success, distinct = evaluate(
        env, lambda rng: ppo.act_text, args.eval_episodes, np.random.default_rng(10_000 + seed)
    )
    fixed = diversity(env_name, env, lambda rng: ppo.act_text, args, np.random.default_rng(20_000 + seed))
    rows.append(
        dict(
            env=env_name,
            method="ppo",
            seed=seed,
            success=success,
            distinct=distinct,
            fixed=fixed,
            steps=int(ppo.model.num_timesteps),
            seconds=time.time() - t,
        )
    )

    t = time.time()
    success, distinct = evaluate(env, random_policy, args.eval_episodes, np.random.default_rng(10_000 + seed))
    fixed = diversity(env_name, env, random_policy, args, np.random.default_rng(20_000 + seed))
    rows.append(
        dict(
            env=env_name,
            method="random",
            seed=seed,
            success=success,
            distinct=distinct,
            fixed=fixed,
            steps=0,
            seconds=time.time() - t,
        )
    )
    env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="numberline,alfworld")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--encoder", default="minilm", choices=["minilm", "hashing"])
    parser.add_argument("--eval-episodes", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument(
        "--reward-temperature",
        type=float,
        default=None,
        help="GFlowNet T; default 0.1 on NumberLine, 0.01 on ALFWorld (1/T > log #failures)",
    )
    parser.add_argument("--prior-scale", type=float, default=0.0)
    parser.add_argument(
        "--diversity-episodes",
        type=int,
        default=100,
        help="NumberLine: episodes sampled from each of two fixed starts to count distinct solutions",
    )
    parser.add_argument("--max-number", type=int, default=5)
    parser.add_argument("--numberline-steps", type=int, default=8)
    parser.add_argument("--numberline-episodes", type=int, default=1000)
    parser.add_argument("--alfworld-episodes", type=int, default=160)
    parser.add_argument("--alfworld-steps", type=int, default=30)
    parser.add_argument(
        "--alfworld-games",
        default="look_at_obj_in_light",
        help="comma-separated substrings of shipped game paths; '' for all 12 games",
    )
    args = parser.parse_args()

    encoder = SentenceEncoder() if args.encoder == "minilm" else HashingEncoder()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_name in args.envs.split(","):
            for seed in range(args.seeds):
                rows += run(env_name, seed, encoder, args, Path(tmp))
                last = rows[-3:]
                print(
                    "# " + "  ".join(f"{r['env']}/{r['method']}/s{r['seed']}: {r['success']:.2f}" for r in last),
                    flush=True,
                )

    print(
        f"\n{'env':<11} {'method':<9} {'seed':>4} {'success':>8} {'distinct/task':>14} {'fixed-start':>12}"
        f" {'steps':>7} {'sec':>7}"
    )
    for r in rows:
        print(
            f"{r['env']:<11} {r['method']:<9} {r['seed']:>4} {r['success']:>8.3f} {r['distinct']:>14.2f}"
            f" {r['fixed']:>12.2f} {r['steps']:>7} {r['seconds']:>7.1f}"
        )
    print()
    for env_name in args.envs.split(","):
        for method in ("gflownet", "ppo", "random"):
            sel = [r for r in rows if r["env"] == env_name and r["method"] == method]
            succ = [r["success"] for r in sel]
            print(f"{env_name}_{method}_success_mean={np.mean(succ):.3f}")
            print(f"{env_name}_{method}_success_std={np.std(succ):.3f}")
            print(f"{env_name}_{method}_distinct_per_task={np.mean([r['distinct'] for r in sel]):.2f}")
            if env_name == "numberline":
                print(f"{env_name}_{method}_distinct_fixed_start={np.mean([r['fixed'] for r in sel]):.2f}")
    print(f"encoder={args.encoder}")
    print(f"seeds={args.seeds}")
    print(f"eval_episodes={args.eval_episodes}")
    gfn = np.mean([r["success"] for r in rows if r["method"] == "gflownet"])
    rnd = np.mean([r["success"] for r in rows if r["method"] == "random"])
    print(f"ratio={gfn / rnd:.3f}" if rnd > 0 else f"ratio={'inf' if gfn > 0 else 'nan'}")  # random never won


if __name__ == "__main__":
    main()
