import json
import shutil

import numpy as np
import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from vlmrl.envs.alfworld import (  # noqa: E402
    TASK_TYPES,
    AlfWorldEnv,
    GameFileError,
    default_data_dir,
    find_games,
    validate_game_dir,
)
from vlmrl.envs.alfworld_games import (  # noqa: E402
    load_scenes,
    load_shipped_games,
    write_game,
    write_shipped_games,
)

SHIPPED_GAMES = load_shipped_games()
ONE_PER_TYPE = {spec.task_type: spec for spec in SHIPPED_GAMES}.values()
FIRST = SHIPPED_GAMES[0].folder


def test_shipped_games_cover_the_six_task_types():
    games = find_games(default_data_dir())
    assert len(games) == len(SHIPPED_GAMES) == 12
    types = {json.loads(open(g.replace("game.tw-pddl", "traj_data.json")).read())["task_type"] for g in games}
    assert types == set(TASK_TYPES.values())
    assert len(find_games(default_data_dir(), task_types=[2])) == 2


@pytest.mark.parametrize("spec", ONE_PER_TYPE, ids=lambda s: s.task_type)
def test_walkthrough_wins_through_the_official_loader(spec):
    env = AlfWorldEnv(games=[spec.folder])
    obs, info = env.reset(seed=0)
    assert obs.startswith("Your task is to: ") and info["task_id"] == spec.folder
    for i, command in enumerate(spec.walkthrough):
        assert command in info["admissible_commands"], (command, info["admissible_commands"])
        obs, reward, terminated, truncated, info = env.step(info["admissible_commands"].index(command))
        last = i == len(spec.walkthrough) - 1
        assert terminated == last and reward == float(last) and info["won"] == last
    env.close()


def test_check_env_and_info_contract():
    env = AlfWorldEnv(games=[FIRST], max_episode_steps=5)
    check_env(env)
    obs, info = env.reset(seed=1)
    assert info["message"] == obs and "You are carrying: nothing." in obs
    assert info["frame"].shape == (256, 320, 3) and info["frame"].std() > 5
    mask = info["action_mask"]
    assert mask.shape == (64,) and mask.sum() == len(info["admissible_commands"])
    obs, _, _, _, info = env.step(info["admissible_commands"].index("go to countertop 1"))
    assert "apple 2" in obs  # the demangler numbers Apple_bar_1 as "apple 2"
    obs, _, _, _, info = env.step(info["admissible_commands"].index("take apple 2 from countertop 1"))
    assert "You are carrying: apple 2." in obs
    obs, _, _, _, info = env.step(63)  # a masked index: nothing changes
    assert "Nothing happens." in obs and "You are carrying: apple 2." in obs
    env.close()


def test_rewriting_the_shipped_set_reproduces_every_file_byte_for_byte(tmp_path):
    paths = write_shipped_games(tmp_path)
    assert len(paths) == len(SHIPPED_GAMES)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 3 * len(SHIPPED_GAMES)  # initial_state.pddl, traj_data.json, game.tw-pddl
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (default_data_dir() / rel).read_bytes(), rel


def test_authoring_tables_are_checked_and_name_the_fix(tmp_path):
    scenes = load_scenes()
    assert {"kitchen", "bedroom"} <= set(scenes) and {s.scene for s in SHIPPED_GAMES} <= set(scenes)
    assert list(scenes["kitchen"]["receptacles"])[0] == "CounterTop_bar_1"  # file order fixes location numbers
    bad = tmp_path / "scenes.yaml"
    bad.write_text("attic:\n  receptacles: {}\n  objects:\n    Box_bar_1: {type: Box, receptacle: Shelf_bar_1}\n")
    with pytest.raises(ValueError, match="Box_bar_1 starts in 'Shelf_bar_1'"):
        load_scenes(bad)
    bad = tmp_path / "games.yaml"
    bad.write_text("- {folder: x/trial_0, scene: kitchen, task_type: pick_and_place_simple, object: Apple}\n")
    with pytest.raises(ValueError, match=r"entry 0 \(x/trial_0\) lacks \['target'\]"):
        load_shipped_games(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_shipped_games(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="scene='attic' is not in"):
        write_game(tmp_path / "g", "attic", "pick_and_place_simple", "Apple", "Fridge")


def _copy_game(tmp_path):
    dst = tmp_path / "data" / FIRST
    shutil.copytree(default_data_dir() / FIRST, dst)
    return dst


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: (d / "game.tw-pddl").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "traj_data.json").write_text('{"task_type": "juggle"}'), "task_type='juggle'"),
        (lambda d: (d / "game.tw-pddl").unlink(), "missing"),
        (lambda d: _edit_problem(d, lambda p: p.replace("(:goal", "(:gaol")), r"no \(:goal section"),
        (lambda d: _edit_problem(d, lambda p: p + ")"), "balance its parentheses"),
        (lambda d: _edit_game(d, lambda g: g.pop("pddl_problem")), "lacks"),
    ],
)
def test_malformed_game_file_gets_a_clear_error(tmp_path, corrupt, message):
    game_dir = _copy_game(tmp_path)
    corrupt(game_dir)
    with pytest.raises(GameFileError, match=message):
        validate_game_dir(game_dir)
    with pytest.raises(GameFileError, match=str(game_dir.name)):
        AlfWorldEnv(data_dir=tmp_path / "data")


def test_problem_textworld_rejects_is_reported_with_the_file(tmp_path):
    game_dir = _copy_game(tmp_path)
    # an init fact about an object that was never declared: valid JSON and PDDL shape, unplayable game
    _edit_problem(game_dir, lambda p: p.replace("(:init", "(:init\n        (inReceptacle Ghost_bar_1 Fridge_bar_1)"))
    env = AlfWorldEnv(data_dir=tmp_path / "data")
    with pytest.raises(GameFileError, match="textworld could not load .*game.tw-pddl"):
        env.reset(seed=0)


def test_missing_data_dir_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="envs.data_dir"):
        AlfWorldEnv(data_dir=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no playable ALFWorld games"):
        AlfWorldEnv(data_dir=tmp_path / "empty")


def test_loading_games_leaves_sys_argv_alone(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["prog", "--flag"])
    env = AlfWorldEnv(games=[FIRST])
    env.reset(seed=0)
    env.reset(seed=1)
    assert sys.argv == ["prog", "--flag"]  # Fast Downward's translator rewrites it; the env restores it
    env.close()


def test_random_play_is_reproducible_per_seed():
    env = AlfWorldEnv(games=["look_at_obj_in_light"], max_episode_steps=6)

    def rollout(seed):
        rng = np.random.default_rng(seed)
        obs, info = env.reset(seed=seed)
        texts = [obs]
        for _ in range(6):
            obs, _, term, trunc, info = env.step(int(rng.integers(len(info["admissible_commands"]))))
            texts.append(obs)
            if term or trunc:
                break
        return texts

    assert rollout(3) == rollout(3)
    env.close()


def _edit_problem(game_dir, fn):
    _edit_game(game_dir, lambda g: g.__setitem__("pddl_problem", fn(g["pddl_problem"])))


def _edit_game(game_dir, fn):
    path = game_dir / "game.tw-pddl"
    game = json.loads(path.read_text())
    fn(game)
    path.write_text(json.dumps(game))
