"""ONI's intrinsic rewards from LLM labels of game messages, and the count-decayed combined reward.

Three ways to turn labels into a reward (ONI, Zheng et al. 2024):

- hashing: look the message's label up (unlabeled: 0);
- classification: a small model on message text, trained online on the labels; reward ``1[p(helpful) > threshold]``
  (ONI's default threshold 0.5; it also rewards messages the LLM has not seen yet);
- ranking: a Bradley-Terry score over (helpful, unhelpful) message pairs (Motif-style), normalised as ONI's online
  Motif does: ``z = (s - mean) / std`` with running statistics of the scores of the messages the agent meets, kept
  where ``z > threshold`` (ONI: -0.5, so slightly below-average messages give small negative rewards), else 0.

The reward given to PPO for a step whose message ``msg`` has been seen ``N(msg)`` times is
``c_int * r_int(msg) / N(msg)^beta`` (β = 3); PPO adds ``c_ext * r_ext`` itself (``agents.env_reward_coef``).
As in ONI's and Motif's message wrapper, ``N`` counts within the current episode of each env (reset when the
episode ends); ``count_scope="run"`` counts over the whole run instead.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlmrl.encoders import CharNgramEncoder, SentenceEncoder, TextEncoder
from vlmrl.rewards.base import RewardModel
from vlmrl.runs import LabelStats, RunFolder, atomic_path, write_json

log = logging.getLogger(__name__)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny torch ops on one thread: on a busy 2-core machine, OpenMP's second thread makes them ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- text features
def make_features(kind: str) -> TextEncoder:
    """Message features: ``"chars"`` (hashed character n-grams, instant) or ``"minilm"`` (all-MiniLM-L6-v2)."""
    if kind == "chars":
        return CharNgramEncoder(dim=1024)
    if kind == "minilm":
        encoder = SentenceEncoder("all-MiniLM-L6-v2", device="cpu", batch_size=64)
        encoder.load()  # fail at construction, not at the first labeled message
        return encoder
    raise ValueError(f"unknown message features {kind!r}: pass labelers.features=chars or features=minilm")


# ---------------------------------------------------------------------------------------------- reward models
class MessageRewardModel(abc.ABC):
    """Turns the LLM's labels of messages into ``r_int(msg)``; :class:`OniReward` calls every method."""

    @abc.abstractmethod
    def update(self, messages: Sequence[str], labels: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        """Learn from newly labeled messages; returns numbers for the logs."""

    @abc.abstractmethod
    def reward(self, messages: Sequence[str]) -> np.ndarray:
        """``float32 (N,)`` intrinsic rewards of the messages (before the count decay)."""

    def observe(self, messages: Sequence[str]) -> None:
        """See the non-empty messages of a rollout, one per step, before it is scored (no-op by default)."""

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Picklable state."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class HashingModel(MessageRewardModel):
    """Retrieval: ``r_int(msg)`` is the LLM's label of ``msg`` (1 or 0), 0 while unlabeled."""

    def __init__(self, **_: Any):
        self.table: dict[str, float] = {}

    def update(self, messages: Sequence[str], labels: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        """Add newly labeled messages to the table."""
        for m, y in zip(messages, labels, strict=True):
            self.table[m] = float(y == 1)
        return {}

    def reward(self, messages: Sequence[str]) -> np.ndarray:
        """``float32 (N,)`` in {0, 1}."""
        return np.array([self.table.get(m, 0.0) for m in messages], dtype=np.float32)

    def state_dict(self) -> dict:
        """Picklable state."""
        return {"table": self.table}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.table = dict(state["table"])


class _TextNet(MessageRewardModel):
    """Shared parts of the trained models: features, an MLP head, the labeled set, an Adam optimiser."""

    def __init__(self, features: str = "chars", hidden: int = 64, lr: float = 1e-3, steps_per_update: int = 32,
                 batch_size: int = 64, max_labels: int = 25_000):  # fmt: skip
        self.features = make_features(features)
        self.net = nn.Sequential(nn.Linear(self.features.dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.steps_per_update, self.batch_size, self.max_labels = steps_per_update, batch_size, max_labels
        self.messages: list[str] = []
        self.labels: list[int] = []

    def _add(self, messages: Sequence[str], labels: np.ndarray) -> bool:
        seen = set(self.messages)
        for m, y in zip(messages, labels, strict=True):
            if y in (0, 1) and m not in seen:
                self.messages.append(m)
                self.labels.append(int(y))
                seen.add(m)
        return len(self.messages) <= self.max_labels  # ONI stops training once it has enough labels

    def scores(self, messages: Sequence[str]) -> np.ndarray:
        x = torch.from_numpy(self.features(list(messages)))
        self.net.eval()
        with torch.inference_mode(), single_thread():
            return self.net(x).squeeze(-1).numpy().astype(np.float32)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "messages": self.messages,
                "labels": self.labels}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.messages, self.labels = list(state["messages"]), list(state["labels"])


class ClassificationModel(_TextNet):
    """A message classifier trained online on LLM labels; ``r_int = 1[p(helpful | msg) > threshold]``.

    Args:
        threshold: decision threshold on ``p(helpful)`` (ONI's ``classification_threshold``, default 0.5): higher
            makes the reward sparser. Other keywords go to the text network (features, hidden, lr...).
    """

    def __init__(self, threshold: float = 0.5, **kwargs: Any):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold={threshold}: a probability in (0, 1) (ONI: 0.5)")
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.logit_threshold = math.log(self.threshold / (1.0 - self.threshold))  # p > t  <=>  logit > log(t/(1-t))

    def update(self, messages: Sequence[str], labels: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        """A few gradient steps of binary cross-entropy on minibatches of all labels so far."""
        if not self._add(messages, labels) or len(set(self.labels)) < 2:
            return {}
        x_all = torch.from_numpy(self.features(self.messages))
        y_all = torch.tensor(self.labels, dtype=torch.float32)
        self.net.train()
        with single_thread():
            loss = self._fit_classifier(x_all, y_all, rng)
        acc = float(((self.scores(self.messages) > 0) == (y_all.numpy() > 0.5)).mean())
        return {"classifier_loss": loss, "classifier_train_acc": acc}

    def _fit_classifier(self, x_all: torch.Tensor, y_all: torch.Tensor, rng: np.random.Generator) -> float:
        for _ in range(self.steps_per_update):
            idx = torch.from_numpy(rng.integers(0, len(y_all), size=min(self.batch_size, len(y_all))))
            logits = self.net(x_all[idx]).squeeze(-1)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y_all[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return float(loss.detach())

    def reward(self, messages: Sequence[str]) -> np.ndarray:
        """``float32 (N,)`` in {0, 1}; 0 everywhere until both labels have been seen."""
        if len(set(self.labels)) < 2 or not len(messages):
            return np.zeros(len(messages), dtype=np.float32)
        return (self.scores(messages) > self.logit_threshold).astype(np.float32)


def bradley_terry_loss(score_preferred: torch.Tensor, score_other: torch.Tensor) -> torch.Tensor:
    """``-log σ(s(preferred) - s(other))``, averaged: the Bradley-Terry negative log-likelihood."""
    return -nn.functional.logsigmoid(score_preferred - score_other).mean()


class RunningMoments:
    """Running mean and variance of a stream of weighted values (the parallel update of Chan et al., as in ONI)."""

    def __init__(self, mean: float = 0.0, var: float = 1.0, count: float = 0.0):
        self.mean, self.var, self.count = float(mean), float(var), float(count)

    def update(self, values: np.ndarray, weights: np.ndarray) -> None:
        """Merge a batch: ``values`` with ``weights`` (how often each was seen)."""
        n = float(weights.sum())
        if n <= 0:
            return
        batch_mean = float(np.dot(weights, values) / n)
        batch_var = float(np.dot(weights, (values - batch_mean) ** 2) / n)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    def state(self) -> dict[str, float]:
        """Keyword arguments that rebuild these moments."""
        return {"mean": self.mean, "var": self.var, "count": self.count}


#: Normalisations of the ranking score: ONI's running statistics over the messages met, or over the labeled set.
RANKING_NORMALISATIONS = ("running", "labeled")


class RankingModel(_TextNet):
    """Motif-style ranking: a scalar score trained with Bradley-Terry on (helpful, unhelpful) message pairs.

    The reward is ``z * 1[z > threshold]`` with ``z = (s - mean) / std``. With ``normalisation="running"`` (ONI's
    online Motif) mean and variance are running statistics of the scores of every message the agent meets
    (:meth:`observe`, one per step, as ONI's reward normaliser sees its training batches; the labeled set's
    statistics stand in until the rollouts have shown two different scores). ``"labeled"`` takes them over the
    labeled messages instead; with ``threshold=0`` that is the earlier vlmrl reward ``max(0, z)``.

    Args:
        normalisation: ``running`` or ``labeled``.
        threshold: rewards are kept where ``z > threshold`` (ONI's ``eps_threshold_quantile``, default -0.5: a
            value on the normalised scale), 0 elsewhere.
    """

    def __init__(self, normalisation: str = "running", threshold: float = -0.5, **kwargs: Any):
        if normalisation not in RANKING_NORMALISATIONS:
            raise ValueError(f"normalisation={normalisation!r}: use one of {', '.join(RANKING_NORMALISATIONS)}")
        super().__init__(**kwargs)
        self.normalisation, self.threshold = normalisation, float(threshold)
        self.mean, self.std = 0.0, 1.0  # over the labeled messages
        self.running = RunningMoments()  # over the messages met in rollouts

    @property
    def trained(self) -> bool:
        """Whether both labels have been seen (before that the reward is 0 everywhere)."""
        return bool(self.messages) and len(set(self.labels)) >= 2

    def observe(self, messages: Sequence[str]) -> None:
        """Fold the current scores of a rollout's messages into the running statistics (once trained)."""
        if self.normalisation != "running" or not self.trained or not len(messages):
            return
        unique, counts = np.unique(np.asarray(list(messages), dtype=object), return_counts=True)
        self.running.update(self.scores(list(unique)).astype(np.float64), counts.astype(np.float64))

    def normaliser(self) -> tuple[float, float]:
        """``(mean, std)`` the score is normalised with."""
        if self.normalisation == "running" and self.running.count > 0 and self.running.var > 0:
            return self.running.mean, math.sqrt(self.running.var) + 1e-6
        return self.mean, self.std

    def update(self, messages: Sequence[str], labels: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        """A few Bradley-Terry steps on random (helpful, unhelpful) pairs, then refresh the normalisation."""
        if not self._add(messages, labels):
            return {}
        y = np.array(self.labels)
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        if not len(pos) or not len(neg):
            return {}
        x_all = torch.from_numpy(self.features(self.messages))
        self.net.train()
        with single_thread():
            loss = self._fit_ranking(x_all, pos, neg, rng)
        s = self.scores(self.messages)
        self.mean, self.std = float(s.mean()), float(s.std() + 1e-6)
        pair_acc = float((s[pos][:, None] > s[neg][None, :]).mean())
        return {"ranking_loss": loss, "ranking_pair_acc": pair_acc}

    def _fit_ranking(self, x_all: torch.Tensor, pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator) -> float:
        for _ in range(self.steps_per_update):
            i = torch.from_numpy(rng.choice(pos, size=self.batch_size))
            j = torch.from_numpy(rng.choice(neg, size=self.batch_size))
            loss = bradley_terry_loss(self.net(x_all[i]).squeeze(-1), self.net(x_all[j]).squeeze(-1))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return float(loss.detach())

    def reward(self, messages: Sequence[str]) -> np.ndarray:
        """``float32 (N,)``, ``z * 1[z > threshold]``; 0 everywhere before the first update."""
        if not self.trained or not len(messages):
            return np.zeros(len(messages), dtype=np.float32)
        mean, std = self.normaliser()
        z = (self.scores(messages) - mean) / std
        return np.where(z > self.threshold, z, 0.0).astype(np.float32)

    def state_dict(self) -> dict:
        """Picklable state, normalisation included."""
        return {**super().state_dict(), "mean": self.mean, "std": self.std, "running": self.running.state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (a state without running statistics starts them afresh)."""
        super().load_state_dict(state)
        self.mean, self.std = state["mean"], state["std"]
        self.running = RunningMoments(**state.get("running", {}))


MODELS = {"hashing": HashingModel, "classification": ClassificationModel, "ranking": RankingModel}


def count_decayed_reward(r_int: np.ndarray, counts: np.ndarray, c_int: float, beta: float) -> np.ndarray:
    """ONI's intrinsic term ``c_int * r_int / N(msg)^beta`` (counts below 1 count as 1)."""
    return (c_int * r_int / np.maximum(counts, 1.0) ** beta).astype(np.float32)


# ---------------------------------------------------------------------------------------------- the reward source
class OniReward(RewardModel):
    """ONI's intrinsic reward for PPO: messages go to the annotation server, labels feed a reward model.

    ``predict`` never waits for the LLM: unseen messages are submitted and score 0 until labeled.
    ``learns_online``: a rollout's counts and new labels are taken in ``observe_rollout`` before it is scored.

    Args:
        model: ``"hashing"``, ``"classification"`` or ``"ranking"``.
        c_int: weight of the intrinsic term.
        beta: count decay exponent (ONI: 3).
        labeler: the LLM judge used when this object hosts the server (an :class:`~vlmrl.labelers.llm.LLMJudge`).
        server_url: an already running ``vlmrl serve`` (reached over HTTP); ``None`` hosts the annotation core
            in-process and calls it directly.
        endpoint: OpenAI-compatible endpoint for the hosted server; ``None`` starts the embedded llama.cpp.
        embedded: options of the embedded llama.cpp server (``n_threads``, ``model_path``...).
        store_path: SQLite label store of the hosted server, shared across runs so nothing is paid twice.
        batch_size: messages per LLM batch of the hosted server.
        model_kwargs: options of the trained models (``features``, ``hidden``, ``steps_per_update``...).
        run_dir: the run folder; label statistics and a copy of the store go to ``<run_dir>/labels/``.
        rng: randomness of the online training minibatches.
        count_scope: ``"episode"`` (ONI: N(msg) per env and episode) or ``"run"`` (pooled over the run).
        submit_window: at most this many messages waiting at the server, the most often seen submitted first;
            ``None`` submits every new message at once (the server then labels the newest first). A slow judge
            with a window labels the messages that recur instead of the rare ones of the latest rollout.
    """

    input_key = "message"
    learns_online = True

    def __init__(
        self,
        model: str = "hashing",
        c_int: float = 1.0,
        beta: float = 3.0,
        labeler: Any = None,
        server_url: str | None = None,
        endpoint: str | None = None,
        embedded: dict[str, Any] | None = None,
        store_path: str | None = "runs/labels/oni_labels.sqlite",
        batch_size: int = 16,
        model_kwargs: dict[str, Any] | None = None,
        run_dir: str | Path | None = None,
        rng: np.random.Generator | None = None,
        count_scope: str = "episode",
        submit_window: int | None = None,
        **_: Any,
    ):
        if submit_window is not None and submit_window < 1:
            raise ValueError(f"submit_window={submit_window}: a positive number, or null to submit everything")
        if count_scope not in ("episode", "run"):
            raise ValueError(f"count_scope={count_scope!r}: use labelers.count_scope=episode (ONI) or run")
        if model not in MODELS:
            raise ValueError(f"unknown ONI reward model {model!r}: pass labelers.model= one of {sorted(MODELS)}")
        if server_url is None and labeler is None:
            raise ValueError("OniReward hosts its annotation server and needs a judge: set labelers.labeler")
        self.model_name = model
        self.model = MODELS[model](**(model_kwargs or {})) if model != "hashing" else HashingModel()
        self.c_int, self.beta = float(c_int), float(beta)
        self.labeler, self.server_url, self.endpoint = labeler, server_url, endpoint
        self.embedded = dict(embedded or {})
        self.store_path, self.batch_size = store_path, batch_size
        self.run_dir = Path(run_dir) if run_dir else None
        self.rng = rng if rng is not None else np.random.default_rng(0)
        torch.manual_seed(int(self.rng.integers(2**31)))
        self.count_scope, self.submit_window = count_scope, submit_window
        self.counts: Counter[str] = Counter()  # over the run: unique messages, and N(msg) for count_scope="run"
        self.episode_counts: list[Counter[str]] = []  # per env, the current episode's N(msg)
        self.known: dict[str, int] = {}
        self.unsent: set[str] = set()  # seen here, not yet acknowledged by the server
        self.waiting: set[str] = set()  # acknowledged, label not received yet
        self.server = None
        self.client = None
        self.client_errors = 0
        self.last_update: dict[str, float] = {}
        self._rollout: tuple[list[str], np.ndarray] | None = None
        self._sync_lock = threading.Lock()  # one connection, one submit/fetch at a time

    # ------------------------------------------------------------------ server connection
    def _connect(self) -> None:
        """Host the annotation core here and call it directly, or reach ``server_url`` over HTTP."""
        if self.client is not None:
            return
        from vlmrl.annotation.client import DirectClient, HttpClient
        from vlmrl.annotation.core import AnnotationCore

        if self.server_url is not None:
            self.client = HttpClient(self.server_url)
            return
        embedded = dict(self.embedded)
        if self.run_dir is not None:
            embedded.setdefault("log_path", str(self.run_dir / "labels" / "llama_server.log"))
        self.server = AnnotationCore(
            self.labeler, store_path=self.store_path, endpoint=self.endpoint, embedded=embedded,
            batch_size=self.batch_size,
        ).start()  # fmt: skip
        if self.server.backend is not None:
            # The embedded LLM now busies n_threads cores; torch's OpenMP threads spinning on the same
            # cores slow both down many times over (measured ~20x on 2 cores), so torch gets the rest.
            free = max(1, (os.cpu_count() or 1) - int(self.server.backend.n_threads))
            if torch.get_num_threads() > free:
                log.info("embedded LLM uses %d thread(s): torch set to %d", self.server.backend.n_threads, free)
                torch.set_num_threads(free)
        self.client = DirectClient(self.server)

    def _sync(self, messages: Sequence[str]) -> bool:
        """Submit unseen messages (no waiting for labels) and collect labels that arrived since last time.

        Returns:
            True when new labels updated the reward model.
        """
        with self._sync_lock:  # predict may run in a scorer thread while observe_rollout runs here
            self._connect()
            for m in set(messages):
                if m and m not in self.known and m not in self.waiting:
                    self.unsent.add(m)
            try:
                room = len(self.unsent) if self.submit_window is None else self.submit_window - len(self.waiting)
                if self.unsent and room > 0:
                    batch = sorted(self.unsent, key=lambda m: (-self.counts[m], m))[:room]  # most often seen first
                    batch.reverse()  # the server labels the newest first: the most frequent goes in last
                    self.client.submit(batch)
                    self.unsent.difference_update(batch)
                    self.waiting.update(batch)
                if self.waiting:
                    got = self.client.labels(sorted(self.waiting))
                    new = {m: v for m, v in got.items() if v is not None}
                    if new:
                        self.known.update(new)
                        self.waiting.difference_update(new)
                        msgs = list(new)
                        self.last_update = self.model.update(msgs, np.array([new[m] for m in msgs]), self.rng)
                        return True
            except Exception as e:  # noqa: BLE001 - annotation trouble must never stop training
                self.client_errors += 1
                log.warning("annotation server unavailable (%s); messages stay queued here", e)
            return False

    # ------------------------------------------------------------------ RewardModel API
    def observe_rollout(
        self, inputs: Sequence[str], env_rewards: np.ndarray, dones: np.ndarray, num_timesteps: int
    ) -> bool:
        """Count this rollout's messages (N(msg) at each step, in order), submit unseen ones, fetch labels.

        Returns:
            True when new labels arrived and the reward model was updated.
        """
        messages = [str(m) for m in inputs]
        dones = np.asarray(dones, bool)
        n_envs = dones.shape[1] if dones.ndim == 2 else 1
        if len(messages) != dones.size:
            raise ValueError(f"{len(messages)} messages for a rollout of {dones.shape} steps x envs")
        if len(self.episode_counts) != n_envs:
            self.episode_counts = [Counter() for _ in range(n_envs)]
        at_step = np.ones(len(messages), dtype=np.float32)
        for i, m in enumerate(messages):
            e = i % n_envs
            if m:
                self.counts[m] += 1
                self.episode_counts[e][m] += 1
                at_step[i] = self.counts[m] if self.count_scope == "run" else self.episode_counts[e][m]
            if dones.reshape(-1)[i]:  # the message of the last step belongs to the episode that ends
                self.episode_counts[e].clear()
        self._rollout = (messages, at_step)
        changed = self._sync(messages)
        self.model.observe([m for m in messages if m])
        return changed

    def _counts(self, messages: list[str]) -> np.ndarray:
        if self._rollout is not None and self._rollout[0] == messages:
            return self._rollout[1]
        return self._running_counts(messages)

    def _running_counts(self, messages: list[str]) -> np.ndarray:
        """N(msg) of a batch not seen by observe_rollout, read as one episode (videos, evaluation)."""
        seen: Counter[str] = Counter()
        out = np.ones(len(messages), dtype=np.float32)
        for i, m in enumerate(messages):
            if m:
                seen[m] += 1
                out[i] = seen[m] + (self.counts[m] if self.count_scope == "run" else 0)
        return out

    def predict(self, batch: Sequence[str]) -> np.ndarray:
        """``float32 (N,)``: ``c_int * r_int(msg) / N(msg)^beta``; 0 for empty or not-yet-labeled messages."""
        messages = [str(m) for m in batch]
        self._sync(messages)
        return self._score(messages, self._counts(messages))

    def evaluate(self, batch: Sequence[str]) -> np.ndarray:
        """Like :meth:`predict`, counting the batch as one episode, without submitting or counting anything."""
        messages = [str(m) for m in batch]
        return self._score(messages, self._running_counts(messages))

    def _score(self, messages: list[str], counts: np.ndarray) -> np.ndarray:
        if self.model_name == "hashing":
            r_int = self.model.reward(messages)
        else:
            r_int = self.model.reward(messages) if messages else np.zeros(0, np.float32)
        r_int = r_int * np.array([bool(m) for m in messages], dtype=np.float32)
        return count_decayed_reward(r_int, counts, self.c_int, self.beta)

    def metrics(self) -> dict[str, float]:
        """Label and server statistics for the logs."""
        out: dict[str, float] = {
            "oni/labels_known": float(len(self.known)),
            "oni/labels_positive": float(sum(v == 1 for v in self.known.values())),
            "oni/waiting": float(len(self.waiting) + len(self.unsent)),
            "oni/unique_messages": float(len(self.counts)),
            "oni/client_errors": float(self.client_errors),
        }
        out.update({f"oni/{k}": float(v) for k, v in self.last_update.items()})
        stats = self._server_stats()
        for k in ("queue", "labels_per_s", "cache_hit_rate", "parse_failures", "backend_requests", "labels"):
            if isinstance(stats.get(k), int | float):
                out[f"oni/server_{k}"] = float(stats[k])
        return out

    def _server_stats(self) -> dict[str, Any]:
        try:
            if self.client is not None:
                return self.client.stats()
        except Exception:  # noqa: BLE001
            self.client_errors += 1
        return {}

    # ------------------------------------------------------------------ persistence
    def label_stats(self) -> LabelStats:
        """The typed label statistics of this run (what ``labels/stats.json`` holds)."""
        server = self._server_stats()
        return LabelStats(
            labeler=str(server.get("model") or (self.labeler.name if self.labeler is not None else "llm")),
            queries=len(self.known) + len(self.waiting) + len(self.unsent),
            paid=int(server.get("labeled_here", 0)),
            valid=len(self.known),
            failures=int(server.get("parse_failures", 0)) + self.client_errors,
            pending=len(self.waiting) + len(self.unsent),
            extra={
                "reward_model": self.model_name,
                "labels_positive": sum(v == 1 for v in self.known.values()),
                "labels_negative": sum(v == 0 for v in self.known.values()),
                "unique_messages": len(self.counts),
                "client_errors": self.client_errors,
                "server": server,
                "examples": dict(sorted(self.known.items())[:50]),
            },
        )

    def write_label_stats(self, run_dir: str | Path | None = None) -> Path | None:
        """Write ``<run_dir>/labels/stats.json`` (and a copy of the hosted label store next to it)."""
        run_dir = Path(run_dir) if run_dir else self.run_dir
        if run_dir is None:
            return None
        run = RunFolder(run_dir)
        path = run.write_label_stats(self.label_stats())
        if self.server is not None and self.server.store is not None:
            self.server.store.backup(run.labels / "labels.sqlite")
        return path

    def save_state(self, dir: str | Path) -> None:  # noqa: A002 - name fixed by the contract
        """Counts, labels received, the reward model; plus label statistics in the run folder."""
        dir = Path(dir)
        dir.mkdir(parents=True, exist_ok=True)
        state = {
            "counts": dict(self.counts),
            "episode_counts": [dict(c) for c in self.episode_counts],
            "known": self.known,
            "waiting": sorted(self.waiting | self.unsent),
        }
        write_json(dir / "oni_state.json", state, indent=None)
        with atomic_path(dir / "oni_model.pt") as tmp:
            torch.save(self.model.state_dict(), tmp)
        if self.run_dir is None and dir.parent.name == "checkpoints":
            self.run_dir = dir.parent.parent
        self.write_label_stats()

    def load_state(self, dir: str | Path) -> None:  # noqa: A002
        """Restore :meth:`save_state`; waiting messages are submitted again on the next call."""
        dir = Path(dir)
        state = json.loads((dir / "oni_state.json").read_text())
        self.counts = Counter(state["counts"])
        self.episode_counts = [Counter(c) for c in state.get("episode_counts", [])]
        self.known = {k: int(v) for k, v in state["known"].items()}
        self.unsent = set(state["waiting"])
        self.model.load_state_dict(torch.load(dir / "oni_model.pt", weights_only=False))

    def close(self) -> None:
        """Write label statistics, stop the hosted server (its queue stays on disk) and the client."""
        try:
            self.write_label_stats()
        finally:
            if self.client is not None:
                self.client.close()
            if self.server is not None:
                self.server.stop()
            self.client = self.server = None
