from omegaconf import OmegaConf

from vlmrl.runs import latest_checkpoint, resolve_run_dir


def test_latest_checkpoint_is_the_numerically_largest_step(tmp_path):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    assert latest_checkpoint(tmp_path) is None
    for name in ("step_96.zip", "step_144.zip", "step_1000.pt", ".step_5000.123.tmp.zip", "step_x.zip"):
        (ckpt / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "step_1000.pt"
    assert latest_checkpoint(tmp_path, (".zip",)).name == "step_144.zip"


def test_resume_picks_the_newest_run_that_has_a_checkpoint(tmp_path):
    cfg = OmegaConf.create({"run_dir": None, "runs_root": str(tmp_path), "name": "x", "resume": True})
    for stamp, ckpt in (("20260101-000000", True), ("20260102-000000", False)):
        run = tmp_path / "x" / stamp
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text("{}")
        if ckpt:
            (run / "checkpoints" / "step_8.zip").write_bytes(b"")
    assert resolve_run_dir(cfg).name == "20260101-000000"  # the newer one crashed before its first checkpoint
    cfg.resume = False
    assert resolve_run_dir(cfg).parent == tmp_path / "x" and not resolve_run_dir(cfg).exists()
