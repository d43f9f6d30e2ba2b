"""The report in headless Chromium: every video decodes, the plots render, the screenshot is not blank."""

import numpy as np
import pytest
from PIL import Image

from vlmrl.report import browser
from vlmrl.report.run_report import write_report

pytestmark = pytest.mark.skipif(browser.find_chromium() is None, reason="chromium not installed")


def test_report_opens_in_chromium_with_videos_and_plots(preference_run_dir):
    page = write_report(preference_run_dir)
    dom = browser.dump_dom(page)
    assert browser.video_states(dom) == ["loaded", "loaded", "loaded"]
    assert 'data-videos-loaded="3"' in dom
    # Learning curves and the other logged metrics are inline SVG plots (the label counts are a table).
    assert 'data-plots="2"' in dom

    png = browser.screenshot(page, preference_run_dir / "report.png", width=1200, height=1800)
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape == (1800, 1200, 3)
    # Not blank: the page has dark text, coloured plot lines and video frames on a white background.
    assert img.std() > 20
    red_line = (img[..., 0] > 180) & (img[..., 1] < 80) & (img[..., 2] < 80)  # model curve, #d62728
    assert red_line.sum() > 100


def test_a_video_that_does_not_decode_is_reported(run_dir):
    write_report(run_dir, embed_video_mb=0)  # linked by relative path
    (run_dir / "videos" / "final.mp4").write_bytes(b"not an mp4")
    states = browser.video_states(browser.dump_dom(run_dir / "report.html"))
    assert states[0].startswith("error") and states[1:] == ["loaded", "loaded"]


def test_missing_chromium_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("VLMRL_CHROMIUM", str(tmp_path / "no-such-browser"))
    assert browser.find_chromium() is None
    with pytest.raises(FileNotFoundError, match="apt-get install -y chromium"):
        browser.dump_dom(tmp_path / "x.html")


@pytest.mark.slow
def test_report_of_a_real_training_run(tmp_path, capsys):
    """Train a few PPO rollouts on humanoid with the tiny CLIP reward, then open its report in Chromium."""
    pytest.importorskip("open_clip")
    from vlmrl import cli

    args = [
        "train",
        "experiments=humanoid_kneel",
        "labelers.model=vlmrl-tiny",
        "agents.total_timesteps=768",
        "agents.n_envs=2",
        "agents.n_steps=128",
        "agents.batch_size=128",
        "agents.progress_bar=false",
        "envs.width=64",
        "envs.height=64",
        f"runs_root={tmp_path}",
    ]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(["report", f"run_dir={tmp_path / 'humanoid_kneel'}", "screenshot=true"]) == 0
    (run,) = (tmp_path / "humanoid_kneel").iterdir()
    text = (run / "report.html").read_text()
    assert "Trained for 768 environment steps in 3 logged rollouts" in text
    assert "reward from CLIPReward (vlmrl-tiny)" in text
    dom = browser.dump_dom(run / "report.html")
    assert browser.video_states(dom) == ["loaded"]  # final.mp4 from vlmrl.report.video plays
    img = np.asarray(Image.open(run / "report.png").convert("RGB"))
    assert img.shape[1] == 1280 and img.shape[0] > 1500 and img.std() > 20
