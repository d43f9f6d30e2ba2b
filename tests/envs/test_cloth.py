import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vlmrl.envs.cloth import (
    ClothFoldEnv,
    ClothSpreadEnv,
    covered_area,
    fold_distance,
    fold_pairs,
    grid_triangles,
    make_cloth_fold,
    make_cloth_spread,
)
from vlmrl.envs.experts import ScriptedFoldPolicy, ScriptedSpreadPolicy
from vlmrl.envs.rendering import is_blank
from vlmrl.envs.tabletop import ASSETS

CONF = ASSETS.parent / "conf"


def run_episode(env, policy, seed):
    obs, info = env.reset(seed=seed)
    first_success, done = None, False
    while not done:
        obs, reward, term, trunc, info = env.step(policy(obs))
        assert reward == info["env_reward"]
        if info["is_success"] and first_success is None:
            first_success = env.unwrapped.elapsed_steps
        done = term or trunc
    return info, first_success


@pytest.fixture(scope="module")
def fold_env():
    env = ClothFoldEnv(width=64, height=64, init_shift=0.0, init_yaw=0.0)
    yield env
    env.close()


def test_fold_pairs_match_mirror_vertices():
    moving, fixed = fold_pairs(3, "diagonal")  # (i, j) with j > i meets (j, i); index = 3 i + j
    assert sorted(zip(moving.tolist(), fixed.tolist(), strict=True)) == [(1, 3), (2, 6), (5, 7)]
    moving, fixed = fold_pairs(3, "edge")  # row 0 onto row 2
    assert sorted(zip(moving.tolist(), fixed.tolist(), strict=True)) == [(0, 6), (1, 7), (2, 8)]
    assert len(fold_pairs(9, "diagonal")[0]) == 36


def test_fold_metric_on_hand_placed_cloth(fold_env):
    env = fold_env
    env.reset(seed=0)
    flat = env.flat_positions
    env.set_cloth_positions(flat)
    # flat: pair (i, j)-(j, i) is sqrt(2) |j - i| spacing apart; sum over j > i of (j - i) is 120 for n = 9
    expected = np.sqrt(2) * 0.05 * 120 / 36
    assert env.gt_metric() == pytest.approx(expected, abs=1e-9)
    # a perfect fold: every moving vertex 1 cm above its partner
    folded = flat.copy()
    moving, fixed = env.pairs
    folded[moving] = flat[fixed] + [0.0, 0.0, 0.01]
    env.set_cloth_positions(folded)
    assert env.gt_metric() == pytest.approx(0.01, abs=1e-9)
    assert env.reward_from_metric(0.01) == -0.01
    assert env.success_from_metric(0.01) and not env.success_from_metric(expected)
    assert fold_distance(folded, env.pairs) == pytest.approx(0.01, abs=1e-12)


def test_covered_area_exact_on_lattice_aligned_shapes():
    n = 9
    tris = grid_triangles(n)
    assert tris.shape == (128, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    flat = np.stack([-0.2 + 0.05 * i.ravel(), -0.2 + 0.05 * j.ravel(), np.zeros(n * n)], axis=1)
    assert covered_area(flat, tris, 0.01) == pytest.approx(0.16, abs=1e-12)
    half = flat.copy()
    half[half[:, 0] < 0, 0] *= -1  # fold the x < 0 half onto the x > 0 half
    assert covered_area(half, tris, 0.01) == pytest.approx(0.08, abs=1e-12)
    rot = np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    turned = flat.copy()
    turned[:, :2] = flat[:, :2] @ rot.T
    assert covered_area(turned, tris, 0.002) == pytest.approx(0.16, rel=0.01)  # rotation keeps the area
    squashed = flat.copy()
    squashed[:, 0] = 0.0  # edge-on: no area
    assert covered_area(squashed, tris, 0.01) < 0.16 * 0.05


def test_spread_metric_and_reset_starts_folded():
    env = ClothSpreadEnv(width=48, height=48)
    try:
        covered = []
        for seed in range(3):
            _, info = env.reset(seed=seed)
            covered.append(info["gt_metric"])
        assert all(0.2 < c < 0.85 for c in covered), covered
        env.set_cloth_positions(env.flat_positions)
        assert env.gt_metric() == pytest.approx(1.0, abs=1e-9)
        assert env.reward_from_metric(1.0) == 1.0 and env.success_from_metric(1.0)
    finally:
        env.close()


@pytest.mark.parametrize("cls", [ClothFoldEnv, ClothSpreadEnv])
def test_check_env_passes(cls):
    env = cls(width=32, height=32)
    try:
        check_env(env)
    finally:
        env.close()


def test_frames_observations_and_seeding(fold_env):
    env = fold_env
    obs, info = env.reset(seed=3)
    assert obs.shape == (19,) and obs.dtype == np.float32
    assert info["frame"].shape == (64, 64, 3) and info["frame"].dtype == np.uint8
    assert not is_blank(info["frame"])
    assert set(info) >= {"frame", "env_reward", "gt_metric", "is_success"}
    obs2, info2 = env.step(np.array([1.0, 0.0, 0.0, -1.0], dtype=np.float32))[0::4]
    assert np.array_equal(env.render(), info2["frame"])
    assert obs2[0] == pytest.approx(obs[0] + env.max_displacement, abs=1e-6)  # gripper moved 3 cm in x
    assert np.abs(info2["frame"].astype(int) - info["frame"].astype(int)).sum() > 0
    # obs: corners are vertices 0, n-1, (n-1) n, n^2 - 1; then the centroid
    pos = env.cloth_positions
    assert np.allclose(obs2[4:16].reshape(4, 3), pos[[0, 8, 72, 80]], atol=1e-6)
    assert np.allclose(obs2[16:19], pos.mean(0), atol=1e-6)


def test_grasp_lift_and_release(fold_env):
    env = fold_env
    env.reset(seed=0)
    env.set_cloth_positions(env.flat_positions)
    env._place_gripper(np.array([0.3, 0.3, 0.1]))  # far from the cloth: closing grasps nothing
    env.step(np.array([0, 0, 0, 1.0]))
    assert not env.grasping
    env._place_gripper(env.cloth_positions[0] + [0.01, 0.0, 0.0])  # 1 cm from corner (0, 0)
    _, _, _, _, info = env.step(np.array([0, 0, 0, 1.0]))
    assert info["grasping"] and env.grasping
    for _ in range(4):
        env.step(np.array([0, 0, 1.0, 1.0]))
    assert env.cloth_positions[0][2] > 0.08  # lifted with the gripper
    env.step(np.array([0, 0, 0, 1.0]))  # hold still: the soft connect holds the corner (sag ~1 cm)
    assert np.linalg.norm(env.cloth_positions[0] - env.gripper_pos) < 0.02
    obs, *_ = env.step(np.array([0, 0, 0, -1.0]))
    assert not env.grasping and obs[3] == 0.0
    for _ in range(6):
        env.step(np.zeros(4))
    assert env.cloth_positions[0][2] < 0.03  # fell back to the table


def test_fold_expert_folds_at_zero_noise():
    env = make_cloth_fold(width=32, height=32, max_episode_steps=40)
    try:
        info, first = run_episode(env, ScriptedFoldPolicy(env), seed=0)
        assert first is not None and first <= 35
        assert info["gt_metric"] < 0.05 and info["is_success"]
    finally:
        env.close()


def test_spread_expert_spreads_at_zero_noise():
    env = make_cloth_spread(width=32, height=32)
    try:
        info, first = run_episode(env, ScriptedSpreadPolicy(env), seed=0)
        assert first is not None
        assert info["gt_metric"] >= 0.9 and info["is_success"]
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("fold", ["diagonal", "edge"])
def test_fold_expert_success_rate_degrades_with_noise(fold):
    env = make_cloth_fold(fold=fold, width=32, height=32, max_episode_steps=60 if fold == "diagonal" else 80)
    try:
        rates = {}
        for noise in (0.0, 1.0):
            wins = []
            for seed in range(5):
                policy = ScriptedFoldPolicy(env, noise=noise, rng=np.random.default_rng(seed))
                wins.append(run_episode(env, policy, seed)[0]["is_success"])
            rates[noise] = np.mean(wins)
        assert rates[0.0] >= 0.8 and rates[1.0] < rates[0.0], rates
    finally:
        env.close()


def test_yaml_configs_build_time_limited_envs():
    for name, cls, steps in [("cloth_fold", ClothFoldEnv, 60), ("cloth_spread", ClothSpreadEnv, 100)]:
        cfg = OmegaConf.load(CONF / "envs" / f"{name}.yaml")
        env_fn = instantiate(cfg, _partial_=True, width=32, height=32)
        env = env_fn()
        try:
            assert isinstance(env.unwrapped, cls)
            assert env.spec is None or env.spec.max_episode_steps in (None, steps)
            assert env._max_episode_steps == steps
        finally:
            env.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 2}, "n (vertices per cloth side) must be an int >= 3"),
        ({"fold": "zigzag"}, "fold must be one of"),
        ({"width": 0}, "width and height must be positive"),
        ({"render_mode": "human"}, "render_mode must be 'rgb_array' or None"),
        ({"size": 2.0}, "size must be <= 0.6"),
        ({"success_threshold": -1}, "success_threshold must be a positive number"),
        ({"frame_skip": 0}, "frame_skip must be an int >= 1"),
        ({"workspace": ((0, 0, 0), (0, 1, 1))}, "workspace must be"),
        ({"start": "corner"}, "start must be one of"),
        ({"start_offset": -0.01}, "start_offset must be >= 0"),
        ({"start_grasped": True}, "start_grasped needs start='vertex'"),
        ({"start": "vertex", "hold": True}, "hold needs start_grasped=true"),
    ],
)
def test_bad_fold_arguments_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ClothFoldEnv(**kwargs)


def test_bad_inputs_raise(fold_env):
    with pytest.raises(ValueError, match="max_episode_steps must be an int >= 1"):
        make_cloth_fold(max_episode_steps=0)
    with pytest.raises(ValueError, match="success_threshold must be in"):
        ClothSpreadEnv(success_threshold=1.5)
    with pytest.raises(ValueError, match="initial_fold must be one of"):
        ClothSpreadEnv(initial_fold="crumple")
    fold_env.reset(seed=0)
    with pytest.raises(ValueError, match="action must have 4 entries"):
        fold_env.step(np.zeros(3))
    with pytest.raises(ValueError, match="action must be finite"):
        fold_env.step(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="positions must be finite with shape"):
        fold_env.set_cloth_positions(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        ScriptedFoldPolicy(fold_env, noise=-0.1)
    with pytest.raises(ValueError, match="noise > 0 needs rng"):
        ScriptedFoldPolicy(fold_env, noise=0.1)
    with pytest.raises(TypeError, match="ScriptedSpreadPolicy needs a ClothSpreadEnv"):
        ScriptedSpreadPolicy(fold_env)


def test_env_built_after_another_was_closed_still_renders():
    first = ClothFoldEnv(width=32, height=32)
    first.reset(seed=0)
    first.close()
    second = ClothSpreadEnv(width=32, height=32)
    try:
        _, info = second.reset(seed=0)
        assert not is_blank(info["frame"])
        assert not is_blank(second.step(np.zeros(4))[4]["frame"])
    finally:
        second.close()


def task_env(task: str):
    """The env of the CPU-sized SAC task ``experiments/_base/cloth_<task>_task.yaml``, 32x32 frames."""
    cfg = OmegaConf.merge(
        OmegaConf.load(CONF / "envs" / f"cloth_{task}.yaml"),
        OmegaConf.load(ASSETS.parent.parent / "experiments" / "_base" / f"cloth_{task}_task.yaml").envs,
    )
    return instantiate(cfg, width=32, height=32)


def drag(env, target_of, steps: int):
    """Close on the start vertex and drag it, at table height, toward ``target_of(env)``; the last step's info."""
    for _ in range(steps):
        delta = (target_of(env) - env.gripper_pos)[:2] / env.max_displacement
        _, _, _, _, info = env.step(np.array([*np.clip(delta, -1, 1), 0.0, 1.0], dtype=np.float32))
    return info


@pytest.mark.parametrize("task", ["fold", "spread"])
def test_the_cpu_sized_tasks_start_at_their_grasp_and_one_drag_solves_them(task):
    """The SAC task set-ups: the gripper starts at the vertex the task moves, and dragging it home succeeds."""
    env = task_env(task)
    inner = env.unwrapped
    n = inner.n
    try:
        wins = 0
        for seed in range(4):
            obs, info = env.reset(seed=seed)
            assert not info["is_success"]
            k = inner.start_vertex()
            assert (
                np.linalg.norm(inner.gripper_pos[:2] - inner.cloth_positions[k, :2]) <= inner.start_offset * 1.5 + 1e-4
            )
            if task == "fold":
                assert k == n - 1  # the corner the diagonal fold carries
                target = lambda e: e.cloth_positions[(n - 1) * n]  # noqa: E731
            else:
                assert k == n - 1  # the folded corner
                assert inner.start_grasped and inner._grasped == k  # held from the start
                flat = inner.reset_positions[k].copy()
                assert np.linalg.norm(inner.cloth_positions[k, :2] - flat[:2]) > 0.2  # folded far off its place
                target = lambda e, flat=flat: flat  # noqa: E731
            drag(inner, target, 1)
            assert inner._grasped == k  # the start vertex itself, not a vertex of the layer beneath
            info = drag(inner, target, 24)
            wins += info["is_success"]
        assert wins == 4
    finally:
        env.close()


def test_spread_distance_weight_rewards_the_first_steps_of_an_unfold_where_coverage_is_flat():
    env = task_env("spread")
    inner = env.unwrapped
    try:
        _, info = env.reset(seed=0)
        assert inner.distance_weight > 0
        assert info["env_reward"] == pytest.approx(info["gt_metric"] - inner.distance_weight * inner.flat_distance())
        assert inner.flat_distance() > 0.03  # the flap lies far from its flat place
        flat = inner.reset_positions[inner.start_vertex()].copy()
        first = drag(inner, lambda e: flat, 2)  # the flap still lies over the cloth beneath
        coverage_gain, reward_gain = first["gt_metric"] - info["gt_metric"], first["env_reward"] - info["env_reward"]
        assert coverage_gain < 0.005  # coverage has hardly moved ...
        assert reward_gain > 0.01  # ... the reward has
        inner.distance_weight = 0.0
        assert inner.reward_from_metric(0.8) == 0.8  # weight 0: the reward is the coverage alone
    finally:
        env.close()
    with pytest.raises(ValueError, match="distance_weight must be >= 0"):
        ClothSpreadEnv(distance_weight=-1.0)


@pytest.mark.parametrize("hold", [False, True])
def test_hold_keeps_the_start_grasp_whatever_a3_says(hold):
    """With ``hold`` an open command (a[3] <= 0) leaves the flap held and a drag with it still spreads."""
    env = task_env("spread")
    inner = env.unwrapped
    inner.hold = hold
    try:
        env.reset(seed=1)
        k = inner.start_vertex()
        flat = inner.reset_positions[k].copy()
        for _ in range(24):
            delta = (flat - inner.gripper_pos)[:2] / inner.max_displacement
            _, _, _, _, info = env.step(np.array([*np.clip(delta, -1, 1), 0.0, -1.0], dtype=np.float32))
        assert info["grasping"] is hold
        assert info["is_success"] is hold  # let go at the first step, the gripper drags nothing
    finally:
        env.close()
