"""`vlmrl serve` and `vlmrl train nethack_oni_*` through the CLI, against the stub endpoint (no model needed)."""

import json
import sqlite3
import threading
import time

import pytest

from vlmrl.annotation.backends import free_port
from vlmrl.annotation.client import HttpClient
from vlmrl.cli import main as cli
from vlmrl.testing.stub_llm import StubEndpoint


def test_serve_job_answers_clients(tmp_path, capsys):
    port = free_port()
    with StubEndpoint() as stub:
        result = {}
        job = threading.Thread(target=lambda: result.update(code=cli([
            "serve", f"endpoint={stub.base_url}", f"port={port}", f"store_path={tmp_path / 'labels.sqlite'}",
            "duration_s=6", "labeler.timeout=2"])))  # fmt: skip
        job.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                client = HttpClient(f"http://127.0.0.1:{port}")
                client.stats()
                break
            except Exception:
                time.sleep(0.1)
        assert client.submit(["You kill the newt!", "It's a wall."])["new"] == 2
        while None in client.labels(["You kill the newt!", "It's a wall."]).values() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.labels(["You kill the newt!", "It's a wall."]) == {"You kill the newt!": 1, "It's a wall.": 0}
        client.close()
        job.join(timeout=30)
    assert result["code"] == 0 and f"annotation server on http://127.0.0.1:{port}" in capsys.readouterr().out


@pytest.mark.slow  # 30-50 s each: PPO on NetHack, checkpoints and a video
@pytest.mark.parametrize("variant", ["hashing", "ranking"])
def test_train_with_oni_reward_leaves_labels_checkpoint_and_video(tmp_path, variant):
    pytest.importorskip("nle")
    with StubEndpoint(latency=0.01) as stub:
        code = cli(["train", f"nethack_oni_{variant}", f"runs_root={tmp_path}", f"labelers.endpoint={stub.base_url}",
                    "agents.total_timesteps=1024", "agents.n_envs=2", "agents.n_steps=128", "agents.batch_size=128",
                    "agents.checkpoint_every=512", "agents.progress_bar=false", "envs.max_episode_steps=100",
                    "agents.video_episodes=1"])  # fmt: skip
    assert code == 0
    (run_dir,) = (tmp_path / f"nethack_oni_{variant}").iterdir()
    assert (run_dir / "checkpoints" / "step_1024.zip").exists()
    assert (run_dir / "checkpoints" / "step_1024" / "oni_state.json").exists()
    assert (run_dir / "videos" / "final.mp4").stat().st_size > 1000
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["oni/unique_messages"] > 1
    stats = json.loads((run_dir / "labels" / "stats.json").read_text())
    with sqlite3.connect(run_dir / "labels" / "labels.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    assert stored == stats["extra"]["server"]["labels"] > 0 and stats["valid"] > 0
    assert max(stub.paid.values()) == 1  # every message answered once
