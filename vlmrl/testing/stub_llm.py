"""A scripted OpenAI-compatible endpoint that fails the ways real ones do, for fault-injection tests and benchmarks.

It answers ``/v1/models``, ``/v1/completions`` (with ``logprobs``) and ``/v1/chat/completions`` about NetHack
messages: a message is "progress" when it contains one of :data:`PROGRESS_WORDS`. A ``faults`` script,
cycled per request, makes requests fail with a timeout, HTTP 429 or 500, a malformed body or a dropped
connection; with ``context_chars`` over-long prompts are refused with 400, as llama.cpp does. Every answer
actually delivered is counted per message in :attr:`StubEndpoint.paid`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vlmrl.web import WebServer, drop_connection, harden

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


class StubEndpoint(WebServer):
    """The endpoint, served from a thread on 127.0.0.1 (FastAPI + uvicorn).

    Args:
        faults: per-request behaviours cycled in order, from :data:`FAULTS`.
        latency: seconds each answered request takes (per prompt, like a CPU-bound model).
        hang: seconds a ``timeout`` request hangs before dropping the connection unanswered.
        free_text: the chat answer format: ``"label"`` (``<label>yes</label>``) or ``"ramble"`` (no label).
        context_chars: prompts longer than this are refused with 400, as llama.cpp refuses prompts longer
            than its context (``None``: no limit).

    Attributes:
        paid: answers delivered, per message.
        seen: requests received, per message (answered or not).
        requests: POST requests received.
    """

    def __init__(self, faults: tuple[str, ...] = ("ok",), latency: float = 0.0, hang: float = 2.0,
                 free_text: str = "label", context_chars: int | None = None):  # fmt: skip
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {unknown}: use {FAULTS}")
        self.faults, self.latency, self.hang, self.free_text = tuple(faults), latency, hang, free_text
        self.context_chars = context_chars
        self.paid: Counter[str] = Counter()
        self.requests = 0
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._compute = threading.Lock()  # one request computes at a time, like a single llama.cpp worker
        super().__init__(self._build_app(), name="stub-llm")

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (``http://host:port/v1``), what an OpenAI client takes."""
        return f"{self.url}/v1"

    def _build_app(self) -> FastAPI:
        app = harden(FastAPI(openapi_url=None, docs_url=None, redoc_url=None), max_body=16 << 20)

        @app.get("/{path:path}")
        async def models(path: str) -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "stub", "object": "model"}]}

        @app.post("/{path:path}")
        async def complete(path: str, request: Request) -> Response:
            try:
                req = json.loads(await request.body())
            except ValueError:
                return JSONResponse({"error": {"message": "body is not JSON", "type": "invalid"}}, 400)
            return await run_in_threadpool(self._respond, request, "/" + path, req)

        return app

    def _next_fault(self) -> str:
        with self._lock:
            fault = self.faults[self.requests % len(self.faults)]
            self.requests += 1
        return fault

    def _prompts(self, path: str, req: dict[str, Any]) -> list[str]:
        if path.endswith("/chat/completions"):
            return [req["messages"][-1]["content"]]
        return req["prompt"] if isinstance(req["prompt"], list) else [req["prompt"]]

    def _respond(self, request: Request, path: str, req: dict[str, Any]) -> Response:
        """A completion or chat completion, unless the prompt is too long or the next scripted fault says otherwise."""
        prompts = self._prompts(path, req)
        with self._lock:
            self.seen.update(_message_of(p) for p in prompts)
        longest = max(len(p) for p in prompts)
        if self.context_chars is not None and longest > self.context_chars:
            detail = f"Requested tokens ({longest}) exceed context window of {self.context_chars}"
            return JSONResponse({"error": {"message": detail, "type": "invalid_request_error"}}, 400)
        fault = self._next_fault()
        if fault == "timeout":
            time.sleep(self.hang)
            drop_connection(request)
            return Response()
        if fault == "drop":
            drop_connection(request)
            return Response()
        if fault in ("429", "500"):
            err = {"error": {"message": "busy" if fault == "429" else "internal", "type": "server"}}
            return JSONResponse(err, int(fault))
        if fault == "malformed":
            return Response(b'{"choices": [{"index": 0, "text": ', media_type="application/json")
        if fault == "garbage":
            return JSONResponse({"object": "text_completion", "choices": []})
        body, messages = self._answer(path, req)
        with self._compute:
            time.sleep(self.latency * len(messages))
        with self._lock:
            self.paid.update(messages)
        return JSONResponse(body)

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
