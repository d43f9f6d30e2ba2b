"""ALFWorld's text games as a gymnasium env (admissible commands are the actions).

Games are found and loaded through the official code path: ``AlfredTWEnv.collect_game_files`` walks a data
folder in the real layout (``.../<task>/<trial>/traj_data.json`` + ``game.tw-pddl``), and each game is played
by ``textworld.start`` with alfworld's ``AlfredDemangler`` and ``AlfredInfos`` wrappers. The real ALFWorld
set cannot be downloaded here; point ``data_dir`` at it when present. By default the env plays the games
shipped in ``assets/alfworld/`` (two per task type: pick, look, clean, heat, cool, pick two), authored by
:mod:`vlmrl.envs.alfworld_games`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
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
            f"{game_path} is missing: generate it from initial_state.pddl (vlmrl.envs.alfworld_games.write_game"
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
