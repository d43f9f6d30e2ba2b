import numpy as np
import pytest

from vlmrl.envs.humanoid import CAMERA, make_humanoid, textured_humanoid_xml
from vlmrl.envs.rendering import FastRenderer, is_blank


def step_frames(env, n, seed=0):
    _, info = env.reset(seed=seed)
    frames = [info["frame"]]
    for _ in range(n):
        _, r, term, trunc, info = env.step(env.action_space.sample())
        frames.append(info["frame"])
        assert info["env_reward"] == r
    return np.stack(frames)


def test_frames_are_rgb_batches_and_not_blank():
    env = make_humanoid(width=64, height=48, episode_length=10)
    f = step_frames(env, 3)
    assert f.dtype == np.uint8 and f.shape == (4, 48, 64, 3)
    assert not any(is_blank(x) for x in f)
    assert np.array_equal(env.render(), f[-1])
    # the body moves, so consecutive frames differ
    assert np.abs(f[0].astype(int) - f[-1].astype(int)).sum() > 0
    env.close()


def test_second_env_in_one_process_still_renders():
    a = make_humanoid(width=32, height=32, episode_length=5)
    fa = step_frames(a, 2)
    b = make_humanoid(width=32, height=32, episode_length=5)  # both alive
    fb = step_frames(b, 2)
    a.close()
    c = make_humanoid(width=32, height=32, episode_length=5)  # after one was closed
    fc = step_frames(c, 2)
    fb2 = step_frames(b, 2)
    for f in (fa, fb, fc, fb2):
        assert not any(is_blank(x) for x in f)
    b.close()
    c.close()


def test_episode_length_truncates_and_unhealthy_poses_do_not_terminate():
    env = make_humanoid(width=16, height=16, episode_length=7, emit_frames=False)
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, info = env.step(env.action_space.high)  # flails and falls
        steps += 1
        done = term or trunc
        assert "frame" not in info
    assert steps == 7 and trunc and not term


def test_textured_model_has_camera_sky_and_floor_texture():
    xml = textured_humanoid_xml().read_text()
    assert f'name="{CAMERA}"' in xml and 'type="skybox"' in xml and 'name="texplane"' in xml


def test_renderer_rejects_unknown_camera_and_bad_size():
    import mujoco

    model = mujoco.MjModel.from_xml_path(str(textured_humanoid_xml()))
    with pytest.raises(ValueError, match="no camera named"):
        FastRenderer(model, 32, 32, camera="nope")
    with pytest.raises(ValueError, match="positive"):
        FastRenderer(model, 0, 32)
    with pytest.raises(ValueError, match="episode_length"):
        make_humanoid(episode_length=0)
