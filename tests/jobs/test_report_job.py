"""`vlmrl report` through the CLI on a hand-written run folder."""

import json

import imageio.v2 as iio
import numpy as np

from vlmrl import cli


def _run_folder(root):
    run = root / "runs" / "demo" / "20261130-000000"
    (run / "videos").mkdir(parents=True)
    (run / "config.yaml").write_text("name: demo\nseed: 0\n")
    recs = [
        {
            "step": 128 * (i + 1),
            "time": float(i),
            "env_reward_mean": 0.1 * i,
            "model_reward_mean": 0.3 - 0.01 * i,
            "ep_env_return_mean": 10.0 * i,
            "ep_model_return_mean": 30.0 - i,
            "episodes": 1,
        }
        for i in range(4)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = 200
    iio.mimwrite(run / "videos" / "final.mp4", frames, fps=5, macro_block_size=16)
    return run


def test_report_job_writes_the_page(tmp_path, capsys):
    run = _run_folder(tmp_path)
    assert cli.main(["report", f"run_dir={run.parent}", "max_videos=1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["report"] == str(run / "report.html")
    text = (run / "report.html").read_text()
    assert text.count("<video") == 1 and "Trained for 512 environment steps" in text
    assert "opposite directions" in text  # env return rises while the model's falls


def test_report_job_without_run_dir_names_the_fix(capsys):
    assert cli.main(["report"]) != 0
    assert "pass run_dir=" in capsys.readouterr().err
