"""Child processes of the annotation server die with it, and a restart never leaves two."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from vlmrl.annotation.backends import LlamaCppServer, start_child, stop_child

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def parent_with_child(pidfile=None, die_with_parent=True) -> tuple[subprocess.Popen, int]:
    """A Python process that starts a sleeping child and waits; returns it and the child's pid."""
    script = textwrap.dedent(f"""
        import sys, time
        from vlmrl.annotation.backends import start_child
        child = start_child({SLEEPER!r}, pidfile={None if pidfile is None else str(pidfile)!r},
                            die_with_parent={die_with_parent})
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    return parent, int(parent.stdout.readline())


def test_a_child_dies_with_its_parent_on_kill_9():
    parent, child = parent_with_child()
    try:
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_gone(child), "the child outlived its parent"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_started_from_a_short_lived_thread_outlives_the_thread():
    started = []
    thread = threading.Thread(target=lambda: started.append(start_child(SLEEPER)))
    thread.start()
    thread.join()
    time.sleep(0.5)  # PR_SET_PDEATHSIG fires when the creating thread ends: it must not be this one
    assert started[0].poll() is None
    stop_child(started[0])
    assert started[0].poll() is not None


def test_a_stale_child_of_a_dead_owner_is_killed_at_the_next_start(tmp_path):
    pidfile = tmp_path / "backend.pid"
    parent, stale = parent_with_child(pidfile, die_with_parent=False)  # what the old code left behind
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        assert alive(stale) and json.loads(pidfile.read_text())["pid"] == stale
        child = start_child(SLEEPER, pidfile=pidfile)
        assert wait_gone(stale, timeout=10) and child.poll() is None
        assert json.loads(pidfile.read_text())["pid"] == child.pid
        stop_child(child, pidfile=pidfile)
        assert not pidfile.exists()
    finally:
        if alive(stale):
            os.kill(stale, signal.SIGKILL)


def test_a_child_of_a_live_owner_is_left_alone(tmp_path):
    pidfile = tmp_path / "backend.pid"
    parent, other = parent_with_child(pidfile)
    try:
        child = start_child(SLEEPER, pidfile=pidfile)  # another live server owns the recorded one
        time.sleep(0.3)
        assert alive(other) and child.poll() is None
        stop_child(child, pidfile=pidfile)
    finally:
        parent.kill()
        parent.wait()
    assert wait_gone(other)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the llm extra")
def test_llama_server_start_reaps_the_stale_one_first(tmp_path):
    pidfile = tmp_path / "llama.pid"
    parent, stale = parent_with_child(pidfile, die_with_parent=False)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    fake = tmp_path / "broken.gguf"
    fake.write_bytes(b"not a model")
    try:
        with pytest.raises(RuntimeError, match="exited"):
            LlamaCppServer(model_path=fake, pidfile=pidfile, startup_timeout=120).start()
        assert wait_gone(stale)
        assert not pidfile.exists()  # the failed start cleaned up after itself
    finally:
        if alive(stale):
            os.kill(stale, signal.SIGKILL)
