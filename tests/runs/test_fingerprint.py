import json

import pytest
from omegaconf import OmegaConf

from vlmrl.runs import DifferentJob, RunFolder, check_fingerprint, job_fingerprint, refuse_if_different


def test_fingerprint_is_flat_resolved_and_leaves_out_what_does_not_shape_output():
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "device": "cuda",
            "run_dir": "/x",
            "resume": True,
            "envs": {"_target_": "make_push", "max_episode_steps": 40, "width": "${size}"},
            "size": 64,
            "agents": {"lr": 0.1, "progress_bar": True, "device": "${device}", "hidden": [8, 8]},
            "labelers": {"labeler": {"max_workers": 8, "timeout": 3.0, "model": "gpt"}, "label_cache": "/c"},
            "collect": {"out": "a.h5", "mixture": [{"policy": "expert", "noise": 0.1}]},
        }
    )
    fp = job_fingerprint(cfg, ignore=("collect.out",), extra={"data": {"hash": "ab"}})
    assert fp == {
        "seed": 0,
        "envs._target_": "make_push",
        "envs.max_episode_steps": 40,
        "envs.width": 64,
        "size": 64,
        "agents.lr": 0.1,
        "agents.hidden[0]": 8,
        "agents.hidden[1]": 8,
        "labelers.labeler.model": "gpt",
        "collect.mixture[0].policy": "expert",
        "collect.mixture[0].noise": 0.1,
        "data.hash": "ab",
    }
    assert (
        job_fingerprint(cfg, ignore=("agents", "collect.mixture[0]"))
        .keys()
        .isdisjoint({"agents.lr", "collect.mixture[0].noise"})
    )


def test_a_difference_is_one_line_naming_every_key_and_the_fix():
    old = {"a.x": 1, "a.y": [1, 2], "b": "same", "gone": 1}
    new = {"a.x": 2, "a.y": [1, 3], "b": "same", "added": True}
    with pytest.raises(DifferentJob) as err:
        refuse_if_different(old, new, "run r was started with other settings", "pass resume=false")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith("run r was started with other settings: a.x, a.y, added, gone differ (")
    assert "a.x: 1 -> 2" in msg and "added: (unset) -> true" in msg and "gone: 1 -> (unset)" in msg
    assert msg.endswith("; pass resume=false")
    refuse_if_different(old, dict(old), "same", "nothing to fix")  # equal: no error
    many = {f"k{i}": i for i in range(9)}
    with pytest.raises(DifferentJob, match=r"; and 5 more\); fix$"):
        refuse_if_different(many, {k: v + 1 for k, v in many.items()}, "w", "fix")


def test_check_fingerprint_stores_the_first_and_refuses_another_once_there_is_output(tmp_path):
    work = tmp_path / "work"
    path = check_fingerprint(work, {"a": 1, "b": 0.5}, "w", "fix", has_output=False)
    assert json.loads(path.read_text()) == {"a": 1, "b": 0.5}
    # nothing written yet (the first start failed early): a rerun with other settings just starts
    check_fingerprint(work, {"a": 1, "b": 0.75}, "w", "fix", has_output=False)
    check_fingerprint(work, {"a": 1, "b": 0.75}, "w", "fix", has_output=True)  # the same job continues
    with pytest.raises(DifferentJob, match=r"^w: b differs \(b: 0.75 -> 0.25\); fix$"):
        check_fingerprint(work, {"a": 1, "b": 0.25}, "w", "fix", has_output=True)
    assert json.loads(path.read_text())["b"] == 0.75  # a refused job stores nothing
    with pytest.raises(DifferentJob, match="settings are unknown"):
        check_fingerprint(tmp_path / "old", {"a": 1}, "w", "fix", has_output=True)


def test_a_failed_job_removes_the_folder_it_made_or_marks_the_one_it_keeps(tmp_path):
    fresh = RunFolder(tmp_path / "fresh")
    fresh.save_config(OmegaConf.create({"seed": 0}))
    (fresh.path / "checkpoints").mkdir()  # an empty folder is nothing kept
    assert fresh.record_failure(ValueError("bad\nvalue"), created=True) is None
    assert not fresh.path.exists()

    worked = RunFolder(tmp_path / "worked")
    worked.save_config(OmegaConf.create({"seed": 0}))
    worked.log_metrics(1, 0.0, 0.0, 0)
    assert worked.record_failure(ValueError("bad\nvalue"), created=True).read_text() == "ValueError: bad value\n"
    worked.clear_failure()
    assert not worked.failed_path.exists()

    resumed = RunFolder(tmp_path / "resumed")
    resumed.save_config(OmegaConf.create({"seed": 0}))
    assert resumed.record_failure(KeyboardInterrupt(), created=False).read_text() == "KeyboardInterrupt: interrupted\n"
