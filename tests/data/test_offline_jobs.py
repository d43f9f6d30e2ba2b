import json

import numpy as np

from vlmrl.cli import compose
from vlmrl.data import load_dataset
from vlmrl.jobs import collect as collect_job
from vlmrl.jobs import relabel as relabel_job


def test_collect_then_relabel_jobs_from_the_push_offline_experiment(tmp_path):
    raw, out = tmp_path / "raw.h5", tmp_path / "relabeled.h5"
    small_env = ["envs.max_episode_steps=8", "envs.width=32", "envs.height=32"]
    cfg = compose("collect", ["experiments=push_offline", f"collect.out={raw}", "collect.episodes=5", *small_env])
    summary = collect_job.main(cfg)
    assert summary["episodes"] == 5 and summary["transitions"] == 40
    assert raw.exists() and (tmp_path / "raw.summary.json").exists() and not (tmp_path / "raw.h5.work").exists()
    data = load_dataset(raw)
    assert data.metadata["task"] == "push the block onto the goal marker"
    assert data.frames.shape == (40, 32, 32, 3)

    overrides = [
        "experiments=push_offline",
        f"relabel.dataset={raw}",
        f"relabel.out={out}",
        "relabel.pairs=40",
        "labelers.max_epochs=2",
        "labelers.image_size=16",
        "labelers.ensemble_size=1",
    ]
    report = relabel_job.main(compose("relabel", overrides))
    assert report["labels"]["paid"] == 40
    assert {"spearman", "epic", "episode_spearman"} <= set(report["agreement"])
    relabeled = load_dataset(out)
    assert relabeled.frames is None  # the experiment drops frames from the relabeled copy
    np.testing.assert_array_equal(relabeled.infos["env_reward"], data.rewards)
    assert relabeled.metadata["relabeled_from"] == str(raw)
    with np.load(tmp_path / "relabeled.labels.npz") as labels:
        assert labels["first"].shape == (40, 1) and set(np.unique(labels["labels"])) <= {-1, 0, 1}
    assert json.loads((tmp_path / "relabeled.report.json").read_text())["out"] == str(out)

    again = relabel_job.main(compose("relabel", overrides))  # same command after a crash: nothing is paid twice
    assert again["labels"]["paid"] == 0 and again["labels"]["cached"] == 40
    np.testing.assert_allclose(load_dataset(out).rewards, relabeled.rewards, rtol=1e-6)

    # train: IQL on the learned rewards, BC and IQL on the true rewards, each evaluated on the true metric
    from vlmrl.jobs import train as train_job

    run = tmp_path / "run"
    small_iql = ["agents.steps=20", "agents.bc_steps=10", "agents.steps_per_epoch=10", "agents.eval_episodes=2"]
    result = train_job.main(
        compose(
            "train",
            ["experiments=push_offline", f"agents.dataset={out}", f"run_dir={run}", "agents.hidden_units=[16,16]"]
            + small_iql
            + small_env,
        )
    )
    assert set(result["variants"]) == {"iql", "bc", "iql_gt"} and result["transitions"] == 40
    assert all(0.0 <= v["gt_metric_mean"] < 1.0 and v["episodes"] == 2.0 for v in result["variants"].values())
    assert json.loads((run / "result.json").read_text())["variants"]["bc"]["steps"] == 10
    assert (run / "checkpoints" / "iql.d3").exists() and (run / "report.html").exists()
