"""A scripted OpenAI-compatible endpoint that fails the ways real ones do, for fault-injection tests and benchmarks.

It answers ``/v1/models``, ``/v1/completions`` (with ``logprobs``) and ``/v1/chat/completions`` about NetHack
messages: a message is "progress" when it contains one of :data:`PROGRESS_WORDS`. A ``faults`` script,
cycled per request, makes requests fail with a timeout, HTTP 429 or 500, a malformed body or a dropped
connection. Every answer actually delivered is counted per message in :attr:`StubEndpoint.paid`.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

from vlmrl.http_json import JsonHandler, JsonServer

PROGRESS_WORDS = ("gold", "kill", "level", "staircase")
FAULTS = ("ok", "timeout", "429", "500", "malformed", "garbage", "drop")
CONTENT_FREE_MARGIN = 0.5  # the stub's "prior bias": calibration must remove it


def _message_of(prompt: str) -> str:
    found = re.findall(r"Message: (.*)\nProgress:\s*$", prompt) or re.findall(r"<message>(.*)</message>", prompt, re.S)
    return found[-1] if found else prompt


def _margin(message: str) -> float:
    if message in ("N/A", "", "[MASK]"):
        return CONTENT_FREE_MARGIN
    return 2.0 if any(w in message.lower() for w in PROGRESS_WORDS) else -1.0


class StubEndpoint(JsonServer):
    """The endpoint, served from a thread on 127.0.0.1.

    Args:
        faults: per-request behaviours cycled in order, from :data:`FAULTS`.
        latency: seconds each answered request takes (per prompt, like a CPU-bound model).
        hang: seconds a ``timeout`` request hangs before dropping the connection unanswered.
        free_text: the chat answer format: ``"label"`` (``<label>yes</label>``) or ``"ramble"`` (no label).
    """

    def __init__(self, faults: tuple[str, ...] = ("ok",), latency: float = 0.0, hang: float = 2.0,
                 free_text: str = "label"):  # fmt: skip
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {unknown}: use {FAULTS}")
        self.faults, self.latency, self.hang, self.free_text = tuple(faults), latency, hang, free_text
        self.paid: Counter[str] = Counter()
        self.requests = 0
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._compute = threading.Lock()  # one request computes at a time, like a single llama.cpp worker
        super().__init__(_StubLLMHandler, name="stub-llm")

    def _next_fault(self) -> str:
        with self._lock:
            fault = self.faults[self.requests % len(self.faults)]
            self.requests += 1
        return fault

    def _answer(self, path: str, req: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        if path.endswith("/chat/completions"):
            message = _message_of(req["messages"][-1]["content"])
            word = "yes" if _margin(message) > CONTENT_FREE_MARGIN else "no"
            text = f"<analysis>ok</analysis> <label>{word}</label>" if self.free_text == "label" else "I think so."
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            body = {"id": "x", "object": "chat.completion", "created": 0, "model": "stub", "choices": [choice]}
            return body, [message]
        prompts = req["prompt"] if isinstance(req["prompt"], list) else [req["prompt"]]
        choices, messages = [], []
        for i, p in enumerate(prompts):
            message = _message_of(p)
            m = _margin(message)
            top = {" yes": -0.7 + m / 2, " no": -0.7 - m / 2, " the": -3.0}
            logprobs = {"tokens": [" yes"], "token_logprobs": [top[" yes"]], "top_logprobs": [top], "text_offset": [0]}
            choices.append({"index": i, "text": " yes", "finish_reason": "length", "logprobs": logprobs})
            messages.append(message)
        return {"id": "x", "object": "text_completion", "created": 0, "model": "stub", "choices": choices}, messages


class _StubLLMHandler(JsonHandler):
    """``GET`` lists the one model; ``POST`` answers, or fails as the :class:`StubEndpoint`'s script says."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """The model list (any path)."""
        self.send_json(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        """A completion or chat completion, unless the next scripted fault says otherwise."""
        stub: StubEndpoint = self.app
        try:
            req = self.read_json()
        except ValueError:
            return self.send_json(400, {"error": {"message": "body is not JSON", "type": "invalid"}})
        fault = stub._next_fault()
        if fault == "timeout":
            time.sleep(stub.hang)
            return self.drop_connection()
        if fault == "drop":
            return self.drop_connection()
        if fault in ("429", "500"):
            err = {"error": {"message": "busy" if fault == "429" else "internal", "type": "server"}}
            return self.send_json(int(fault), err)
        if fault == "malformed":
            return self.send_json(200, b'{"choices": [{"index": 0, "text": ')
        if fault == "garbage":
            return self.send_json(200, {"object": "text_completion", "choices": []})
        body, messages = stub._answer(self.path, req)
        with stub._compute:
            time.sleep(stub.latency * len(messages))
        self.send_json(200, body)
        with stub._lock:
            stub.paid.update(messages)
