"""Resumable jobs continue only the job they were, and failed jobs leave no empty run folder."""

import json
import time

import numpy as np
import pytest

from vlmrl.cli import main
from vlmrl.data import OfflineDataset
from vlmrl.data.storage import save_dataset

GFN = [
    "numberline_gflownet",
    "agents.encoder._target_=vlmrl.encoders.HashingEncoder",
    "~agents.encoder.model_name",
    "~agents.encoder.device",
    "agents.eval_episodes=1",
    "agents.checkpoint_every=1",
    "agents.video=false",
    "envs.max_number=3",
]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()  # stdout: the job's progress and result
    assert err.startswith("vlmrl: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_train_resumes_only_the_run_it_started(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *GFN, f"run_dir={run}", "agents.total_episodes=8"]) == 0
    config = (run / "config.yaml").read_text()

    assert main(["train", *GFN, f"run_dir={run}", "agents.total_episodes=8", "resume=true", "agents.lr=0.01"]) == 1
    err = one_line_error(capsys)
    assert "was started with other settings: agents.lr differs (agents.lr: 0.003 -> 0.01)" in err
    assert "pass resume=false" in err
    assert main(["train", *GFN, f"run_dir={run}", "agents.total_episodes=8", "seed=1"]) == 1  # no resume=true
    assert "already holds a run: pass resume=true" in one_line_error(capsys)
    assert (run / "config.yaml").read_text() == config and not (run / "FAILED").exists()

    # what does not shape the output may change: a longer budget, the device, the progress display
    assert main(["train", *GFN, f"run_dir={run}", "agents.total_episodes=16", "resume=true", "device=cpu"]) == 0
    assert json.loads((run / "result.json").read_text())["episodes"] == 16


def test_a_train_job_that_fails_before_its_first_checkpoint_leaves_no_run_folder(tmp_path, capsys):
    """labelers.pretrained=openai with no weights cached and no network (HF_HUB_OFFLINE=1, see conftest)."""
    t0 = time.perf_counter()
    code = main(
        ["train", "humanoid_kneel", "labelers.model=ViT-B-32", "labelers.pretrained=openai", f"runs_root={tmp_path}"]
    )
    assert code == 1 and time.perf_counter() - t0 < 30
    assert "CLIPWeightsUnavailable" in one_line_error(capsys)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_a_train_job_that_fails_later_is_marked_failed_until_it_resumes(tmp_path, capsys, monkeypatch):
    from vlmrl.agents.gflownet import GFlowNetAgent

    run = tmp_path / "run"
    original = GFlowNetAgent.train

    def fails_after_logging(self, ctx):
        ctx.run.log_metrics(1, 0.0, 0.0, 1)
        raise RuntimeError("the endpoint went away\nfor good")

    monkeypatch.setattr(GFlowNetAgent, "train", fails_after_logging)
    with pytest.raises(RuntimeError):
        main(["train", *GFN, f"run_dir={run}", "agents.total_episodes=8"])
    assert (run / "FAILED").read_text() == "RuntimeError: the endpoint went away for good\n"
    monkeypatch.setattr(GFlowNetAgent, "train", original)
    assert main(["train", *GFN, f"run_dir={run}", "agents.total_episodes=8", "resume=true"]) == 0
    assert not (run / "FAILED").exists() and (run / "result.json").exists()


def small_dataset(seed: int) -> OfflineDataset:
    rng = np.random.default_rng(seed)
    episodes, length = 4, 5
    n = episodes * length
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[length - 1 :: length] = True
    return OfflineDataset(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=obs[:, 0].copy(),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        frames=rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8),
        infos={"gt_metric": -obs[:, 0].copy()},
        metadata={"task": "toy"},
    )


def test_relabel_continues_only_the_same_relabeling(tmp_path, capsys):
    raw, out = tmp_path / "raw.npz", tmp_path / "relabeled.npz"
    save_dataset(small_dataset(0), raw)
    args = ["relabel", "labelers=teacher", f"relabel.dataset={raw}", f"relabel.out={out}", "relabel.pairs=10"]
    args += ["labelers.max_epochs=1", "labelers.image_size=16", "labelers.ensemble_size=1", "relabel.shard_size=8"]
    work, report = tmp_path / "relabeled.npz.work", tmp_path / "relabeled.report.json"
    assert main(args) == 0
    first = json.loads(report.read_text())
    assert first["labels"]["paid"] == 10 and (work / "fingerprint.json").exists()

    assert main([*args, "relabel.pairs=12"]) == 1  # used to reload the model fitted on 10 pairs
    err = one_line_error(capsys)
    assert "holds a relabeling with other settings: relabel.pairs differs (relabel.pairs: 10 -> 12)" in err
    assert "relabel.fresh=true" in err
    save_dataset(small_dataset(1), raw)  # another dataset at the same path
    assert main(args) == 1
    assert "dataset_content differs" in one_line_error(capsys)
    save_dataset(small_dataset(0), raw)
    assert main([*args, "relabel.keep_frames=false", "task=other"]) == 0  # applied to the output only: continues
    assert json.loads(report.read_text())["labels"]["paid"] == 0

    assert main([*args, "relabel.pairs=12", "relabel.fresh=true"]) == 0
    fresh = json.loads(report.read_text())
    assert fresh["labels"]["pairs"] == 12 and fresh["labels"]["cached"] > 0  # the label cache was kept
    assert json.loads((work / "fingerprint.json").read_text())["relabel.pairs"] == 12
