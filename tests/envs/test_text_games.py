import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from vlmrl.envs.text_games import BlackjackEnv, NumberLineEnv
from vlmrl.envs.text_render import draw_text_screen


@pytest.mark.parametrize("env_cls", [NumberLineEnv, BlackjackEnv])
def test_check_env_and_info_contract(env_cls):
    env = env_cls()
    check_env(env, skip_render_check=False)
    obs, info = env.reset(seed=3)
    assert isinstance(obs, str) and obs == info["message"]
    assert info["frame"].dtype == np.uint8 and info["frame"].shape == (160, 256, 3)
    assert info["frame"].std() > 5  # text was drawn, not a blank screen
    assert info["action_mask"].tolist() == [True, True]
    obs, reward, terminated, truncated, info = env.step(0)
    for key in ("message", "frame", "env_reward", "admissible_commands", "won"):
        assert key in info
    assert info["env_reward"] == reward
    assert np.array_equal(env.render(), info["frame"])


def test_numberline_moves_and_wins():
    env = NumberLineEnv(max_number=5)
    obs, info = env.reset(seed=0, options={"target": 3, "current": 1})
    assert "Target: 3" in obs and "Current: 1" in obs
    obs, r, term, trunc, info = env.step(info["admissible_commands"].index("increase"))
    assert "Current: 2" in obs and r == 0.0 and not term
    obs, r, term, trunc, info = env.step("increase")
    assert r == 1.0 and term and info["won"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_numberline_clips_and_truncates():
    env = NumberLineEnv(max_number=5, max_episode_steps=3)
    env.reset(seed=0, options={"target": 5, "current": 0})
    _, _, _, _, _ = env.step("decrease")
    assert env.current == 0  # clipped at the bottom of the line
    env.step("decrease")
    _, r, term, trunc, info = env.step("decrease")
    assert trunc and not term and not info["won"]


def test_numberline_masked_action_changes_nothing():
    env = NumberLineEnv(max_number=5, max_actions=4)
    env.reset(seed=0, options={"target": 4, "current": 2})
    obs, r, term, trunc, info = env.step(3)  # index beyond the two commands
    assert env.current == 2 and r == 0.0 and "Nothing happens." in obs
    assert info["action_mask"].tolist() == [True, True, False, False]


def test_numberline_rejects_bad_options():
    with pytest.raises(ValueError, match="max_number"):
        NumberLineEnv(max_number=0)
    env = NumberLineEnv(max_number=5)
    with pytest.raises(ValueError, match="outside"):
        env.reset(seed=0, options={"target": 9, "current": 1})


def test_blackjack_hand_values_and_outcomes():
    assert BlackjackEnv.hand_value([1, 13]) == 21
    assert BlackjackEnv.hand_value([1, 1, 9]) == 21
    assert BlackjackEnv.hand_value([10, 5, 9]) == 24
    env = BlackjackEnv()
    obs, info = env.reset(seed=0, options={"player": [10, 9], "dealer": [10, 7]})
    assert "total 19" in obs and "Dealer shows: 10" in obs
    obs, r, term, trunc, info = env.step("stand")  # dealer stays on 17
    assert r == 1.0 and term and info["won"] and "You win!" in obs


def test_blackjack_bust_loses():
    env = BlackjackEnv()
    busts = 0
    for seed in range(20):
        env.reset(seed=seed, options={"player": [10, 10], "dealer": [10, 7]})
        _, r, term, _, info = env.step("hit")
        drawn = env.player[-1]
        if drawn == 1:  # an ace counts 1: 21, the hand goes on
            assert r == 0.0 and not term
        else:
            busts += 1
            assert r == -1.0 and term and not info["won"] and "bust" in info["message"]
    assert busts >= 15


def test_draw_text_screen_wraps_and_rejects_tiny():
    frame = draw_text_screen("word " * 200, title="t", height=64, width=96)
    assert frame.shape == (64, 96, 3)
    with pytest.raises(ValueError, match="height, width"):
        draw_text_screen("x", height=8, width=8)


def test_numberline_task_id_names_start_and_target():
    env = NumberLineEnv(max_number=5)
    _, info = env.reset(seed=0, options={"target": 4, "current": 1})
    assert info["task_id"] == "from 1 to 4"
    _, _, _, _, info = env.step("increase")
    assert info["task_id"] == "from 1 to 4"  # fixed for the whole episode
