"""Authoring ALFWorld-format games: scenes in ALFRED's naming, goals and grammar from alfworld's own library.

The shipped set in ``assets/alfworld`` is written from two tables beside it: ``scenes.yaml`` (each scene's
receptacles and objects) and ``shipped_games.yaml`` (one entry per game folder). Regenerate it after editing
them with ``python -c "from vlmrl.envs.alfworld_games import write_shipped_games; write_shipped_games()"``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlmrl.envs.alfworld import TASK_TYPES, default_data_dir

SCENES_FILE = default_data_dir() / "scenes.yaml"
SHIPPED_GAMES_FILE = default_data_dir() / "shipped_games.yaml"


@dataclass(frozen=True)
class GameSpec:
    """One game to author (an entry of ``shipped_games.yaml``).

    Attributes:
        folder: output folder relative to the data folder (``<task>-<obj>-None-<target>-<scene id>/<trial>``).
        scene: a scene name of ``scenes.yaml``.
        task_type: one of :data:`~vlmrl.envs.alfworld.TASK_TYPES`' names.
        obj: the object type to act on (``"Apple"``).
        target: the receptacle type to put it in, or the toggle type for ``look_at_obj_in_light``.
        walkthrough: a command sequence that wins, kept in ``traj_data.json`` for tests.
    """

    folder: str
    scene: str
    task_type: str
    obj: str
    target: str
    walkthrough: tuple[str, ...] = ()


def _read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}: restore assets/alfworld/{path.name} (reinstall vlmrl)")
    return yaml.safe_load(path.read_text())


def load_scenes(path: str | Path = SCENES_FILE) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """The scene table, in file order (the order fixes the PDDL's location numbers).

    Returns:
        ``{scene: {"receptacles": {id: {type, openable}}, "objects": {id: {type, receptacle, properties}}}}``.

    Raises:
        ValueError: an object starts in a receptacle its scene lacks.
    """
    scenes = _read_yaml(path)
    for name, scene in scenes.items():
        receptacles = scene.get("receptacles") or {}
        for obj_id, obj in (scene.get("objects") or {}).items():
            if obj.get("receptacle") not in receptacles:
                raise ValueError(
                    f"{path}: {name} object {obj_id} starts in {obj.get('receptacle')!r}, which is not one of"
                    f" the scene's receptacles {list(receptacles)}"
                )
    return scenes


def load_shipped_games(path: str | Path = SHIPPED_GAMES_FILE) -> list[GameSpec]:
    """The entries of ``shipped_games.yaml`` as :class:`GameSpec` s, in file order."""
    keys = ("folder", "scene", "task_type", "object", "target")
    specs = []
    for k, entry in enumerate(_read_yaml(path)):
        missing = [key for key in keys if key not in entry]
        if missing:
            raise ValueError(f"{path}: entry {k} ({entry.get('folder', '?')}) lacks {missing}")
        specs.append(
            GameSpec(
                folder=entry["folder"],
                scene=entry["scene"],
                task_type=entry["task_type"],
                obj=entry["object"],
                target=entry["target"],
                walkthrough=tuple(entry.get("walkthrough") or ()),
            )
        )
    return specs


def problem_pddl(
    scene: dict[str, dict[str, dict[str, Any]]], goal_pddl: str, name: str, start: str = "loc_bar_0"
) -> str:
    """A PDDL problem for alfworld's ``alfred`` domain: objects, initial facts, and ``goal_pddl``.

    Every receptacle stands at its own location; the agent starts at ``start``, a location with nothing.
    Any object type fits in any receptacle type (``canContain``), as in ALFRED's permissive scenes.

    Args:
        scene: one scene of :func:`load_scenes`.
        goal_pddl: the ``(:goal ...)`` section and the problem's closing parenthesis.
        name: the problem name.
        start: the agent's start location.
    """
    receptacles, objects = scene["receptacles"], scene["objects"]
    otypes = sorted({o["type"] for o in objects.values()})
    rtypes = sorted({r["type"] for r in receptacles.values()})
    locs = {r: f"loc_bar_{i + 1}" for i, r in enumerate(receptacles)}
    decl = ["agent1 - agent", f"{start} - location"]
    decl += [f"{loc} - location" for loc in locs.values()]
    decl += [f"{r} - receptacle" for r in receptacles] + [f"{o} - object" for o in objects]
    decl += [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtypes]
    init = [f"(atLocation agent1 {start})"]
    for r, recep in receptacles.items():
        init += [f"(receptacleType {r} {recep['type']}Type)", f"(receptacleAtLocation {r} {locs[r]})"]
        if recep["openable"]:
            init.append(f"(openable {r})")
    for o, obj in objects.items():
        r, props = obj["receptacle"], obj.get("properties") or ()
        init += [f"(objectType {o} {obj['type']}Type)", f"(inReceptacle {o} {r})", f"(objectAtLocation {o} {locs[r]})"]
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
        scene: a scene name of ``scenes.yaml``.
        task_type: one of :data:`~vlmrl.envs.alfworld.TASK_TYPES`' names.
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
    scenes = load_scenes()
    if scene not in scenes:
        raise ValueError(f"scene={scene!r} is not in {SCENES_FILE}: use one of {list(scenes)} or add it there")
    game_dir = Path(game_dir)
    game_dir.mkdir(parents=True, exist_ok=True)
    look = task_type == "look_at_obj_in_light"
    fmt = {"obj": obj, "recep": "" if look else target, "toggle": target if look else "", "mrecep": ""}
    goal = gdict[task_type]["pddl"].format(**fmt).replace("#", "-")
    # the library's goal strings close the whole problem; problem_pddl adds only up to the goal.
    problem = problem_pddl(scenes[scene], goal, name=f"vlmrl_{game_dir.parent.name}".replace("-", "_"))
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
    """(Re)write every game of ``shipped_games.yaml`` into ``data_dir`` (default the assets folder)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return [
        write_game(root / s.folder, s.scene, s.task_type, s.obj, s.target, s.walkthrough) for s in load_shipped_games()
    ]
