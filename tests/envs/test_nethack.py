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
