import numpy as np
import pytest

pytest.importorskip("nle")

from vlmrl.envs.nethack import CELL_H, CELL_W, decode_message, make_nethack, render_tty  # noqa: E402


def test_steps_carry_message_frame_and_env_reward():
    env = make_nethack("score", max_episode_steps=50)
    obs, info = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    assert isinstance(info["message"], str)
    assert info["frame"].shape == (24 * CELL_H, 80 * CELL_W, 3) and info["frame"].dtype == np.uint8
    assert info["frame"].max() > 0  # the screen is drawn, not black
    messages, steps, truncated = set(), 0, False
    rng = np.random.default_rng(0)
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        steps += 1
        assert info["env_reward"] == reward
        assert isinstance(info["message"], str) and "\x00" not in info["message"]
        assert info["frame"].shape == (288, 480, 3)
        messages.add(info["message"])
        if terminated:
            env.reset()
    assert steps == 50 and len(messages) > 1  # the game says different things
    frame = env.render()
    np.testing.assert_array_equal(frame, info["frame"])
    env.close()


def test_render_tty_draws_characters_in_their_colour():
    chars = np.full((24, 80), ord(" "), np.uint8)
    colors = np.zeros((24, 80), np.int8)
    chars[3, 10], colors[3, 10] = ord("@"), 1  # red hero
    img = render_tty(chars, colors)
    cell = img[3 * CELL_H : 4 * CELL_H, 10 * CELL_W : 11 * CELL_W]
    assert cell.any() and set(map(tuple, cell.reshape(-1, 3))) <= {(0, 0, 0), (170, 0, 0)}
    img[3 * CELL_H : 4 * CELL_H, 10 * CELL_W : 11 * CELL_W] = 0
    assert not img.any()  # spaces draw nothing


def test_decode_message():
    raw = np.zeros(256, np.uint8)
    raw[:12] = np.frombuffer(b"Hello Agent.", np.uint8)
    assert decode_message(raw) == "Hello Agent."
    assert decode_message(np.zeros(256, np.uint8)) == ""


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="envs.task"):
        make_nethack("shopping")
    with pytest.raises(ValueError, match="crop"):
        make_nethack("score", crop=4)
    with pytest.raises(RuntimeError, match="reset"):
        make_nethack("score").render()


def test_frame_pool_never_changes_a_frame_somebody_kept():
    env = make_nethack("score", max_episode_steps=200)
    env.reset(seed=1)
    kept, copies = [], []
    rng = np.random.default_rng(1)
    for t in range(60):
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        if t % 3 == 0:  # keep some frames, drop the others (those buffers get recycled)
            kept.append(info["frame"])
            copies.append(info["frame"].copy())
        if terminated or truncated:
            env.reset()
        del info
    for frame, copy in zip(kept, copies, strict=True):
        np.testing.assert_array_equal(frame, copy)
    chars, colors = env._last["tty_chars"], env._last["tty_colors"]
    np.testing.assert_array_equal(env.render(), render_tty(chars, colors))  # incremental == full redraw


@pytest.mark.parametrize("mode", ["lazy", True])
def test_frame_in_info_shows_its_own_step(mode):
    import pickle

    env = make_nethack("score", max_episode_steps=100, frame_in_info=mode)
    env.reset(seed=2)
    infos, screens = [], []
    rng = np.random.default_rng(2)
    for _ in range(20):
        *_, info = env.step(int(rng.integers(env.action_space.n)))
        infos.append(info)
        screens.append(env.render().copy())
    for info, screen in zip(infos, screens, strict=True):  # read after later steps: still that step's screen
        assert "frame" in info
        np.testing.assert_array_equal(info["frame"], screen)
        np.testing.assert_array_equal(info.get("frame"), screen)
    clone = pickle.loads(pickle.dumps(infos[3]))  # subprocess vector envs pickle infos
    np.testing.assert_array_equal(clone["frame"], screens[3])
    assert clone["message"] == infos[3]["message"]
    with pytest.raises(KeyError):
        infos[0]["no_such_key"]
    with pytest.raises(ValueError, match="frame_in_info"):
        make_nethack("score", frame_in_info="sometimes")


def test_observation_is_one_hot_map_cells_stats_and_what_the_bottom_line_says():
    from vlmrl.envs.nethack import GLYPH_CLASSES

    env = make_nethack("score", max_episode_steps=30, actions="explore", penalty_step=0.0)
    assert env.action_space.n == 18  # MORE, 8 moves, 8 long moves, '>'
    obs, info = env.reset(seed=0)
    cells = obs[: 9 * 9 * len(GLYPH_CLASSES)].reshape(9, 9, len(GLYPH_CLASSES))
    np.testing.assert_array_equal(cells.sum(-1), 1.0)  # exactly one class per cell
    assert GLYPH_CLASSES[cells[4, 4].argmax()] == "monster"  # the hero in the middle
    assert GLYPH_CLASSES[cells[0, 0].argmax()] == "unexplored"
    assert (info["score"], info["depth"], info["gold"], info["gt_metric"]) == (0, 1, 0, 0)
    total, stuck = 0.0, []
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(4)  # west, into the wall and on
        total += reward
        stuck.append(obs[-1])
    assert info["score"] == total and info["depth"] == 1  # without the step penalty the return is the score
    assert stuck[-1] == 1.0 and stuck[0] == 0.0  # the clock stands still against the wall
    with pytest.raises(ValueError, match="envs.actions"):
        make_nethack("score", actions="everything")


def test_travel_actions_walk_to_the_stairs_and_down_and_to_unexplored_spots():
    import gymnasium as gym

    from vlmrl.envs.nethack import OBSERVATION_KEYS, NetHackText, action_set

    env = make_nethack("score", max_episode_steps=400, actions="travel", penalty_step=0.0)
    assert env.action_space.n == 19  # explore's 18, '>' now travelling first, and explore
    obs, info = env.reset(seed=0)
    rng, jumps = np.random.default_rng(0), 0
    for _ in range(150):
        a = 17 if obs[-3] > 0 and rng.random() < 0.5 else int(rng.integers(17)) if rng.random() < 0.5 else 18
        before, depth = env._last["blstats"][:2].astype(int), info["depth"]
        obs, reward, terminated, truncated, info = env.step(a)
        moved = int(np.abs(env._last["blstats"][:2].astype(int) - before).max())
        jumps += a == 18 and moved > 1  # one explore step travels several cells
        if info["depth"] == 2:
            break
    assert jumps >= 1
    assert a == 17 and depth == 1 and info["depth"] == 2 and reward == 50.0  # walked to '>' and went down at once
    assert obs[-3] == 0.0  # the new level's staircase is not known yet
    env.reset(seed=1)  # explore stops at a closed door west of the first room, then opens it
    assert "The door opens." in [env.step(18)[4]["message"] for _ in range(4)]
    plain = gym.make("NetHackScore-v0", observation_keys=OBSERVATION_KEYS, actions=action_set("explore"))
    with pytest.raises(ValueError, match="actions='travel'"):
        NetHackText(plain, travel=True)
    with pytest.raises(ValueError, match="envs.explore_moves"):
        make_nethack("score", actions="travel", explore_moves=0)


def test_reset_seed_fixes_the_game():
    a, b = make_nethack("score"), make_nethack("score")
    obs_a, _ = a.reset(seed=3)
    a.reset(seed=4)
    obs_b, _ = b.reset(seed=3)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(a.reset(seed=3)[0], obs_b)  # the same env, seeded again
    rng = np.random.default_rng(0)
    for action in rng.integers(a.action_space.n, size=20):
        np.testing.assert_array_equal(a.step(int(action))[0], b.step(int(action))[0])
