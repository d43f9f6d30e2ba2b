import json

import imageio.v2 as imageio
import numpy as np
import pytest

from vlmrl.cli import main
from vlmrl.envs.rendering import is_blank


def test_train_then_rollout_writes_checkpoint_tensorboard_and_videos(tmp_path, capsys):
    common = ["labelers.model=vlmrl-tiny", "envs.width=48", "envs.height=48", "envs.episode_length=20"]
    code = main(
        [
            "train",
            "humanoid_kneel",
            *common,
            "agents.total_timesteps=256",
            "agents.n_envs=2",
            "agents.n_steps=64",
            "agents.batch_size=64",
            "agents.n_epochs=1",
            "agents.checkpoint_every=128",
            "agents.video_every=128",
            "agents.progress_bar=false",
            f"runs_root={tmp_path}",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    run_dir = tmp_path / "humanoid_kneel"
    (run,) = list(run_dir.iterdir())
    assert result["run_dir"] == str(run)
    assert result["report"] == str(run / "report.html") and "<video" in (run / "report.html").read_text()
    assert sorted(p.name for p in (run / "checkpoints").glob("*.zip")) == ["step_128.zip", "step_256.zip"]
    assert list((run / "tb").rglob("events.out.tfevents.*"))
    assert (run / "videos" / "step_128.mp4").exists() and (run / "videos" / "final.mp4").exists()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [128, 256]
    assert all(np.isfinite(r["model_reward_mean"]) and np.isfinite(r["env_reward_mean"]) for r in rows)

    code = main(["rollout", f"checkpoint={run}", "episodes=2", f"out={tmp_path / 'r.mp4'}"])
    assert code == 0
    frames = imageio.mimread(tmp_path / "r.mp4")
    assert len(frames) == 2 * 20
    scene = np.stack(frames)[:, :48, :48]
    assert not any(is_blank(f) for f in scene)


def test_text_ppo_train_then_rollout_through_the_jobs(tmp_path, capsys):
    pytest.importorskip("sb3_contrib")
    hashing = [
        "agents.encoder._target_=vlmrl.encoders.HashingEncoder",
        "~agents.encoder.model_name",
        "~agents.encoder.device",
    ]
    budget = ["agents.total_timesteps=256", "agents.n_envs=2", "agents.n_steps=64", "agents.batch_size=64"]
    code = main(["train", "numberline_ppo", *hashing, *budget, "agents.eval_episodes=2", f"runs_root={tmp_path}"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    (run,) = list((tmp_path / "numberline_ppo").iterdir())
    assert json.loads((run / "result.json").read_text())["steps"] == result["steps"] == 256  # written by the job
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [128, 256] and all("success_rate" in r for r in rows)
    assert (run / "videos" / "final.mp4").stat().st_size > 1000

    code = main(["rollout", f"checkpoint={run}", "episodes=1", f"out={tmp_path / 'r.mp4'}"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == str(run / "checkpoints" / "step_256.zip")
    assert len(imageio.mimread(tmp_path / "r.mp4")) >= 2  # the reset screen and at least one step
