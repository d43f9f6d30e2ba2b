"""A local OpenAI-compatible chat endpoint that looks at the images, for tests, benchmarks and offline demos.

Stage-1 requests (with two images) are answered with an analysis computed by a pixel rule: the cloth is the
set of saturated pixels on a grey table, and the frame whose cloth covers fewer pixels is the more folded one.
Stage-2 requests (text only) turn that analysis into ``0``, ``1`` or ``-1``. Failures can be injected at
chosen rates (timeouts, 429, 500, malformed text) to test the client's retries.

Run one by hand with ``python -m vlmrl.testing.stub_vlm --port 8011 --latency 0.2``; it binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from vlmrl.web import WebServer, harden

FAILURE_KINDS = ("timeout", "429", "500", "malformed")


def cloth_pixel_fraction(frame: np.ndarray, min_saturation: int = 60) -> float:
    """Fraction of pixels that look like cloth: saturation ``max(rgb) - min(rgb) >= min_saturation``."""
    frame = np.asarray(frame).astype(np.int16)
    return float(((frame.max(-1) - frame.min(-1)) >= min_saturation).mean())


def foldedness(frame: np.ndarray) -> float:
    """Pixel rule for folding: the less table the cloth covers, the more folded it is (higher = better)."""
    return -cloth_pixel_fraction(frame)


def render_toy_cloth(fold: float, size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """A square red cloth on a grey table, folded along its diagonal by ``fold`` in [0, 1] (1 = in half).

    The corner flap ``u + v > 2 - fold`` is mirrored over the fold line and drawn darker (the underside),
    so the visible area is ``1 - fold**2 / 2`` of the square. ``rng`` jitters position and adds pixel noise.
    """
    if not 0.0 <= fold <= 1.0:
        raise ValueError(f"fold={fold}: must be in [0, 1]")
    img = np.full((size, size, 3), 128, np.float32)
    side = 0.6 * size
    off = np.array([0.2 * size, 0.2 * size])
    if rng is not None:
        off = off + rng.uniform(-0.1 * size, 0.1 * size, size=2)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    u, v = (xs - off[0]) / side, (ys - off[1]) / side
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    line = 2.0 - fold  # fold line u + v = line; the flap beyond it is mirrored onto the cloth
    flap = inside & (u + v > line)
    # Mirror of (u, v) across u + v = line is (line - v, line - u); pixels covered by the mirrored flap:
    mu, mv = line - v, line - u
    under = (mu >= 0) & (mu <= 1) & (mv >= 0) & (mv <= 1) & (mu + mv > line) & (u + v <= line)
    img[inside & ~flap] = (200, 40, 40)
    img[under] = (140, 20, 20)
    if rng is not None:
        img += rng.normal(0.0, 4.0, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def _decode_data_url(url: str) -> np.ndarray:
    b64 = url.split(",", 1)[1] if url.startswith("data:") else url
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


class StubVLMServer(WebServer):
    """OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 that answers with a pixel rule (FastAPI + uvicorn).

    Args:
        port: 0 picks a free port.
        latency: seconds each answer takes (simulates a remote model).
        failures: injected failure rates, e.g. ``{"429": 0.2, "500": 0.1, "timeout": 0.05,
            "malformed": 0.1}``;
            ``malformed`` answers stage 2 with text that has no label in it.
        timeout_sleep: how long a "timeout" request hangs before answering (longer than the client's timeout).
        score: pixel rule, higher = closer to the goal (default: :func:`foldedness`).
        margin: score differences below this are answered "unsure" (``-1``).
        rng: draws the injected failures.

    Attributes:
        counts: requests seen by kind (``"stage1"``, ``"stage2"``, ``"429"``, ``"500"``, ``"timeout"``,
            ``"malformed"``, ``"images"``, ``"total"``).
    """

    def __init__(
        self,
        port: int = 0,
        latency: float = 0.0,
        failures: dict[str, float] | None = None,
        timeout_sleep: float = 3.0,
        score: Callable[[np.ndarray], float] = foldedness,
        margin: float = 1e-3,
        rng: np.random.Generator | None = None,
    ):
        failures = dict(failures or {})
        unknown = set(failures) - set(FAILURE_KINDS)
        if unknown:
            raise ValueError(f"unknown failure kinds {sorted(unknown)}: use {', '.join(FAILURE_KINDS)}")
        if sum(failures.values()) > 1.0:
            raise ValueError(f"failure rates {failures} sum to more than 1")
        self.latency, self.failures, self.timeout_sleep = float(latency), failures, float(timeout_sleep)
        self.score, self.margin = score, float(margin)
        self.rng = rng or np.random.default_rng(0)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        super().__init__(self._build_app(), port=port, name="stub-vlm")

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (``http://host:port/v1``), what an OpenAI client takes."""
        return f"{self.url}/v1"

    def _build_app(self) -> FastAPI:
        app = harden(FastAPI(openapi_url=None, docs_url=None, redoc_url=None), max_body=64 << 20)

        @app.post("/{path:path}")
        async def chat(path: str, request: Request) -> JSONResponse:
            try:
                body = json.loads(await request.body())
            except ValueError:
                return JSONResponse({"error": {"message": "body is not JSON", "type": "invalid"}}, 400)
            if not path.rstrip("/").endswith("chat/completions"):
                return JSONResponse({"error": {"message": f"no route /{path}", "type": "invalid"}}, 404)
            status, answer = await run_in_threadpool(self.answer, body)
            return JSONResponse(answer, status)

        return app

    # ---- answering -----------------------------------------------------------------------------------------
    def _draw_failure(self) -> str | None:
        with self._lock:
            x = self.rng.random()
        acc = 0.0
        for kind in FAILURE_KINDS:
            acc += self.failures.get(kind, 0.0)
            if x < acc:
                return kind
        return None

    def answer(self, body: dict) -> tuple[int, dict]:
        """HTTP status and JSON body for one chat-completions request."""
        with self._lock:
            self.counts["total"] += 1
        failure = self._draw_failure()
        if failure == "timeout":
            with self._lock:
                self.counts["timeout"] += 1
            time.sleep(self.timeout_sleep)
        elif failure in ("429", "500"):
            with self._lock:
                self.counts[failure] += 1
            kind = "rate_limit_exceeded" if failure == "429" else "server_error"
            return int(failure), {"error": {"message": f"injected {failure}", "type": kind, "code": kind}}
        if self.latency:
            time.sleep(self.latency)
        images, texts = [], []
        for msg in body.get("messages", []):
            content = msg.get("content")
            if isinstance(content, str):
                texts.append(content)
                continue
            for part in content or []:
                if part.get("type") == "image_url":
                    images.append(_decode_data_url(part["image_url"]["url"]))
                elif part.get("type") == "text":
                    texts.append(part["text"])
        if images:
            with self._lock:
                self.counts["stage1"] += 1
                self.counts["images"] += len(images)
            if len(images) != 2:
                return 400, {"error": {"message": f"expected 2 images, got {len(images)}", "type": "invalid"}}
            s1, s2 = self.score(images[0]), self.score(images[1])
            if abs(s1 - s2) < self.margin:
                verdict = "There is no clear difference between the two images with respect to the goal."
            else:
                better = 1 if s1 > s2 else 2
                verdict = f"Image {better} is closer to achieving the goal."
            content = f"Image 1: cloth score {s1:.4f}. Image 2: cloth score {s2:.4f}. {verdict}"
        else:
            with self._lock:
                self.counts["stage2"] += 1
            if failure == "malformed":
                with self._lock:
                    self.counts["malformed"] += 1
                content = "I am not able to tell from this description, sorry."
            else:
                analysis = "\n".join(texts)
                m = re.search(r"Image (\d) is closer", analysis)
                content = {"1": "0", "2": "1"}[m.group(1)] if m else "-1"
        return 200, {
            "id": f"chatcmpl-stub{self.counts['total']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


def main() -> None:
    """Serve a stub endpoint until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = StubVLMServer(port=args.port, latency=args.latency)
    print(f"stub VLM endpoint at {server.base_url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
