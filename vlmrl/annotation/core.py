"""The annotation server's core, without HTTP: dedup, the durable queue, the label store and the LLM worker.

:meth:`AnnotationCore.submit` deduplicates messages against the label store and the queue and returns at once;
a worker thread sends the newest pending messages in batches to the LLM judge. With no endpoint the judge
scores in this process (:class:`~vlmrl.annotation.backends.LlamaCppScorer`; ``embedded.mode: server`` starts
llama.cpp's HTTP server in a child process instead). :meth:`~AnnotationCore.labels`
returns what is known (``None`` = not labeled yet: the caller uses a neutral reward) and
:meth:`~AnnotationCore.stats` reports queue length, labels/s, cache hit rate, parse failures and backend
errors. Failed requests (timeouts, 429, 5xx, dropped connections, malformed answers) leave their messages
queued and back the worker off exponentially; every answer is committed before its message leaves the queue.
A message the backend refuses for good (a 4xx other than 429, e.g. longer than the model's context) moves to
the store's dead-letter table with the error and is not asked again; messages longer than
``max_message_chars`` are refused at submission (:class:`ValueError`; HTTP 422).

A process that hosts the core talks to it through :class:`~vlmrl.annotation.client.DirectClient`;
:class:`~vlmrl.annotation.server.AnnotationServer` puts an HTTP front on it for other processes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from vlmrl.annotation.backends import LlamaCppScorer, LlamaCppServer, start_embedded
from vlmrl.annotation.store import AnnotationStore
from vlmrl.labelers.llm import LLMJudge, Refusal
from vlmrl.types import Label

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_CHARS = 4096  # NetHack's message line is at most 256 bytes


def message_too_long(index: int, length: int, limit: int) -> str:
    """The error for an over-long message (the same from the core and its HTTP front)."""
    return (
        f"message {index} has {length} characters, over the limit of {limit} characters: "
        "shorten it, or raise the server's max_message_chars"
    )


class AnnotationCore:
    """Queue, label store and LLM worker, in this process; a context manager.

    Args:
        labeler: the judge that labels batches (its endpoint is set here when ``endpoint`` or embedded).
        store_path: SQLite label store; ``None`` keeps labels in memory only.
        endpoint: OpenAI-compatible base URL; ``None`` starts the embedded LLM unless the judge already has
            a backend.
        embedded: options of the embedded LLM (:func:`~vlmrl.annotation.backends.start_embedded`): ``mode``
            (``inprocess``, default, or ``server``) and the backend's keyword arguments.
        batch_size: messages sent to the judge per batch (ONI: 100).
        max_backoff: cap, in seconds, of the pause after failed batches.
        max_message_chars: longest message accepted; longer ones are refused at submission.
    """

    def __init__(
        self,
        labeler: LLMJudge,
        store_path: str | Path | None = None,
        endpoint: str | None = None,
        embedded: dict[str, Any] | None = None,
        batch_size: int = 32,
        max_backoff: float = 30.0,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}: pass batch_size=32")
        if max_message_chars < 1:
            raise ValueError(f"max_message_chars must be >= 1, got {max_message_chars}: pass 4096")
        self.labeler = labeler
        self.store_path = store_path
        self.endpoint = endpoint
        self.embedded_kwargs = dict(embedded or {})
        self.batch_size = int(batch_size)
        self.max_backoff = max_backoff
        self.max_message_chars = int(max_message_chars)
        self.backend: LlamaCppScorer | LlamaCppServer | None = None
        self.store: AnnotationStore | None = None
        self.counters: Counter[str] = Counter()
        self._label_times: deque[float] = deque(maxlen=4096)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.started = 0.0
        self._saved_calibration: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> AnnotationCore:
        """Connect (or start) the backend, open the store and start the worker; returns self."""
        if self.endpoint:
            self.labeler.connect(self.endpoint)
        elif not self.labeler.connected:
            kwargs = dict(self.embedded_kwargs)
            if self.store_path is not None and kwargs.get("mode") == "server":
                store = Path(self.store_path)  # recorded beside the store: the next start kills a stale one
                kwargs.setdefault("pidfile", store.with_name(f"{store.name}.llama.pid"))
            self.backend = start_embedded(**kwargs)
            if isinstance(self.backend, LlamaCppServer):
                self.labeler.connect(self.backend.base_url)
            else:
                self.labeler.attach(self.backend)
        self.store = AnnotationStore(self.store_path, self.labeler.name, self.labeler.model_id, self.labeler.template)
        # Calibration answers were paid for too: reuse them.
        self.labeler.set_calibration(self.store.get_state("calibration") or {})
        self._saved_calibration = self.labeler.calibration
        self.started = time.time()
        self._worker = threading.Thread(target=self._work, name="annotation-worker", daemon=True)
        self._worker.start()
        if self.store.pending:
            self._wake.set()
        return self

    def stop(self) -> None:
        """Stop the worker; the batch in flight finishes (and is stored) first. Pending items stay queued on disk."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=max(5.0, self.labeler.timeout * 2))
        self.labeler.close()
        if self.backend is not None:
            self.backend.stop()
        if self.store is not None:
            self.store.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ API
    def submit(self, messages: list[str]) -> dict[str, int]:
        """Queue messages for labeling (durably) and return at once: ``{"accepted", "new", "known"}``.

        Raises:
            ValueError: a message is longer than ``max_message_chars`` (then nothing is queued).
        """
        messages = [m for m in messages if isinstance(m, str) and m]
        for i, m in enumerate(messages):
            if len(m) > self.max_message_chars:
                raise ValueError(message_too_long(i, len(m), self.max_message_chars))
        new, known = self.store.add(messages)
        self.counters["submitted"] += len(messages)
        self.counters["submitted_known"] += known
        if new:
            self._wake.set()
        return {"accepted": len(messages), "new": new, "known": known}

    def labels(self, messages: list[str]) -> dict[str, int | None]:
        """Known label of each message: 1 helpful, 0 not, -1 unparseable, ``None`` while unlabeled."""
        return self.store.lookup(messages)

    def stats(self) -> dict[str, Any]:
        """Queue length, labels/s, cache hit rate, parse failures and backend errors."""
        now = time.time()
        recent = [t for t in self._label_times if t > now - 60.0]
        span = min(60.0, max(now - self.started, 1e-9))
        submitted = self.counters["submitted"]
        return {
            "queue": len(self.store.pending),
            "in_flight": len(self.store.in_flight),
            "labels": len(self.store.labels),
            "labeled_here": self.counters["labeled"],
            "positive": sum(v == 1 for v in self.store.labels.values()),
            "labels_per_s": len(recent) / span,
            "labels_per_s_total": self.counters["labeled"] / max(now - self.started, 1e-9),
            "submitted": submitted,
            "cache_hit_rate": self.counters["submitted_known"] / submitted if submitted else 0.0,
            "parse_failures": self.counters["parse_failures"],
            "backend_requests": self.labeler.requests,
            "backend_errors": dict(self.labeler.errors),
            "failed_batches": self.counters["failed_batches"],
            "dead_letters": len(self.store.dead),
            "threshold": self.labeler.threshold,
            "model": self.labeler.model_id,
            "uptime_s": now - self.started,
        }

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the queue is empty (tests, benchmarks); ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.store.pending:
                return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            batch = self.store.take(self.batch_size)
            if not batch:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                results = self.labeler.attempt(batch)
            except Exception:  # noqa: BLE001 - the worker must survive anything the backend does
                log.exception("annotation batch failed")
                results = [None] * len(batch)
            # A refusal is final only once the backend has answered something: an endpoint that refuses
            # everything is misconfigured, and its messages wait for the fix instead of being dropped.
            final = self.labeler.answered > 0
            answered, refused, failed = [], [], []
            for m, r in zip(batch, results, strict=True):
                if isinstance(r, Label):
                    answered.append((m, r))
                elif isinstance(r, Refusal) and final:
                    refused.append((m, r.error))
                else:
                    failed.append(m)
            self.store.put(answered)
            self.store.put_dead(refused)
            self.store.release(failed)
            for m, error in refused:
                log.warning("backend refused a message for good (dead-lettered, %d chars): %s", len(m), error[:300])
            calibration = self.labeler.calibration
            if calibration != self._saved_calibration:
                self.store.set_state("calibration", calibration)
                self._saved_calibration = calibration
            now = time.time()
            self._label_times.extend([now] * len(answered))
            self.counters["labeled"] += len(answered)
            self.counters["parse_failures"] += sum(lab.value == -1 for _, lab in answered)
            if failed:
                self.counters["failed_batches"] += 1
                backoff = min(self.max_backoff, max(0.05, backoff * 2))
                self._stop.wait(backoff)
            else:
                backoff = 0.0
