import json
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from vlmrl.runs import CONTRACT_KEYS, EpisodeTracker, LabelStats, RunFolder, atomic_path, latest_checkpoint, write_json


def test_latest_checkpoint_is_the_numerically_largest_step(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    assert latest_checkpoint(tmp_path) is None
    for name in ("step_96.zip", "step_144.zip", "step_1000.pt", ".step_5000.123.tmp.zip", "step_x.zip"):
        (ckpt / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "step_1000.pt"
    assert latest_checkpoint(tmp_path, (".zip",)).name == "step_144.zip"
    assert RunFolder(tmp_path).latest_checkpoint((".zip",)).name == "step_144.zip"


def test_resume_picks_the_newest_run_that_has_a_checkpoint(tmp_path):
    cfg = OmegaConf.create({"run_dir": None, "runs_root": str(tmp_path), "name": "x", "resume": True})
    for stamp, ckpt in (("20260101-000000", True), ("20260102-000000", False)):
        run = tmp_path / "x" / stamp
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text("{}")
        if ckpt:
            (run / "checkpoints" / "step_8.zip").write_bytes(b"")
    assert RunFolder.for_job(cfg).path.name == "20260101-000000"  # the newer one crashed before its first checkpoint
    cfg.resume = False
    fresh = RunFolder.for_job(cfg)
    assert fresh.path.parent == tmp_path / "x" and not fresh.path.exists()
    cfg.run_dir = str(tmp_path / "given")
    assert RunFolder.for_job(cfg).path == tmp_path / "given"


def test_open_finds_the_newest_run_and_names_the_fix(tmp_path):
    for stamp in ("20260101-000000", "20260102-000000"):
        (tmp_path / "x" / stamp).mkdir(parents=True)
        (tmp_path / "x" / stamp / "metrics.jsonl").write_text("")
    assert RunFolder.open(tmp_path / "x").path.name == "20260102-000000"
    assert RunFolder.open(tmp_path / "x" / "20260101-000000").path.name == "20260101-000000"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RunFolder.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no run"):
        RunFolder.open(tmp_path / "empty")


def test_log_metrics_writes_every_contract_key_and_the_extras(tmp_path):
    run = RunFolder(tmp_path / "run")
    tracker = EpisodeTracker()
    tracker.add(np.ones((3, 2)), np.full((3, 2), 0.5), np.array([[0, 0], [0, 1], [1, 0]], bool))
    run.log_metrics(256, 1.0, 0.5, episodes=2, returns=tracker.means(), clip_ms_per_frame=1.5, fps=np.float32(40))
    run.log_metrics(512, 2.0, 0.25, episodes=0)  # no finished episode yet: no return means
    rows, bad = run.read_metrics()
    assert bad == 0 and len(rows) == 2
    assert set(CONTRACT_KEYS) <= set(rows[0])
    assert rows[0]["ep_env_return_mean"] == pytest.approx(2.5) and rows[0]["ep_model_return_mean"] == 1.25
    assert rows[0]["clip_ms_per_frame"] == 1.5 and rows[0]["fps"] == 40.0
    assert rows[1]["step"] == 512 and "ep_env_return_mean" not in rows[1]
    assert [json.loads(line)["step"] for line in run.metrics_path.read_text().splitlines()] == [256, 512]


def test_write_result_and_read_result_round_trip(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.read_result() is None
    written = run.write_result({"total_timesteps": 2048, "final_ep_env_return_mean": np.float64(1.5)})
    assert (
        run.read_result()
        == written
        == {
            "run_dir": str(run.path),
            "total_timesteps": 2048,
            "final_ep_env_return_mean": 1.5,
        }
    )


def test_label_stats_round_trip_and_unknown_keys_go_to_extra(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.read_label_stats() is None
    stats = LabelStats("vlm:gpt-4o", queries=10, paid=7, cache_hits=3, valid=9, judged=8, correct=6, budget=20)
    stats.extra["history"] = [{"step": 64, "train_loss": 0.5}]
    run.write_label_stats(stats)
    back = run.read_label_stats()
    assert back == stats and back.accuracy == 0.75
    assert json.loads(run.label_stats_path.read_text())["accuracy"] == 0.75
    # A file from an older writer: the typed fields it has are read, everything else lands in extra.
    write_json(run.label_stats_path, {"queries": 4, "labels_known": 12, "server": {"queue": 3}, "accuracy": 0.5})
    old = run.read_label_stats()
    assert old.queries == 4 and old.extra == {"labels_known": 12, "server": {"queue": 3}}
    assert math.isnan(old.accuracy)  # nothing judged; the stored accuracy is not trusted


def test_atomic_path_keeps_the_suffix_and_the_old_file_when_the_writer_raises(tmp_path):
    target = tmp_path / "data.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".npz" and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]  # no temporary file left
    with atomic_path(target) as tmp:
        np.savez(tmp, x=np.arange(3))
    assert np.load(target)["x"].tolist() == [0, 1, 2] and len(list(tmp_path.iterdir())) == 1
