"""LLM judge of NetHack messages (ONI): free-text answers for large models, answer log-probs for small ones.

Free-text path: the ONI prompt asks for ``<label>yes</label>`` or ``<label>no</label>`` and the answer is
parsed. A 135M model does not follow that format, so the log-prob path asks a few-shot prompt ending in
``Progress:`` and compares the next-token log-probabilities of `` yes`` and `` no``; the decision threshold is
the mean margin on content-free inputs (contextual calibration, Zhao et al. 2021), which removes the
model's prior bias towards one answer. The log-probs come from an endpoint's completions (``top_logprobs``)
or from a :class:`TopLogprobs` scorer in this process (:meth:`LLMJudge.attach`), with the same margin.

Transport failures (timeouts, 429, 5xx, dropped connections, malformed responses) are never turned into
labels: :meth:`LLMJudge.try_label` returns ``None`` for those items so the caller retries them later, and
nothing that was answered is asked again by this object. A message the endpoint refuses for good (a 4xx
about the request, e.g. longer than the model's context) is a :class:`Refusal` in :meth:`LLMJudge.attempt`:
asking again would fail again (in-process: :class:`PromptRefused`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vlmrl.labelers.base import Labeler
from vlmrl.types import Label

PROMPT_DIR = Path(__file__).resolve().parent.parent / "assets" / "prompts" / "oni"
GOALS = ("default", "gold", "stairs", "combat")
CONTENT_FREE = ("N/A", "", "[MASK]")
LABEL_PATTERN = re.compile(r"<label>\s*(yes|no|true|false|helpful|unhelpful)\s*</label>", re.I)
POSITIVE = {"yes", "true", "helpful"}
MISSING_LOGPROB = -30.0  # a label word outside the returned top-k is taken as very unlikely
TRANSIENT_4XX = (401, 403, 404, 408, 409, 429)  # client errors that asking again (later) can fix
for _name in ("httpx", "httpx2"):  # one INFO line per LLM request would flood training logs
    logging.getLogger(_name).setLevel(logging.WARNING)


def load_prompt(mode: str, goal: str = "default", prompt_dir: str | Path | None = None) -> str:
    """The prompt template of ``mode`` (``"text"`` or ``"logprob"``) with the goal variant filled in.

    The result still contains ``{message}``, to be filled per query.
    """
    root = Path(prompt_dir) if prompt_dir else PROMPT_DIR
    goal_file = root / "goals" / f"{goal}.txt"
    if not goal_file.exists():
        raise ValueError(f"no ONI goal variant {goal!r} in {root}/goals: pass labelers.labeler.goal= one of {GOALS}")
    name = {"text": "judge.txt", "logprob": "score.txt"}.get(mode)
    if name is None:
        raise ValueError(f"unknown judge mode {mode!r}: pass labelers.labeler.mode=logprob or mode=text")
    text = (root / name).read_text().replace("{goal}", goal_file.read_text().strip())
    # the log-prob prompt must end right after "Progress:" so that the next token is the answer word
    return text.rstrip() if mode == "logprob" else text


def parse_label(answer: str) -> int:
    """1 or 0 from a free-text answer's ``<label>...</label>``; -1 when no label can be read."""
    found = LABEL_PATTERN.findall(answer or "")
    if not found:
        return -1
    return int(found[-1].lower() in POSITIVE)


def yes_no_margin(top_logprobs: dict[str, float], yes: str = " yes", no: str = " no") -> float:
    """``log p(yes) - log p(no)`` from one position's top log-probs (case variants summed)."""

    def logp(word: str) -> float:
        w = word.strip()
        variants = {f"{pre}{v}" for pre in ("", " ") for v in (w, w.capitalize(), w.upper())}
        ps = [math.exp(v) for k, v in top_logprobs.items() if k in variants]
        return math.log(sum(ps)) if ps else MISSING_LOGPROB

    return logp(yes) - logp(no)


class PromptRefused(ValueError):
    """An in-process scorer can never answer this prompt (e.g. longer than the model's context)."""


class TopLogprobs:
    """Next-token log-probs computed in this process: the judge's log-prob path without an endpoint."""

    model_id = "unknown"

    def __call__(self, prompts: list[str], k: int = 20, prefix: str = "") -> list[dict[str, float]]:
        """The ``k`` most likely next tokens (text piece -> log-prob) after each prompt, in prompt order.

        ``prefix`` is text the prompts start with, which an implementation may evaluate once and keep.
        Raises :class:`PromptRefused` if a prompt can never be answered; any other exception means "ask later".
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Refusal:
    """The endpoint refused one message for good (a 4xx about the request itself); ``error`` says why."""

    error: str


class LLMJudge(Labeler):
    """Labels NetHack messages as progress (1) or not (0) through an OpenAI-compatible endpoint or in-process scorer.

    Args:
        base_url: the endpoint (``http://127.0.0.1:8080/v1``); may be set later with :meth:`connect`.
        model: model name sent to the endpoint; ``None`` asks the endpoint's ``/models``.
        mode: ``"logprob"`` (small models, answer log-prob scoring) or ``"text"`` (free-text answers).
        goal: the task variant of the prompt: ``default``, ``gold``, ``stairs`` or ``combat``.
        api_key_env: environment variable holding the API key (unset: a placeholder, fine for local servers).
        timeout: seconds per request before it counts as failed (and is retried later by the caller).
        concurrency: requests in flight at once.
        threshold: fixed decision threshold on the yes/no margin; ``None`` calibrates on content-free inputs.
        temperature: sampling temperature of the free-text path (ONI used 0.1).
        max_tokens: answer length of the free-text path.
        top_logprobs: how many next-token log-probs the log-prob path requests.
        batch_prompts: send a list of prompts per completion request (vLLM, OpenAI); off for llama.cpp.
        prompt_dir: folder of prompt templates (default: the packaged ``assets/prompts/oni``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        mode: str = "logprob",
        goal: str = "default",
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        concurrency: int = 2,
        threshold: float | None = None,
        temperature: float = 0.1,
        max_tokens: int = 256,
        top_logprobs: int = 20,
        batch_prompts: bool = False,
        prompt_dir: str | None = None,
    ):
        self.mode = mode
        self.goal = goal
        self.template = load_prompt(mode, goal, prompt_dir)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.concurrency = max(1, int(concurrency))
        self.threshold = threshold
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.top_logprobs = top_logprobs
        self.batch_prompts = batch_prompts
        self.errors: Counter[str] = Counter()
        self._calibration: dict[str, float] = {}
        self.requests = 0
        self.answered = 0
        self._client = None
        self._scorer: TopLogprobs | None = None
        self._prefix = self.template.split("{message}")[0]  # shared by every prompt: a scorer keeps it evaluated
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.base_url = None
        if base_url:
            self.connect(base_url)

    @property
    def name(self) -> str:  # type: ignore[override]
        """Cache namespace: the judging method (the model name is keyed separately)."""
        return f"oni-judge:{self.mode}"

    @property
    def model_id(self) -> str:
        """The model name used in cache keys."""
        return self.model or "unknown"

    def connect(self, base_url: str) -> None:
        """Point the judge at an endpoint (e.g. one the annotation server started)."""
        import openai

        self.base_url = base_url.rstrip("/")
        key = os.environ.get(self.api_key_env, "") or "sk-no-key-required"
        # Retries are ours (the caller re-queues unanswered items), so that nothing is paid twice unknowingly.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout, max_retries=0)
        if self.model is None:
            models = self._client.models.list().data
            if not models:
                raise RuntimeError(f"{self.base_url} serves no model: pass labelers.labeler.model=<name>")
            self.model = models[0].id

    def attach(self, scorer: TopLogprobs) -> None:
        """Score in this process with ``scorer`` instead of an endpoint (log-prob mode only)."""
        if self.mode != "logprob":
            raise ValueError(f"an in-process scorer serves mode=logprob, not {self.mode!r}: pass an endpoint")
        self._scorer = scorer
        self.model = self.model or scorer.model_id

    @property
    def connected(self) -> bool:
        """Whether requests have somewhere to go (an endpoint or an in-process scorer)."""
        return self._client is not None or self._scorer is not None

    def _require_backend(self) -> None:
        if not self.connected:
            raise RuntimeError("the judge has no endpoint: call connect(base_url) or attach(scorer) first")

    # ------------------------------------------------------------------ requests
    def _scored(self, prompts: list[str]) -> list[float]:
        tops = self._scorer(prompts, self.top_logprobs, self._prefix)
        if len(tops) != len(prompts):
            raise ValueError(f"scored {len(prompts)} prompts, got {len(tops)} answers")
        return [yes_no_margin(top) for top in tops]

    def _scored_one(self, prompt: str) -> float:
        return self._scored([prompt])[0]

    def _one_logprob(self, prompt: str) -> float:
        resp = self._client.completions.create(
            model=self.model, prompt=prompt, max_tokens=1, temperature=0.0, logprobs=self.top_logprobs
        )
        top = resp.choices[0].logprobs.top_logprobs[0]
        if not isinstance(top, dict) or not top:
            raise ValueError("completion carries no top_logprobs (llama.cpp needs --logits_all true)")
        return yes_no_margin({str(k): float(v) for k, v in top.items()})

    def _many_logprob(self, prompts: list[str]) -> list[float]:
        resp = self._client.completions.create(
            model=self.model, prompt=prompts, max_tokens=1, temperature=0.0, logprobs=self.top_logprobs
        )
        choices = sorted(resp.choices, key=lambda c: c.index)
        if len(choices) != len(prompts):
            raise ValueError(f"asked {len(prompts)} prompts, got {len(choices)} answers")
        return [yes_no_margin({str(k): float(v) for k, v in c.logprobs.top_logprobs[0].items()}) for c in choices]

    def _one_text(self, prompt: str) -> str:
        resp = self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
        content = resp.choices[0].message.content
        if not isinstance(content, str):
            raise ValueError("chat completion without text content")
        return content

    def _guarded(self, fn, arg):
        """Run one request; on failure count its kind and return a :class:`Refusal` if final, else ``None``."""
        with self._lock:
            self.requests += 1
        try:
            out = fn(arg)
        except Exception as e:  # noqa: BLE001 - every transport/parse failure means "retry later"
            kind = _error_kind(e)
            with self._lock:
                self.errors[kind] += 1
            return Refusal(f"{kind}: {e}"[:2000]) if _is_refusal(e) else None
        with self._lock:
            self.answered += 1
        return out

    def _map(self, fn, args: list) -> list:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="llm-judge")
        return list(self._pool.map(lambda a: self._guarded(fn, a), args))

    # ------------------------------------------------------------------ labeling
    def calibrate(self) -> float | None:
        """Set the threshold to the mean yes/no margin on content-free inputs; ``None`` if that failed."""
        self._require_backend()
        missing = [c for c in CONTENT_FREE if c not in self._calibration]
        for c, m in zip(missing, self._margins(missing), strict=True):
            if isinstance(m, float):
                self._calibration[c] = m  # kept across attempts: each content-free input is paid once
        if len(self._calibration) < len(CONTENT_FREE):
            return None
        self.threshold = float(sum(self._calibration.values()) / len(self._calibration))
        return self.threshold

    @property
    def calibration(self) -> dict[str, float]:
        """Yes/no margins measured on the content-free inputs so far (to persist them: they were paid for)."""
        return dict(self._calibration)

    def set_calibration(self, margins: dict[str, float]) -> None:
        """Reuse margins measured earlier; sets the threshold once every content-free input has one."""
        self._calibration.update({k: float(v) for k, v in margins.items() if k in CONTENT_FREE})
        if self.threshold is None and len(self._calibration) == len(CONTENT_FREE):
            self.threshold = float(sum(self._calibration.values()) / len(self._calibration))

    def _margins(self, messages: list[str]) -> list[float | Refusal | None]:
        prompts = [self.template.replace("{message}", m) for m in messages]
        one, many = (
            (self._scored_one, self._scored) if self._scorer is not None else (self._one_logprob, self._many_logprob)
        )
        if self.batch_prompts or self._scorer is not None:  # a scorer takes the batch in one call
            out = self._guarded(many, prompts)
            if isinstance(out, Refusal) and len(prompts) > 1:  # find out which prompt was refused
                return self._map(one, prompts)
            return list(out) if isinstance(out, list) else [out] * len(prompts)
        return self._map(one, prompts)

    def try_label(self, messages: Sequence[str]) -> list[Label | None]:
        """Label what the endpoint answers; ``None`` marks items to retry later (nothing was learned).

        Returns:
            One entry per message: a :class:`Label` (1 progress, 0 not, -1 answer not parseable) or ``None``.
        """
        return [r if isinstance(r, Label) else None for r in self.attempt(messages)]

    def attempt(self, messages: Sequence[str]) -> list[Label | Refusal | None]:
        """:meth:`try_label` that tells final refusals apart: a :class:`Refusal` would fail again if retried."""
        self._require_backend()
        messages = list(messages)
        source = f"llm:{self.model_id}"
        if self.mode == "logprob":
            if self.threshold is None and self.calibrate() is None:
                return [None] * len(messages)
            margins = self._margins(messages)
            return [
                Label(int(m > self.threshold), source=source, raw=f"margin={m:.4f} threshold={self.threshold:.4f}")
                if isinstance(m, float)
                else m
                for m in margins
            ]
        answers = self._map(self._one_text, [self.template.replace("{message}", m) for m in messages])
        return [Label(parse_label(a), source=source, raw=a) if isinstance(a, str) else a for a in answers]

    def __call__(self, queries: Sequence[str]) -> list[Label]:
        """Label messages; raises if the endpoint failed on any of them (use :meth:`try_label` to retry)."""
        labels = self.try_label(queries)
        failed = sum(label is None for label in labels)
        if failed:
            raise RuntimeError(f"{failed} of {len(labels)} requests to {self.base_url} failed: {dict(self.errors)}")
        return labels  # type: ignore[return-value]

    def close(self) -> None:
        """Release the request threads and the HTTP client (an attached scorer is its owner's to stop)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()


def _error_kind(e: Exception) -> str:
    """A short name for a failure: ``rate_limited``, ``server_error``, ``timeout``, ``connection``, ``malformed``..."""
    import openai

    if isinstance(e, PromptRefused):
        return "refused"
    if isinstance(e, RuntimeError):  # an in-process scorer failed (llama_decode, stopped)
        return "backend_error"

    if isinstance(e, openai.RateLimitError):
        return "rate_limited"
    if isinstance(e, openai.APITimeoutError):
        return "timeout"
    if isinstance(e, openai.APIConnectionError):
        return "connection"
    if isinstance(e, openai.InternalServerError):
        return "server_error"
    if isinstance(e, openai.APIStatusError):
        return f"http_{e.status_code}"
    return "malformed"


def _is_refusal(e: Exception) -> bool:
    """A 4xx about the request itself: retrying the same message fails again.

    429 (slow down), 408 (timed out) and 409 are transient; 401, 403 and 404 are about the key, the account or
    the model name, not the message: fixing the configuration fixes them, so those are retried too.
    """
    import openai

    if isinstance(e, PromptRefused):
        return True
    return isinstance(e, openai.APIStatusError) and 400 <= e.status_code < 500 and e.status_code not in TRANSIENT_4XX
