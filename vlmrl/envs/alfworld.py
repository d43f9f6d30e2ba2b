"""ALFWorld (text) as a gymnasium env, plus the small ALFWorld-format game set this project authors.

Games are found and loaded through the official code path: ``AlfredTWEnv.collect_game_files`` walks a data
folder in the real layout (``.../<task>/<trial>/traj_data.json`` + ``game.tw-pddl``), and each game is played
by ``textworld.start`` with alfworld's ``AlfredDemangler`` and ``AlfredInfos`` wrappers. The real ALFWorld
set cannot be downloaded here; point ``data_dir`` at it when present. By default the env plays the games
shipped in ``assets/alfworld/`` (one or more per task type: pick, look, clean, heat, cool, pick two), written
by :func:`write_game` from alfworld's own domain, grammar and goal library.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmrl.envs.text_games import TextActionEnv

TASK_TYPES = {
    1: "pick_and_place_simple",
    2: "look_at_obj_in_light",
    3: "pick_clean_then_place_in_recep",
    4: "pick_heat_then_place_in_recep",
    5: "pick_cool_then_place_in_recep",
    6: "pick_two_obj_and_place",
}
GAME_FILE_KEYS = ("pddl_domain", "grammar", "pddl_problem", "solvable")


def default_data_dir() -> Path:
    """The ALFWorld-format games shipped with vlmrl (``assets/alfworld``)."""
    return Path(__file__).resolve().parents[1] / "assets" / "alfworld"


class GameFileError(ValueError):
    """An ALFWorld game folder that cannot be played; the message names the file and the fix."""


def validate_game_dir(game_dir: str | Path) -> dict[str, Any]:
    """Check one game folder (``traj_data.json`` + ``game.tw-pddl``) before textworld sees it.

    Returns:
        The parsed ``traj_data.json``.

    Raises:
        GameFileError: naming the broken file and what to fix.
    """
    game_dir = Path(game_dir)
    traj_path, game_path = game_dir / "traj_data.json", game_dir / "game.tw-pddl"
    try:
        traj = json.loads(traj_path.read_text())
    except FileNotFoundError as exc:
        raise GameFileError(f"{traj_path} is missing: every ALFWorld game folder needs traj_data.json") from exc
    except json.JSONDecodeError as exc:
        raise GameFileError(f"{traj_path} is not valid JSON ({exc}): fix or regenerate it") from exc
    if traj.get("task_type") not in TASK_TYPES.values():
        raise GameFileError(
            f"{traj_path}: task_type={traj.get('task_type')!r} is not one of {sorted(TASK_TYPES.values())}"
        )
    try:
        game = json.loads(game_path.read_text())
    except FileNotFoundError as exc:
        raise GameFileError(
            f"{game_path} is missing: generate it from initial_state.pddl (vlmrl.envs.alfworld.write_game"
            " or alfworld-generate)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise GameFileError(f"{game_path} is not valid JSON ({exc}): regenerate it with write_game") from exc
    missing = [k for k in GAME_FILE_KEYS if k not in game]
    if missing:
        raise GameFileError(f"{game_path} lacks {missing}: a game.tw-pddl holds {list(GAME_FILE_KEYS)}")
    problem = game["pddl_problem"]
    if problem.count("(") != problem.count(")"):
        raise GameFileError(
            f"{game_path}: pddl_problem has {problem.count('(')} '(' but {problem.count(')')} ')':"
            " balance its parentheses"
        )
    for section in ("(:objects", "(:init", "(:goal"):
        if section not in problem:
            raise GameFileError(f"{game_path}: pddl_problem has no {section} section: add it")
    metric, objects = problem.find("(:metric"), problem.find("(:objects")
    if metric != -1 and metric < objects:
        raise GameFileError(f"{game_path}: put (:objects ...) before (:metric ...) (Fast Downward asserts)")
    if "UNKNOWN GOAL" in game["grammar"]:
        raise GameFileError(f"{game_path}: the grammar still says UNKNOWN GOAL: add the task with write_game")
    return traj


def find_games(data_dir: str | Path, task_types: Sequence[int] = tuple(TASK_TYPES)) -> list[str]:
    """Game files under ``data_dir`` of the given task types, via alfworld's own collector.

    Every folder with a ``traj_data.json`` is validated first, so a broken file fails loudly instead of
    being skipped.
    """
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"no ALFWorld data folder at {data_dir}: pass envs.data_dir=/path/to/json_2.1.1/train (real"
            " ALFWorld) or leave it unset for the shipped games"
        )
    unknown = [t for t in task_types if t not in TASK_TYPES]
    if unknown:
        raise ValueError(f"unknown ALFWorld task types {unknown}: use ids from {TASK_TYPES}")
    for traj_path in sorted(data_dir.rglob("traj_data.json")):
        validate_game_dir(traj_path.parent)
    config = {
        "dataset": {"data_path": str(data_dir), "num_train_games": -1, "num_eval_games": -1},
        "env": {"task_types": list(task_types), "goal_desc_human_anns_prob": 0.0},
    }
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        collector = AlfredTWEnv(config, train_eval="train")
    games = sorted(collector.game_files)
    if not games:
        raise FileNotFoundError(
            f"no playable ALFWorld games of task types {list(task_types)} under {data_dir}: expected"
            " <task>/<trial>/traj_data.json with game.tw-pddl (solvable: true) beside it"
        )
    return games


@contextlib.contextmanager
def _keep_argv() -> Iterator[None]:
    """Restore ``sys.argv`` afterwards: textworld's Fast Downward translator overwrites it at every load/reset."""
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


def memoize_textworld_parsing() -> None:
    """Make textworld's PDDL games about 2x faster by memoizing two pure parse functions.

    At every step textworld re-parses the same grammar strings and rule conditions with tatsu (most of a
    step's time on a CPU). The parses depend only on the string, so they are cached; grammar symbols are
    handed out as deep copies since textworld attaches per-call context to them. Idempotent.
    """
    from textworld.envs.pddl import textgen
    from textworld.logic import Rule

    if getattr(textgen, "_memoized_by_vlmrl", False):
        return
    parse, symbols = textgen._parse_and_convert, {}

    def parse_once(text, rule_name=None, **kwargs):
        if kwargs.get("trace"):
            return parse(text, rule_name=rule_name, **kwargs)
        if (text, rule_name) not in symbols:
            symbols[text, rule_name] = parse(text, rule_name=rule_name)
        return copy.deepcopy(symbols[text, rule_name])

    query, queries = Rule.parse_conjunctive_query, {}

    def query_once(cls, expr):
        if expr not in queries:
            queries[expr] = query(expr)
        return queries[expr]

    textgen._parse_and_convert = parse_once
    Rule.parse_conjunctive_query = classmethod(query_once)
    textgen._memoized_by_vlmrl = True


class AlfWorldEnv(TextActionEnv):
    """ALFWorld's text games: admissible commands are the actions, success is ``won``.

    The observation is the task, the last feedback and what the agent carries, so the policy sees a
    (nearly) Markov state; the first observation also has the room description.

    Args:
        data_dir: folder of games in the ALFWorld layout; ``None`` plays the shipped games.
        task_types: ALFWorld task-type ids to keep (1 pick, 2 look, 3 clean, 4 heat, 5 cool, 6 pick two).
        games: optional substrings; only game paths containing one of them are kept.
        max_episode_steps: steps before truncation.
        max_actions: padded action-space size (more admissible commands than this is an error).
        frame_size: ``(height, width)`` of the drawn text screen.
        render_mode: only ``"rgb_array"``.
        memoize_parsing: apply :func:`memoize_textworld_parsing` (same texts, about 2x faster steps).
        skip_commands: prefixes of admissible commands left out of the action set. The defaults never
            change the game (they only print what the observation already shows: the room, the inventory,
            a receptacle's contents); ``[]`` keeps ALFWorld's full command set.
    """

    title = "ALFWorld"

    def __init__(
        self,
        data_dir: str | Path | None = None,
        task_types: Sequence[int] = tuple(TASK_TYPES),
        games: Sequence[str] | None = None,
        max_episode_steps: int = 30,
        max_actions: int = 64,
        frame_size: tuple[int, int] = (256, 320),
        render_mode: str | None = "rgb_array",
        memoize_parsing: bool = True,
        skip_commands: Sequence[str] = ("help", "inventory", "look", "examine"),
    ):
        super().__init__(
            max_actions=max_actions,
            max_episode_steps=max_episode_steps,
            frame_size=frame_size,
            render_mode=render_mode,
            max_text_length=4096,
        )
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.game_files = find_games(self.data_dir, task_types)
        if games:
            self.game_files = [g for g in self.game_files if any(s in g for s in games)]
            if not self.game_files:
                raise ValueError(f"no game under {self.data_dir} matches games={list(games)}")
        self.skip_commands = tuple(skip_commands)
        if memoize_parsing:
            memoize_textworld_parsing()
        self._tw_envs: dict[str, Any] = {}
        self._tw = None
        self.game_file = ""
        self._goal = ""
        self._carrying = "nothing"

    @property
    def goal(self) -> str:
        """The task sentence of the current game."""
        return self._goal

    @property
    def task_id(self) -> str:
        """The current game's folder relative to ``data_dir``."""
        return str(Path(self.game_file).parent.relative_to(self.data_dir)) if self.game_file else ""

    def _textworld_env(self, game_file: str):
        if game_file not in self._tw_envs:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

            infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
            try:
                with _keep_argv():
                    env = textworld.start(game_file, request_infos=infos, wrappers=[AlfredDemangler(), AlfredInfos])
                    env.reset()
            except Exception as exc:
                raise GameFileError(
                    f"textworld could not load {game_file}: {type(exc).__name__}: {exc}."
                    " Check its pddl_problem against alfworld's domain (objects, types, goal)"
                ) from exc
            self._tw_envs[game_file] = env
        return self._tw_envs[game_file]

    def _text_with(self, feedback: str) -> str:
        return self._observation(feedback)

    def _observation(self, feedback: str) -> str:
        return f"Your task is to: {self._goal}.\n{feedback.strip()}\nYou are carrying: {self._carrying}."

    def _new_game(self, rng: np.random.Generator, options: dict[str, Any] | None):
        options = options or {}
        if "game_file" in options:
            self.game_file = str(options["game_file"])
        else:
            self.game_file = self.game_files[int(rng.integers(len(self.game_files)))]
        self._tw = self._textworld_env(self.game_file)
        with _keep_argv():
            state = self._tw.reset()
        intro = state["feedback"]
        match = re.search(r"Your task is to: (.*?)\.?\s*$", intro.strip(), flags=re.S)
        self._goal = match.group(1).strip() if match else "finish the task"
        self._carrying = "nothing"
        room = intro.split("-=", 2)[-1].split("=-", 1)[-1]
        room = room.split("Your task is to:")[0]
        return self._observation(room), self._commands_of(state)

    def _commands_of(self, state) -> list[str]:
        return [c for c in state["admissible_commands"] if not c.startswith(self.skip_commands)]

    def _play(self, command: str):
        assert self._tw is not None
        state, _score, done = self._tw.step(command)
        feedback = state["feedback"]
        taken = re.match(r"You pick up the (.+?) from the ", feedback)
        if taken:
            self._carrying = taken.group(1)
        elif re.match(r"You (put|move) the ", feedback):
            self._carrying = "nothing"
        won = bool(state["won"])
        return self._observation(feedback), float(won), bool(done or won), won, self._commands_of(state)

    def _info(self, reward: float) -> dict[str, Any]:
        info = super()._info(reward)
        info["task_id"] = self.task_id
        info["game_file"] = self.game_file
        return info

    def close(self):
        """Close every loaded textworld game."""
        for env in self._tw_envs.values():
            with contextlib.suppress(Exception):
                env.close()
        self._tw_envs.clear()


# -----------------------------------------------------------------------------------------------------------
# Authoring ALFWorld-format games: scenes written in ALFRED's naming, goals from alfworld's goal library.
# -----------------------------------------------------------------------------------------------------------

# receptacle id -> (receptacle type, openable); object id -> (object type, receptacle id, properties)
SCENES: dict[str, dict[str, dict[str, tuple]]] = {
    "kitchen": {
        "receptacles": {
            "CounterTop_bar_1": ("CounterTop", False),
            "Cabinet_bar_1": ("Cabinet", True),
            "Fridge_bar_1": ("Fridge", True),
            "Microwave_bar_1": ("Microwave", True),
            "Sink_bar_1_bar_SinkBasin": ("SinkBasin", False),
            "DiningTable_bar_1": ("DiningTable", False),
            "Shelf_bar_1": ("Shelf", False),
        },
        "objects": {
            "Apple_bar_1": ("Apple", "CounterTop_bar_1", ("cleanable", "heatable", "coolable")),
            "Apple_bar_2": ("Apple", "DiningTable_bar_1", ("cleanable", "heatable", "coolable")),
            "Mug_bar_1": ("Mug", "Cabinet_bar_1", ("cleanable", "heatable", "coolable")),
            "Potato_bar_1": ("Potato", "Fridge_bar_1", ("cleanable", "heatable", "coolable")),
            "Plate_bar_1": ("Plate", "Shelf_bar_1", ("cleanable", "heatable", "coolable")),
            "Egg_bar_1": ("Egg", "DiningTable_bar_1", ("heatable", "coolable")),
            "Tomato_bar_1": ("Tomato", "CounterTop_bar_1", ("cleanable", "heatable", "coolable")),
            "Fork_bar_1": ("Fork", "DiningTable_bar_1", ("cleanable",)),
            "Tomato_bar_2": ("Tomato", "Fridge_bar_1", ("cleanable", "heatable", "coolable")),
        },
    },
    "bedroom": {
        "receptacles": {
            "Desk_bar_1": ("Desk", False),
            "SideTable_bar_1": ("SideTable", False),
            "Bed_bar_1": ("Bed", False),
            "Drawer_bar_1": ("Drawer", True),
            "Shelf_bar_1": ("Shelf", False),
            "Dresser_bar_1": ("Dresser", False),
        },
        "objects": {
            "DeskLamp_bar_1": ("DeskLamp", "SideTable_bar_1", ("toggleable", "fixed")),
            "Book_bar_1": ("Book", "Bed_bar_1", ()),
            "CD_bar_1": ("CD", "Drawer_bar_1", ()),
            "Pen_bar_1": ("Pen", "Desk_bar_1", ()),
            "AlarmClock_bar_1": ("AlarmClock", "Shelf_bar_1", ()),
            "CellPhone_bar_1": ("CellPhone", "Dresser_bar_1", ()),
            "KeyChain_bar_1": ("KeyChain", "Desk_bar_1", ()),
            "CellPhone_bar_2": ("CellPhone", "Bed_bar_1", ()),
        },
    },
}

# (folder, scene, task type, object, receptacle/toggle target, a winning walkthrough). alfworld's demangler
# numbers instances in reverse id order: Apple_bar_1 is "apple 2", Apple_bar_2 is "apple 1".
SHIPPED_GAMES: list[tuple[str, str, str, str, str, list[str]]] = [
    (
        "pick_and_place_simple-Apple-None-Fridge-1/trial_vlmrl_0",
        "kitchen",
        "pick_and_place_simple",
        "Apple",
        "Fridge",
        [
            "go to countertop 1",
            "take apple 2 from countertop 1",
            "go to fridge 1",
            "open fridge 1",
            "move apple 2 to fridge 1",
        ],
    ),
    (
        "pick_and_place_simple-Mug-None-DiningTable-1/trial_vlmrl_0",
        "kitchen",
        "pick_and_place_simple",
        "Mug",
        "DiningTable",
        [
            "go to cabinet 1",
            "open cabinet 1",
            "take mug 1 from cabinet 1",
            "go to diningtable 1",
            "move mug 1 to diningtable 1",
        ],
    ),
    (
        "look_at_obj_in_light-Book-None-DeskLamp-1/trial_vlmrl_0",
        "bedroom",
        "look_at_obj_in_light",
        "Book",
        "DeskLamp",
        ["go to bed 1", "take book 1 from bed 1", "go to sidetable 1", "use desklamp 1"],
    ),
    (
        "look_at_obj_in_light-CD-None-DeskLamp-1/trial_vlmrl_0",
        "bedroom",
        "look_at_obj_in_light",
        "CD",
        "DeskLamp",
        ["go to drawer 1", "open drawer 1", "take cd 1 from drawer 1", "go to sidetable 1", "use desklamp 1"],
    ),
    (
        "pick_clean_then_place_in_recep-Plate-None-CounterTop-1/trial_vlmrl_0",
        "kitchen",
        "pick_clean_then_place_in_recep",
        "Plate",
        "CounterTop",
        [
            "go to shelf 1",
            "take plate 1 from shelf 1",
            "go to sinkbasin 1",
            "clean plate 1 with sinkbasin 1",
            "go to countertop 1",
            "move plate 1 to countertop 1",
        ],
    ),
    (
        "pick_clean_then_place_in_recep-Fork-None-Shelf-1/trial_vlmrl_0",
        "kitchen",
        "pick_clean_then_place_in_recep",
        "Fork",
        "Shelf",
        [
            "go to diningtable 1",
            "take fork 1 from diningtable 1",
            "go to sinkbasin 1",
            "clean fork 1 with sinkbasin 1",
            "go to shelf 1",
            "move fork 1 to shelf 1",
        ],
    ),
    (
        "pick_heat_then_place_in_recep-Potato-None-DiningTable-1/trial_vlmrl_0",
        "kitchen",
        "pick_heat_then_place_in_recep",
        "Potato",
        "DiningTable",
        [
            "go to fridge 1",
            "open fridge 1",
            "take potato 1 from fridge 1",
            "go to microwave 1",
            "heat potato 1 with microwave 1",
            "go to diningtable 1",
            "move potato 1 to diningtable 1",
        ],
    ),
    (
        "pick_heat_then_place_in_recep-Egg-None-CounterTop-1/trial_vlmrl_0",
        "kitchen",
        "pick_heat_then_place_in_recep",
        "Egg",
        "CounterTop",
        [
            "go to diningtable 1",
            "take egg 1 from diningtable 1",
            "go to microwave 1",
            "heat egg 1 with microwave 1",
            "go to countertop 1",
            "move egg 1 to countertop 1",
        ],
    ),
    (
        "pick_cool_then_place_in_recep-Tomato-None-Shelf-1/trial_vlmrl_0",
        "kitchen",
        "pick_cool_then_place_in_recep",
        "Tomato",
        "Shelf",
        [
            "go to countertop 1",
            "take tomato 2 from countertop 1",
            "go to fridge 1",
            "cool tomato 2 with fridge 1",
            "go to shelf 1",
            "move tomato 2 to shelf 1",
        ],
    ),
    (
        "pick_cool_then_place_in_recep-Mug-None-CounterTop-1/trial_vlmrl_0",
        "kitchen",
        "pick_cool_then_place_in_recep",
        "Mug",
        "CounterTop",
        [
            "go to cabinet 1",
            "open cabinet 1",
            "take mug 1 from cabinet 1",
            "go to fridge 1",
            "cool mug 1 with fridge 1",
            "go to countertop 1",
            "move mug 1 to countertop 1",
        ],
    ),
    (
        "pick_two_obj_and_place-Apple-None-Shelf-1/trial_vlmrl_0",
        "kitchen",
        "pick_two_obj_and_place",
        "Apple",
        "Shelf",
        [
            "go to countertop 1",
            "take apple 2 from countertop 1",
            "go to shelf 1",
            "move apple 2 to shelf 1",
            "go to diningtable 1",
            "take apple 1 from diningtable 1",
            "go to shelf 1",
            "move apple 1 to shelf 1",
        ],
    ),
    (
        "pick_two_obj_and_place-CellPhone-None-Desk-1/trial_vlmrl_0",
        "bedroom",
        "pick_two_obj_and_place",
        "CellPhone",
        "Desk",
        [
            "go to dresser 1",
            "take cellphone 2 from dresser 1",
            "go to desk 1",
            "move cellphone 2 to desk 1",
            "go to bed 1",
            "take cellphone 1 from bed 1",
            "go to desk 1",
            "move cellphone 1 to desk 1",
        ],
    ),
]


def problem_pddl(scene: dict[str, dict[str, tuple]], goal_pddl: str, name: str, start: str = "loc_bar_0") -> str:
    """A PDDL problem for alfworld's ``alfred`` domain: objects, initial facts, and ``goal_pddl``.

    Every receptacle stands at its own location; the agent starts at ``start``, a location with nothing.
    Any object type fits in any receptacle type (``canContain``), as in ALFRED's permissive scenes.
    """
    receptacles, objects = scene["receptacles"], scene["objects"]
    otypes = sorted({t for t, _, _ in objects.values()})
    rtypes = sorted({t for t, _ in receptacles.values()})
    locs = {r: f"loc_bar_{i + 1}" for i, r in enumerate(receptacles)}
    decl = ["agent1 - agent", f"{start} - location"]
    decl += [f"{loc} - location" for loc in locs.values()]
    decl += [f"{r} - receptacle" for r in receptacles] + [f"{o} - object" for o in objects]
    decl += [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtypes]
    init = [f"(atLocation agent1 {start})"]
    for r, (rtype, openable) in receptacles.items():
        init += [f"(receptacleType {r} {rtype}Type)", f"(receptacleAtLocation {r} {locs[r]})"]
        if openable:
            init.append(f"(openable {r})")
    for o, (otype, r, props) in objects.items():
        init += [f"(objectType {o} {otype}Type)", f"(inReceptacle {o} {r})", f"(objectAtLocation {o} {locs[r]})"]
        if "fixed" not in props:
            init.append(f"(pickupable {o})")
        init += [f"({p} {o})" for p in props if p != "fixed"]
    init += [f"(canContain {r}Type {o}Type)" for r in rtypes for o in otypes]
    body = "\n        ".join
    return (
        f"(define (problem {name})\n    (:domain alfred)\n    (:objects\n        {body(decl)}\n    )\n"
        f"    (:init\n        {body(init)}\n    )\n{goal_pddl.strip()}\n"
    )


def write_game(
    game_dir: str | Path,
    scene: str,
    task_type: str,
    obj: str,
    target: str,
    walkthrough: Sequence[str] = (),
) -> Path:
    """Author one ALFWorld game in the real layout: ``initial_state.pddl``, ``traj_data.json``, ``game.tw-pddl``.

    Args:
        game_dir: output folder (``<task>-<obj>-None-<target>-<scene id>/<trial>``).
        scene: a key of :data:`SCENES`.
        task_type: one of :data:`TASK_TYPES`' names.
        obj: the object type to act on (``"Apple"``).
        target: the receptacle type to put it in, or the toggle type for ``look_at_obj_in_light``.
        walkthrough: a command sequence that wins, kept in ``traj_data.json`` for tests.

    Returns:
        Path of the written ``game.tw-pddl``.
    """
    import alfworld
    from alfworld.agents.utils.misc import add_task_to_grammar
    from alfworld.gen.goal_library import gdict

    if task_type not in TASK_TYPES.values():
        raise ValueError(f"task_type={task_type!r} is not one of {sorted(TASK_TYPES.values())}")
    game_dir = Path(game_dir)
    game_dir.mkdir(parents=True, exist_ok=True)
    look = task_type == "look_at_obj_in_light"
    fmt = {"obj": obj, "recep": "" if look else target, "toggle": target if look else "", "mrecep": ""}
    goal = gdict[task_type]["pddl"].format(**fmt).replace("#", "-")
    # the library's goal strings close the whole problem; problem_pddl adds only up to the goal.
    problem = problem_pddl(SCENES[scene], goal, name=f"vlmrl_{game_dir.parent.name}".replace("-", "_"))
    traj = {
        "task_type": task_type,
        "scene": {"name": scene, "authored_by": "vlmrl"},
        "pddl_params": {
            "object_target": obj,
            "parent_target": "" if look else target,
            "toggle_target": target if look else "",
            "mrecep_target": "",
            "object_sliced": False,
        },
        "turk_annotations": {"anns": []},
        "walkthrough": list(walkthrough),
    }
    (game_dir / "initial_state.pddl").write_text(problem)
    (game_dir / "traj_data.json").write_text(json.dumps(traj, indent=2))
    alfworld_data = Path(alfworld.__file__).parent / "data"
    template_rng = random.Random(0)  # alfworld picks the goal template with random.choice: make it fixed
    saved = random.getstate()
    random.setstate(template_rng.getstate())
    grammar = add_task_to_grammar((alfworld_data / "alfred.twl2").read_text(), traj)
    random.setstate(saved)
    game = {
        "pddl_domain": (alfworld_data / "alfred.pddl").read_text(),
        "grammar": grammar,
        "pddl_problem": problem,
        "solvable": True,
    }
    path = game_dir / "game.tw-pddl"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(game))
    os.replace(tmp, path)
    return path


def write_shipped_games(data_dir: str | Path | None = None) -> list[Path]:
    """(Re)write the shipped game set (:data:`SHIPPED_GAMES`) into ``data_dir`` (default the assets folder)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return [write_game(root / folder, *spec) for folder, *spec in SHIPPED_GAMES]
