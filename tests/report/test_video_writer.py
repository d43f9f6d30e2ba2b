import imageio.v2 as imageio
import numpy as np
import pytest

from vlmrl.report.video import reward_panel, write_video


def test_video_has_every_frame_with_the_curve_under_it(tmp_path):
    frames = np.zeros((12, 40, 60, 3), dtype=np.uint8)
    frames[:, :, :, 1] = 200  # green scene
    rewards = np.linspace(-1, 1, 12)
    path = write_video(tmp_path / "sub" / "v.mp4", frames, rewards, fps=10, title="t", episode_starts=[0, 6])
    assert path.exists() and not list(tmp_path.glob("sub/.*tmp*"))
    read = imageio.mimread(path)
    assert len(read) == 12
    h, w, _ = read[0].shape
    assert w == 60 and h > 40  # panel added below
    top = read[5][:40].astype(int)
    assert abs(top[..., 1].mean() - 200) < 10  # the scene survives encoding
    assert read[5][40:].mean() > 200  # light panel under it


def test_panel_marks_the_current_step():
    r = np.array([0.0, 1.0, 0.0, 1.0])
    a, b = reward_panel(r, 0, 80, 48), reward_panel(r, 3, 80, 48)
    assert a.shape == (48, 80, 3) and not np.array_equal(a, b)


def test_mismatched_rewards_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="one reward per frame"):
        write_video(tmp_path / "v.mp4", np.zeros((3, 8, 8, 3), np.uint8), np.zeros(2))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "v.mp4", np.zeros((3, 8, 8, 3), np.float32), np.zeros(3))
