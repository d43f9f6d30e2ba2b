"""RL-VLM-F preference labels from any OpenAI-compatible vision-language endpoint.

Two-stage prompting (Wang et al. 2024): stage 1 shows the model two frames and the task goal and asks for an
analysis of which is closer to the goal; stage 2 asks (text only) to turn that analysis into ``0`` (image 1),
``1`` (image 2) or ``-1`` (unsure, dropped). Unlike the original's one-at-a-time loop, queries run in a
bounded thread pool under a per-endpoint rate limit, retry with exponential backoff on 429 / 5xx / timeouts,
and are yielded as each completes (:meth:`VLMPreferenceLabeler.label_as_completed`), so the one cache layer
(:class:`~vlmrl.labelers.cache.CachedLabeler`, keyed by :meth:`VLMPreferenceLabeler.cache_key`) stores every
answer before it is used: neither a crash nor a re-run pays for a label twice. Unparseable answers, endpoint
errors and budget refusals are failed labels (never cached, asked again by a later run).

Spend: every answer carries its cost (:class:`~vlmrl.types.Spend`: the endpoint's ``usage`` tokens, priced
by ``prices``); the cache layer records it under ``budget_key`` in the label file as it arrives (just before
the label), and the budgets (``max_queries``, ``max_spend``) are checked against that record before each pair
is sent, so they hold across resumes and across runs sharing the file. At most ``max_workers`` pairs are in
flight; those are all a kill can make a resumed run pay for twice. With ``swap_consistency`` each pair is also
asked with the images swapped and kept only when both answers agree (RL-VLM-F asks once).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import openai
import yaml
from PIL import Image

from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import LabelCache
from vlmrl.types import FragmentPair, Label, Spend

log = logging.getLogger(__name__)

PROMPT_DIR = Path(__file__).resolve().parent.parent / "assets" / "prompts" / "rlvlmf"
RETRYABLE = (
    openai.RateLimitError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.InternalServerError,
)
_LABEL_TOKEN = re.compile(r"(?<![\w.-])(-1|0|1)(?![\w]|\.\d)")


def parse_preference(text: str | None) -> int | None:
    """Stage-2 answer -> 0, 1 or -1; ``None`` when the text holds no single clear label.

    Accepts a bare label ("1", " -1.", "`0`") or prose where exactly one distinct label appears.
    """
    if not text:
        return None
    bare = text.strip().strip("`'\"*. \n")
    if bare in ("0", "1", "-1"):
        return int(bare)
    found = set(_LABEL_TOKEN.findall(text))
    return int(found.pop()) if len(found) == 1 else None


def encode_image(frame: np.ndarray, size: int | None = None) -> str:
    """``uint8 (H, W, 3)`` -> ``data:image/png;base64,...`` URL, optionally resized to ``size`` square."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
    img = Image.fromarray(frame)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def load_prompt(task: str, prompt_dir: str | Path | None = None) -> dict[str, str]:
    """Read the prompts of one task from ``<prompt_dir>/<task>.yaml``.

    Keys: ``goal``, ``stage1`` (uses ``{goal}``) and ``stage2`` (uses ``{goal}`` and ``{analysis}``).
    """
    folder = Path(prompt_dir) if prompt_dir else PROMPT_DIR
    path = folder / f"{task}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise FileNotFoundError(
            f"no RL-VLM-F prompt for task {task!r} at {path}: pick one of {known} or pass prompt_dir=<folder>"
        )
    prompt = yaml.safe_load(path.read_text())
    missing = {"goal", "stage1", "stage2"} - set(prompt or {})
    if missing:
        raise ValueError(f"prompt file {path} lacks keys {sorted(missing)}")
    return {k: str(prompt[k]) for k in ("goal", "stage1", "stage2")}


def price_table(prices: Mapping[str, Mapping[str, float]] | None) -> dict[str, tuple[float, float]]:
    """``{model: {prompt, completion}}`` in USD per million tokens -> ``{model: (prompt, completion)}``, checked."""
    table = {}
    for model, price in (prices or {}).items():
        try:
            prompt, completion = float(price["prompt"]), float(price["completion"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"prices.{model}={price!r}: give {{prompt: <USD per 1M tokens>, completion: <USD per 1M tokens>}}"
            ) from None
        if prompt < 0 or completion < 0:
            raise ValueError(f"prices.{model}: prices must be >= 0, got {prompt} / {completion}")
        table[str(model)] = (prompt, completion)
    return table


class _Tally:
    """What one pair's calls have cost so far; read when the pair ends, also when it ended in an error."""

    def __init__(self) -> None:
        self.spend = Spend()


class RateLimiter:
    """Token bucket shared by the threads calling one endpoint: ``rate`` requests/s, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int = 1):
        if rate <= 0:
            raise ValueError(f"rate={rate}: requests per second must be > 0 (or None for no limit)")
        self.rate, self.burst = float(rate), max(1, int(burst))
        self._tokens, self._last = float(self.burst), time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until a request may be sent."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait = (1.0 - self._tokens) / self.rate
            time.sleep(wait)


_LIMITERS: dict[tuple[str, float, int], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def endpoint_limiter(base_url: str, rate: float, burst: int) -> RateLimiter:
    """The process-wide limiter of one endpoint, so several labelers on it share the same budget."""
    with _LIMITERS_LOCK:
        key = (base_url, float(rate), int(burst))
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(rate, burst)
        return _LIMITERS[key]


class VLMPreferenceLabeler(Labeler):
    """Labels :class:`~vlmrl.types.FragmentPair` queries with a VLM (RL-VLM-F two-stage prompting).

    Each fragment is shown by its last frame (RL-VLM-F compares single frames). Pairs whose two frames are
    identical get -1 without a query; a pair asked twice in one batch is paid once. It caches nothing itself:
    wrap it in :class:`~vlmrl.labelers.cache.CachedLabeler` (the pipelines do, from ``label_cache``).

    Args:
        model: vision-language model name for stage 1 (e.g. ``gpt-4o``).
        task: prompt file ``assets/prompts/rlvlmf/<task>.yaml``.
        base_url: endpoint root (``None``: the OpenAI API); e.g. ``http://127.0.0.1:8000/v1`` for vLLM.
        api_key_env: name of the environment variable holding the key (never logged or stored). Local
            endpoints (127.0.0.1 / localhost) work without it.
        text_model: model for stage 2 (default: ``model``).
        prompt_dir: folder with ``<task>.yaml`` prompt files (default: the packaged ones).
        goal: overrides the prompt file's goal sentence.
        max_workers: concurrent queries (1 = sequential, the original's way).
        requests_per_second: per-endpoint rate limit (``None``: unlimited); ``burst`` requests may go at once.
        max_retries: retries per request on 429 / 5xx / timeouts / connection errors.
        backoff_base: first retry delay in seconds, doubled each retry (jittered, capped by ``backoff_max``);
            a 429's ``Retry-After`` header is honoured up to ``backoff_max``.
        timeout: per-request timeout in seconds.
        max_queries: spend budget in answered queries (pairs; a swap-checked pair is two), counted under
            ``budget_key`` in the label cache across runs (in memory without a cache); a pair that does not fit
            gets a failed -1 ("budget exhausted", not cached) and ``exhausted`` turns True. ``None``: no budget.
        max_spend: spend budget in USD under ``budget_key`` (needs ``prices`` for both models); checked before
            each pair against the recorded cost plus an estimate for the pairs in flight. ``None``: no budget.
        prices: ``{model: {prompt: USD, completion: USD}}`` per million tokens; turns each answer's ``usage``
            into ``cost_usd``. Models without a price cost 0.
        swap_consistency: ask each pair in both orders and keep the label only when the answers agree (else
            -1 with ``inconsistent``); doubles the queries. Part of the cache key.
        budget_key: where the spend is recorded and the budgets counted (default: ``name``); runs with the
            same cache and key share one budget, a new key starts a new one.
        parse_retries: extra stage-2 attempts when its answer holds no label.
        image_size: resize frames to this square size before sending (``None``: as rendered).
        temperature: sampling temperature (0 as RL-VLM-F).
        max_tokens: cap on each answer's length.
        rng: jitters retry delays.
        name: labeler name in logs and stats (default ``vlm:<model>``).
    """

    def __init__(
        self,
        model: str,
        task: str = "cloth_fold",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        text_model: str | None = None,
        prompt_dir: str | Path | None = None,
        goal: str | None = None,
        max_workers: int = 8,
        requests_per_second: float | None = None,
        burst: int = 4,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 60.0,
        max_queries: int | None = None,
        max_spend: float | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        swap_consistency: bool = False,
        budget_key: str | None = None,
        parse_retries: int = 1,
        image_size: int | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        rng: np.random.Generator | None = None,
        name: str | None = None,
        **unused: object,
    ):
        if unused.get("cache_path") is not None or unused.get("cache") is not None:
            raise ValueError(
                "the VLM labeler caches nothing itself: pass the cache to the pipeline instead"
                " (labelers.label_cache=<file>, or CachedLabeler(labeler, LabelCache(<file>)))"
            )
        if max_workers < 1:
            raise ValueError(f"max_workers={max_workers}: need at least 1")
        if max_queries is not None and max_queries < 0:
            raise ValueError(f"max_queries={max_queries}: spend budget must be >= 0 (or null for none)")
        if max_spend is not None and not float(max_spend) >= 0:
            raise ValueError(f"max_spend={max_spend}: spend budget in USD must be >= 0 (or null for none)")
        self.model, self.text_model = model, text_model or model
        self.task = task
        self.prompt = load_prompt(task, prompt_dir)
        if goal:
            self.prompt["goal"] = goal
        self.goal = self.prompt["goal"]
        self.base_url = base_url
        host = urlparse(base_url).hostname if base_url else None
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if host in ("127.0.0.1", "localhost", "::1"):
                api_key = "local"
            else:
                raise ValueError(
                    f"environment variable {api_key_env} is not set: export the endpoint's API key in it"
                    " (or set api_key_env to the variable that holds it)"
                )
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.max_workers = int(max_workers)
        self.limiter = (
            endpoint_limiter(base_url or "openai", requests_per_second, burst) if requests_per_second else None
        )
        self.max_retries, self.backoff_base, self.backoff_max = (
            int(max_retries),
            float(backoff_base),
            float(backoff_max),
        )
        self.max_queries, self.parse_retries = max_queries, int(parse_retries)
        self.max_spend = None if max_spend is None else float(max_spend)
        self.prices = price_table(prices)
        unpriced = sorted({self.model, self.text_model} - set(self.prices))
        if unpriced and self.max_spend is not None:
            raise ValueError(
                f"max_spend needs the price of {', '.join(unpriced)}: add labelers.labeler.prices."
                f"{unpriced[0]}={{prompt: <USD per 1M tokens>, completion: <USD per 1M tokens>}}"
            )
        if unpriced and self.prices:
            log.warning("no price for %s in prices: its tokens are counted at cost 0", ", ".join(unpriced))
        self.swap_consistency = bool(swap_consistency)
        self.image_size, self.temperature, self.max_tokens = image_size, float(temperature), int(max_tokens)
        self.rng = rng or np.random.default_rng()
        self.name = name or f"vlm:{model}"
        self.budget_key = budget_key or self.name
        # The template identity in the cache key: both prompts, the goal, the stage-2 model and temperature.
        self.template = json.dumps(
            {
                **self.prompt,
                "text_model": self.text_model,
                "temperature": self.temperature,
                "size": image_size,
                **({"swap_consistency": True} if self.swap_consistency else {}),
            },
            sort_keys=True,
        )
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._spent = Spend()  # answered by this object (the record when no cache layer binds a durable one)
        self._recorded: Callable[[], Spend] | None = None
        self._in_flight = 0  # queries sent and not answered yet
        self._warned_budget = False
        self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="vlm-labeler")

    # ---- public --------------------------------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        """True once the recorded spend leaves no room for another pair under ``max_queries`` / ``max_spend``."""
        with self._lock:
            return not self._affordable(self._recorded_spend(), self._pair_cost)

    def endpoint_stats(self) -> dict[str, int]:
        """Counters of this object: ``queries`` (pair queries sent), ``api_calls``, ``retries``, ``errors``,
        ``unparseable``, ``malformed`` (stage-2 attempts without a label), ``over_budget``, ``inconsistent``,
        ``prompt_tokens``, ``completion_tokens`` ...
        """  # noqa: D205
        with self._lock:
            return {k: int(v) for k, v in self.stats.items()}

    def bind_spend(self, recorded: Callable[[], Spend]) -> None:
        """Check the budgets against ``recorded`` (the label cache's record of ``budget_key``) from now on."""
        self._recorded = recorded

    def spend_total(self) -> dict[str, Any]:
        """The spend recorded under ``budget_key`` (every run on the cache, or this object without one) and budgets."""
        recorded = self._recorded_spend()
        return {
            "budget_key": self.budget_key,
            **recorded.to_dict(),
            "max_queries": self.max_queries,
            "max_spend": self.max_spend,
            "durable": self._recorded is not None,
        }

    def cache_key(self, query: FragmentPair) -> str:
        """Cache key of one pair: model, template (prompts, stage-2 model, temperature, size), both frames' hashes."""
        return self._key(*self._frames(query))

    def __call__(self, queries: Sequence[FragmentPair]) -> list[Label]:
        """Label pairs: 0 = first closer to the goal, 1 = second, -1 = unsure / inconsistent / failed.

        Args:
            queries: pairs whose fragments carry ``frames`` (``uint8 (T, H, W, 3)``; the last frame is shown).

        Returns:
            One :class:`Label` per pair, in order; ``failed`` is True for endpoint errors, unparseable answers and
            budget refusals; ``spend`` is what the answer cost.
        """
        out: list[Label | None] = [None] * len(queries)
        for answers in self.label_as_completed(queries):
            for i, label in answers.items():
                out[i] = label
        return [lab for lab in out if lab is not None]

    def label_as_completed(self, queries: Sequence[FragmentPair]) -> Iterator[dict[int, Label]]:
        """Yield ``{query index: label}``: first the labels known without a query, then each answer as it arrives.

        At most ``max_workers`` pairs are in flight; each is checked against the budget just before it is sent,
        after the answers yielded before it were recorded.
        """
        ready: dict[int, Label] = {}
        todo: dict[str, tuple[np.ndarray, np.ndarray, list[int]]] = {}
        for i, pair in enumerate(queries):
            a, b = self._frames(pair)
            if a.shape == b.shape and np.array_equal(a, b):
                ready[i] = Label(-1, source=self.name, raw="identical images")
                with self._lock:
                    self.stats["identical"] += 1
                continue
            key = self._key(a, b)
            if key in todo:  # asked twice in one batch: paid once
                todo[key][2].append(i)
                continue
            todo[key] = (a, b, [i])
        if ready:
            yield ready
        pending = list(todo.values())
        futures: dict[Future, tuple[list[int], _Tally]] = {}
        try:
            while pending or futures:
                refused: dict[int, Label] = {}
                while pending and len(futures) < self.max_workers:
                    if self._reserve():
                        a, b, idx = pending.pop(0)
                        tally = _Tally()
                        futures[self._pool.submit(self._label_pair, a, b, tally)] = (idx, tally)
                    elif futures:
                        break  # the answers in flight decide whether the budget has room for more
                    else:
                        self._warn_budget()
                        for _, _, idx in pending:
                            refused.update(dict.fromkeys(idx, self._refusal()))
                        pending.clear()
                if refused:
                    yield refused
                if not futures:
                    break
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    idx, tally = futures.pop(fut)
                    yield dict.fromkeys(idx, self._finish(fut, tally))
        finally:
            with self._lock:  # pairs abandoned in flight (the consumer stopped) no longer hold the budget
                self._in_flight -= self._pair_cost * len(futures)

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True)

    # ---- internals -----------------------------------------------------------------------------------------
    @staticmethod
    def _frames(pair: FragmentPair) -> tuple[np.ndarray, np.ndarray]:
        frames = []
        for frag in (pair.first, pair.second):
            if frag.frames is None or len(frag.frames) == 0:
                raise ValueError("fragment has no frames: the VLM labeler needs rendered frames uint8 (T, H, W, 3)")
            frames.append(np.asarray(frag.frames[-1]))
        return frames[0], frames[1]

    def _key(self, a: np.ndarray, b: np.ndarray) -> str:
        return LabelCache.key("rlvlmf", self.model, self.template, [a, b])

    @property
    def _pair_cost(self) -> int:
        """Queries one pair takes: two when it is asked in both orders."""
        return 2 if self.swap_consistency else 1

    def _recorded_spend(self) -> Spend:
        return self._spent if self._recorded is None else self._recorded()

    def _affordable(self, recorded: Spend, queries: int) -> bool:
        """Whether ``queries`` more fit the budgets, given the recorded spend and the queries in flight."""
        if self.max_queries is not None and recorded.queries + self._in_flight + queries > self.max_queries:
            return False
        if self.max_spend is not None:
            per_query = recorded.cost_usd / recorded.queries if recorded.queries else 0.0
            if recorded.cost_usd + self._in_flight * per_query >= self.max_spend:
                return False
        return True

    def _reserve(self) -> bool:
        """Take budget for one pair (False: it does not fit)."""
        recorded = self._recorded_spend() if (self.max_queries is not None or self.max_spend is not None) else Spend()
        with self._lock:
            if not self._affordable(recorded, self._pair_cost):
                return False
            self._in_flight += self._pair_cost
            self.stats["queries"] += self._pair_cost
            return True

    def _refusal(self) -> Label:
        with self._lock:
            self.stats["over_budget"] += 1
        return Label(-1, source=self.name, raw="budget exhausted", failed=True)

    def _warn_budget(self) -> None:
        if self._warned_budget:
            return
        self._warned_budget = True
        total = self.spend_total()
        log.warning(
            "spend budget of %s used up (%d queries, %.4f USD recorded%s; max_queries=%s, max_spend=%s): pairs get no"
            " label. Raise labelers.labeler.max_queries / max_spend, or give this experiment its own"
            " labelers.labeler.budget_key",
            self.budget_key,
            total["queries"],
            total["cost_usd"],
            " in the label cache" if total["durable"] else "",
            self.max_queries,
            self.max_spend,
        )

    def _finish(self, fut: Future, tally: _Tally) -> Label:
        """The label of one finished pair; its spend is counted here (and recorded by the cache layer)."""
        with self._lock:
            self._in_flight -= self._pair_cost
            self._spent = self._spent + tally.spend
        try:
            return fut.result()
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
            raise RuntimeError(
                f"endpoint {self.base_url or 'openai'} refused model {self.model!r} ({type(e).__name__}):"
                " check the API key variable and the model name"
            ) from e
        except Exception as e:  # noqa: BLE001 - one failed query must not stop labeling
            with self._lock:
                self.stats["errors"] += 1
            log.warning("VLM query failed after retries (%s: %s); label dropped", type(e).__name__, e)
            spend = tally.spend if tally.spend.queries else None
            return Label(-1, source=self.name, raw=f"error: {type(e).__name__}", failed=True, spend=spend)

    def _label_pair(self, a: np.ndarray, b: np.ndarray, tally: _Tally) -> Label:
        """Ask one pair (and, with swap-consistency, the swapped pair); unparseable or disagreeing answers -> -1."""
        value, analysis, answer = self._ask(a, b, tally)
        record: dict[str, Any] = {"analysis": analysis, "answer": answer}
        inconsistent = False
        if value is not None and self.swap_consistency:
            swapped, s_analysis, s_answer = self._ask(b, a, tally)
            record["swapped"] = {"analysis": s_analysis, "answer": s_answer}
            if swapped is None:
                value = None
            else:
                inconsistent = (swapped if swapped == -1 else 1 - swapped) != value
                record["inconsistent"] = inconsistent
        if value is None:
            with self._lock:
                self.stats["unparseable"] += 1
            record["error"] = "no label in the stage-2 answer"
            return Label(-1, source=self.name, raw=json.dumps(record), failed=True, spend=tally.spend)
        with self._lock:
            self.stats["labeled"] += 1
            self.stats["inconsistent"] += int(inconsistent)
        return Label(
            -1 if inconsistent else value,
            source=self.name,
            raw=json.dumps(record),
            spend=tally.spend,
            inconsistent=inconsistent,
        )

    def _ask(self, a: np.ndarray, b: np.ndarray, tally: _Tally) -> tuple[int | None, str, str]:
        """Both stages with image 1 = ``a``, image 2 = ``b``: ``(label or None if unparseable, analysis, answer)``."""
        goal = self.prompt["goal"]
        stage1 = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Image 1:"},
                    {"type": "image_url", "image_url": {"url": encode_image(a, self.image_size)}},
                    {"type": "text", "text": "Image 2:"},
                    {"type": "image_url", "image_url": {"url": encode_image(b, self.image_size)}},
                    {"type": "text", "text": self.prompt["stage1"].format(goal=goal)},
                ],
            }
        ]
        analysis = self._chat(self.model, stage1, tally)
        tally.spend = tally.spend + Spend(queries=1)
        stage2 = [{"role": "user", "content": self.prompt["stage2"].format(goal=goal, analysis=analysis)}]
        answer, value = "", None
        for attempt in range(self.parse_retries + 1):
            answer = self._chat(self.text_model, stage2, tally)
            value = parse_preference(answer)
            if value is not None:
                break
            with self._lock:
                self.stats["malformed"] += 1
            log.info("stage-2 answer has no label (attempt %d): %r", attempt + 1, answer[:80])
        return value, analysis, answer

    def _chat(self, model: str, messages: list[dict], tally: _Tally) -> str:
        for attempt in range(self.max_retries + 1):
            if self.limiter is not None:
                self.limiter.acquire()
            with self._lock:
                self.stats["api_calls"] += 1
            try:
                resp = self.client.chat.completions.create(
                    model=model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
                )
            except RETRYABLE as e:
                if attempt == self.max_retries:
                    raise
                delay = min(self.backoff_max, self.backoff_base * 2**attempt)
                with self._lock:
                    self.stats["retries"] += 1
                    self.stats[f"retry_{type(e).__name__}"] += 1
                    delay *= 0.5 + self.rng.random()
                retry_after = getattr(getattr(e, "response", None), "headers", {}).get("retry-after")
                if retry_after:
                    try:
                        delay = min(self.backoff_max, max(delay, float(retry_after)))
                    except ValueError:
                        pass
                log.debug("%s from %s; retry %d in %.2fs", type(e).__name__, model, attempt + 1, delay)
                time.sleep(delay)
                continue
            tally.spend = tally.spend + self._usage_spend(model, resp.usage)
            return resp.choices[0].message.content or ""
        raise AssertionError("unreachable")

    def _usage_spend(self, model: str, usage: Any) -> Spend:
        """The tokens of one answer's ``usage`` (absent: 0) and their price."""
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        price_prompt, price_completion = self.prices.get(model, (0.0, 0.0))
        with self._lock:
            self.stats["prompt_tokens"] += prompt
            self.stats["completion_tokens"] += completion
        return Spend(0, prompt, completion, (prompt * price_prompt + completion * price_completion) / 1e6)
