import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vlmrl.envs.experts import ScriptedPushPolicy
from vlmrl.envs.push import PushEnv, make_push
from vlmrl.envs.rendering import is_blank
from vlmrl.envs.tabletop import ASSETS, load_template

CONF = ASSETS.parent / "conf"


@pytest.fixture(scope="module")
def push_env():
    env = PushEnv(width=64, height=64)
    yield env
    env.close()


def run_episode(env, policy, seed):
    obs, info = env.reset(seed=seed)
    done = False
    while not done:
        obs, reward, term, trunc, info = env.step(policy(obs))
        assert reward == info["env_reward"] == -info["gt_metric"]
        done = term or trunc
    return info


def test_check_env_passes():
    env = PushEnv(width=32, height=32)
    try:
        check_env(env)
    finally:
        env.close()


def test_metric_reward_and_success_on_hand_placed_state(push_env):
    env = push_env
    env.reset(seed=0)
    env.set_state(block_xy=(0.1, 0.0), goal_xy=(-0.05, 0.08), gripper_pos=(0.3, 0.3, 0.1))
    assert env.gt_metric() == pytest.approx(0.17, abs=1e-9)  # an 8-15-17 triangle
    obs, reward, _, _, info = env.step(np.zeros(4))
    assert info["gt_metric"] == pytest.approx(0.17, abs=1e-3) and reward == -info["gt_metric"]
    assert not info["is_success"]
    assert obs.shape == (15,) and np.allclose(obs[9:11], (-0.05, 0.08))
    np.testing.assert_allclose(obs[11:13], (0.2, 0.3), atol=2e-3)  # gripper - block
    np.testing.assert_allclose(obs[13:15], (-0.15, 0.08), atol=2e-3)  # goal - block
    assert obs[3] == 0.0  # no grasp in the push task
    env.set_state(block_xy=(0.0, 0.0), goal_xy=(0.02, 0.0), gripper_pos=(0.3, 0.3, 0.1), block_yaw=0.3)
    assert env.gt_metric() == pytest.approx(0.02, abs=1e-9) and env.success_from_metric(env.gt_metric())
    assert env.block_yaw == pytest.approx(0.3, abs=1e-9)
    _, _, _, _, info = env.step(np.array([0, 0, 0, 1.0]))  # closing the gripper does nothing here
    assert not info["grasping"]


def test_success_bonus_is_added_only_on_the_goal():
    env = PushEnv(width=32, height=32, success_threshold=0.03, success_bonus=0.1)
    try:
        env.reset(seed=0)
        env.set_state(block_xy=(0.0, 0.0), goal_xy=(0.02, 0.0), gripper_pos=(0.3, 0.3, 0.1))
        _, reward, _, _, info = env.step(np.zeros(4))
        assert info["is_success"] and reward == pytest.approx(0.1 - info["gt_metric"]) == info["env_reward"]
        env.set_state(block_xy=(0.0, 0.0), goal_xy=(0.04, 0.0), gripper_pos=(0.3, 0.3, 0.1))
        _, reward, _, _, info = env.step(np.zeros(4))
        assert not info["is_success"] and reward == -info["gt_metric"]
    finally:
        env.close()
    with pytest.raises(ValueError, match="success_bonus=-1.0: must be a finite number >= 0"):
        PushEnv(success_bonus=-1.0)


def test_gripper_pushes_the_block(push_env):
    env = push_env
    env.reset(seed=0)
    env.set_state(block_xy=(0.0, 0.0), goal_xy=(0.2, 0.0), gripper_pos=(-0.06, 0.0, 0.02))
    for _ in range(5):
        env.step(np.array([0.6, 0.0, 0.0, -1.0]))
    assert env.block_pos[0] > 0.03  # moved along +x by the gripper
    assert env.gt_metric() < 0.17


def test_frames_are_not_blank_and_render_matches(push_env):
    _, info = push_env.reset(seed=1)
    assert info["frame"].shape == (64, 64, 3) and info["frame"].dtype == np.uint8
    assert not is_blank(info["frame"])
    _, _, _, _, info = push_env.step(np.array([1.0, 1.0, 0.0, 0.0]))
    assert np.array_equal(push_env.render(), info["frame"])


def test_seeded_resets_are_reproducible(push_env):
    a, _ = push_env.reset(seed=7)
    b, _ = push_env.reset(seed=7)
    c, _ = push_env.reset(seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_expert_reaches_the_goal_at_zero_noise():
    env = make_push(width=32, height=32, max_episode_steps=60)
    try:
        for seed in (0, 1):
            info = run_episode(env, ScriptedPushPolicy(env), seed)
            assert info["is_success"] and info["gt_metric"] < 0.03
    finally:
        env.close()


def test_behind_start_puts_the_gripper_low_behind_the_block_on_the_goal_line():
    env = PushEnv(width=32, height=32, start="behind")
    try:
        for seed in range(5):
            env.reset(seed=seed)
            u = env.unwrapped
            direction = (u.goal_xy - u.block_pos[:2]) / np.linalg.norm(u.goal_xy - u.block_pos[:2])
            rel = u.gripper_pos[:2] - u.block_pos[:2]
            along = rel @ direction
            lateral = np.linalg.norm(rel - along * direction)
            assert -(u.block_size / 2 + 0.035) <= along <= -(u.block_size / 2 + 0.015) and lateral <= 0.0101
            assert u.gripper_pos[2] == pytest.approx(0.02) and u.gt_metric() >= u.min_goal_distance
    finally:
        env.close()
    with pytest.raises(ValueError, match="start='side'"):
        PushEnv(start="side")


def test_expert_from_behind_pushes_to_the_goal_and_the_decoy_expert_pushes_elsewhere():
    env = make_push(width=32, height=32, max_episode_steps=40, start="behind")
    try:
        for seed in (0, 1):
            assert run_episode(env, ScriptedPushPolicy(env), seed)["is_success"]
            for kind in ("mirror", "random"):
                decoy = ScriptedPushPolicy(env, rng=np.random.default_rng(seed), decoy=kind)
                start = env.reset(seed=seed)[1]["gt_metric"]
                info = run_episode(env, decoy, seed)
                assert np.linalg.norm(decoy._goal - env.unwrapped.goal_xy) >= 0.15
                assert np.linalg.norm(env.unwrapped.block_pos[:2] - decoy._goal) < 0.03  # did the other task...
                assert info["gt_metric"] > start  # ...and left the block farther from this task's goal
    finally:
        env.close()
    with pytest.raises(ValueError, match="decoy=random draws decoy goals"):
        ScriptedPushPolicy(env, decoy="random")
    with pytest.raises(ValueError, match="decoy='left'"):
        ScriptedPushPolicy(env, decoy="left")
    env = make_push(width=32, height=32)
    try:
        far = ScriptedPushPolicy(env, rng=np.random.default_rng(0), decoy="random", decoy_distance=1.0)
        obs, _ = env.reset(seed=0)
        with pytest.raises(ValueError, match="decoy_distance=1.0: no table point"):
            far(obs)
    finally:
        env.close()


@pytest.mark.slow
def test_expert_success_rate_degrades_with_noise():
    env = make_push(width=32, height=32, max_episode_steps=80)
    try:
        rates = []
        for noise in (0.0, 1.0):
            policies = [ScriptedPushPolicy(env, noise=noise, rng=np.random.default_rng(s)) for s in range(6)]
            wins = [run_episode(env, policy, s)["is_success"] for s, policy in enumerate(policies)]
            rates.append(np.mean(wins))
        assert rates[0] == 1.0 and rates[1] < rates[0], rates
    finally:
        env.close()


def test_yaml_config_builds_time_limited_env():
    cfg = OmegaConf.load(CONF / "envs" / "push.yaml")
    env = instantiate(cfg, _partial_=True, width=32, height=32)()
    try:
        assert isinstance(env.unwrapped, PushEnv) and env._max_episode_steps == 80
        _, info = env.reset(seed=0)
        assert info["frame"].shape == (32, 32, 3)
    finally:
        env.close()


def test_bad_arguments_name_the_fix(push_env):
    with pytest.raises(ValueError, match="block_size must be a positive number"):
        PushEnv(block_size=0)
    with pytest.raises(ValueError, match="max_episode_steps must be an int >= 1"):
        make_push(max_episode_steps=1.5)
    with pytest.raises(ValueError, match="max_displacement must be a positive number"):
        PushEnv(max_displacement=float("nan"))
    with pytest.raises(FileNotFoundError, match="missing asset"):
        load_template("manipulation/nope.xml")
    push_env.reset(seed=0)
    with pytest.raises(ValueError, match="action must have 4 entries"):
        push_env.step([0.0, 0.0])
