"""Collect distinct NetHack messages from NLE games played by a scripted explorer, for the ONI judge's label set.

The explorer walks in persistent directions, attacks adjacent monsters, opens doors, picks things up,
travels to a seen down staircase and descends, and answers prompts at random; a few random commands add
interface messages. Each distinct ``info["message"]`` is written once with its count and first seed, so
the candidates of ``vlmrl/assets/nethack_messages/labelled.jsonl`` can be rebuilt (labels are by hand).

    .venv/bin/python scripts/collect_nethack_messages.py --seeds 100 --steps 3000 --out /tmp/messages.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, deque

import gymnasium as gym
import numpy as np
from nle import nethack

from vlmrl.envs.nethack import OBSERVATION_KEYS, TASKS, NetHackText

A = {a: i for i, a in enumerate(nethack.ACTIONS)}
MOVES = list(nethack.CompassDirection)
C, M = nethack.Command, nethack.MiscDirection
ANSWER_YES, ANSWER_NO = nethack.CompassDirection.NW, nethack.CompassDirection.SE  # the keys 'y' and 'n'
OCCASIONAL = [  # (probability per step, command)
    (0.04, C.SEARCH), (0.03, C.PICKUP), (0.02, C.LOOK), (0.015, C.KICK), (0.01, C.EAT), (0.01, C.QUAFF),
    (0.01, C.OPEN), (0.005, C.SIT), (0.003, C.PRAY), (0.01, C.FIGHT), (0.01, M.DOWN), (0.005, C.CHAT),
]  # fmt: skip
ROLES = ("val", "sam", "bar", "wiz", "pri", "cav", "arc", "hea", "kni", "mon", "ran", "rog", "tou")
KEYS = tuple(dict.fromkeys((*OBSERVATION_KEYS, "chars")))  # the explorer reads the map characters
DEV_ONLY = ("You kill the goblin!", "You see here a gold piece.")  # few-shot examples of the first ONI prompt
NEIGHBOURS = {(-1, 0): 0, (0, 1): 1, (1, 0): 2, (0, -1): 3, (-1, 1): 4, (1, 1): 5, (1, -1): 6, (-1, -1): 7}


def first_step_towards(chars: np.ndarray, start: tuple[int, int], target: int) -> tuple[int, int] | None:
    """The first ``(dy, dx)`` of a shortest walk over non-wall map cells from ``start`` to a ``target`` cell."""
    blocked = {ord(c) for c in " |-"}
    seen = {start: None}
    frontier = deque([start])
    while frontier:
        cell = frontier.popleft()
        if chars[cell] == target:
            while seen[cell] != start and seen[cell] is not None:
                cell = seen[cell]
            return (cell[0] - start[0], cell[1] - start[1]) if cell != start else None
        for dy, dx in NEIGHBOURS:
            nxt = (cell[0] + dy, cell[1] + dx)
            if 0 <= nxt[0] < chars.shape[0] and 0 <= nxt[1] < chars.shape[1] and nxt not in seen:
                if chars[nxt] not in blocked:
                    seen[nxt] = cell
                    frontier.append(nxt)
    return None


class KeepObservation(gym.Wrapper):
    """Keeps NLE's last dict observation in ``self.obs`` for the scripted policy."""

    def reset(self, **kwargs):
        """Reset and keep the first observation."""
        obs, info = self.env.reset(**kwargs)
        self.obs = obs
        return obs, info

    def step(self, action):
        """Step and keep the observation."""
        out = self.env.step(action)
        self.obs = out[0]
        return out


class Explorer:
    """A scripted NetHack player: walk, fight, open, pick up, descend, answer prompts; ``rng`` decides."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.heading = int(rng.integers(8))
        self.queue: list[int] = []
        self.last_pos: tuple[int, int] | None = None
        self.stairs: tuple[int, int] | None = None  # (x, y) of the staircase being walked to

    def act(self, obs: dict, message: str) -> int:
        """The next action index into ``nethack.ACTIONS``."""
        rng = self.rng
        if self.queue:
            return self.queue.pop(0)
        if "[yn" in message or "(yes or no)" in message:
            return A[[ANSWER_YES, ANSWER_NO, C.ESC][int(rng.choice(3, p=[0.6, 0.25, 0.15]))]]
        if message.endswith("?") and "direction" in message:
            return A[MOVES[int(rng.integers(8))]]
        if message.startswith("#"):  # typing an extended command: leave it
            return A[C.ESC]
        if message.startswith("What do you want to") or "--More--" in message:
            return A[nethack.MiscAction.MORE] if rng.random() < 0.5 else A[C.ESC]
        chars, (x, y) = obs["chars"], (int(obs["blstats"][0]), int(obs["blstats"][1]))
        for (dy, dx), d in NEIGHBOURS.items():
            yy, xx = y + dy, x + dx
            if 0 <= yy < chars.shape[0] and 0 <= xx < chars.shape[1] and chr(chars[yy, xx]).isalpha():
                if rng.random() < 0.8:
                    return A[MOVES[d]]
        if "door is closed" in message:
            self.queue = [A[MOVES[self.heading]]]
            return A[C.OPEN] if rng.random() < 0.7 else A[C.KICK]
        if self.stairs is not None and (x, y) == self.stairs:
            self.stairs = None
            return A[M.DOWN]
        if (chars == ord(">")).any() and (self.stairs is not None or rng.random() < 0.01):
            step = first_step_towards(chars, (y, x), ord(">"))  # head for a seen down staircase
            if step is not None and rng.random() < 0.9:
                sy, sx = np.argwhere(chars == ord(">"))[0]
                self.stairs = (int(sx), int(sy))
                return A[MOVES[NEIGHBOURS[step]]]
        for p, cmd in OCCASIONAL:
            if rng.random() < p:
                return A[cmd]
        if rng.random() < 0.03:
            return int(rng.integers(len(nethack.ACTIONS)))
        stuck = self.last_pos == (x, y) or "wall" in message or "solid rock" in message
        if stuck or rng.random() < 0.1:
            self.heading = int(rng.integers(8))
        self.last_pos = (x, y)
        return A[MOVES[self.heading]]


def collect(seeds: int, steps: int, task: str = "score") -> tuple[Counter[str], dict[str, int]]:
    """Play ``seeds`` games of at most ``steps`` actions; returns message counts and each message's first seed."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for seed in range(seeds):
        role = ROLES[seed % len(ROLES)]
        raw = gym.make(
            TASKS[task], observation_keys=KEYS, max_episode_steps=steps, actions=nethack.ACTIONS,
            character=f"{role}-@-@-@" if role != "val" else "val-hum-neu-fem",
        )  # fmt: skip
        keep = KeepObservation(raw)
        env = NetHackText(keep, frame_in_info=False)
        player = Explorer(np.random.default_rng(seed))
        raw.unwrapped.seed(core=seed, disp=seed, reseed=False)  # reset(seed=) does not seed NetHack itself
        _, info = env.reset()
        for _ in range(steps):
            message = info["message"]
            if message:
                counts[message] += 1
                first.setdefault(message, seed)
            _, _, terminated, truncated, info = env.step(player.act(keep.obs, message))
            if terminated or truncated:
                break
        env.close()
    return counts, first


def assign_splits(labels: list[int], seed: int = 0, dev_only: set[int] = frozenset()) -> list[str]:
    """``"dev"`` or ``"test"`` per row, half of each class each (stratified); rows in ``dev_only`` stay in dev."""
    rng = np.random.default_rng(seed)
    splits = ["test"] * len(labels)
    for value in sorted(set(labels)):
        rows = [i for i, v in enumerate(labels) if v == value]
        forced = [i for i in rows if i in dev_only]
        free = [rows[i] for i in rng.permutation(len(rows)) if rows[i] not in dev_only]
        for i in forced + free[: max(0, round(len(rows) / 2) - len(forced))]:
            splits[i] = "dev"
    return splits


def resplit(path: str, seed: int = 0) -> None:
    """Rewrite the ``split`` of a labelled set with :func:`assign_splits`; :data:`DEV_ONLY` messages stay in dev."""
    rows = [json.loads(line) for line in open(path)]
    dev_only = {i for i, r in enumerate(rows) if r["message"] in DEV_ONLY}
    for r, split in zip(rows, assign_splits([r["label"] for r in rows], seed, dev_only), strict=True):
        r["split"] = split
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def main() -> None:
    """Collect and write the messages (or only re-split a labelled set)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=1500, help="actions per game at most")
    parser.add_argument("--task", default="score")
    parser.add_argument("--out", default="nethack_messages.jsonl")
    parser.add_argument("--resplit", metavar="LABELLED", help="only reassign dev/test splits of a labelled set")
    args = parser.parse_args()
    if args.resplit:
        resplit(args.resplit)
        return
    counts, first = collect(args.seeds, args.steps, args.task)
    with open(args.out, "w") as f:
        for message, n in counts.most_common():
            f.write(json.dumps({"message": message, "count": n, "seed": first[message]}) + "\n")
    print(f"messages={sum(counts.values())}\ndistinct={len(counts)}\nout={args.out}")


if __name__ == "__main__":
    main()
