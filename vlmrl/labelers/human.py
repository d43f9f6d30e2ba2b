"""A human as a preference labeler: queries wait on the label page until someone answers them.

:class:`HumanLabeler` writes each pair it is asked (both frames, the task, the ground truth where known) into the
``human_queries`` table of the label file (:class:`HumanQueue`), then waits until the pairs are answered on the
``vlmrl labels`` page, up to ``timeout`` seconds per batch; the training loop then continues with what it has.
Unanswered pairs come back ``failed`` (not cached, asked again if drawn again) and leave the page. Answers are
yielded as they arrive, so the cache layer (:class:`~vlmrl.labelers.cache.CachedLabeler`) stores each one
like any other label. ``max_queries`` caps how many pairs are put to the human in all.
"""

from __future__ import annotations

import getpass
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import (
    INSERT_FRAMES,
    INSERT_PAIRS,
    OVERRIDE_VALUES,
    LabelCache,
    ensure_audit_tables,
    open_label_db,
    pair_rows,
)
from vlmrl.types import FragmentPair, Label

log = logging.getLogger(__name__)

QUEUE_TABLE = (
    "CREATE TABLE IF NOT EXISTS human_queries (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,"
    " first TEXT, second TEXT, task TEXT, asked REAL NOT NULL, status TEXT NOT NULL, value INTEGER, by TEXT,"
    " answered REAL)"
)
QUEUE_INDEX = "CREATE INDEX IF NOT EXISTS human_queries_status ON human_queries (status, id)"


class HumanQueue:
    """The queries waiting for a human, in the label file's ``human_queries`` table (shared by processes).

    A query is ``open`` until it is ``answered`` on the page or ``expired`` by the labeler that asked it.

    Args:
        path: the label file (SQLite; created with the label cache's tables when missing).
        frame_size: frames are kept at most this many pixels on a side.
    """

    def __init__(self, path: str | Path, frame_size: int | None = 256):
        self.path = Path(path).expanduser()
        self.frame_size = frame_size
        self._lock = threading.Lock()
        self._db = open_label_db(self.path)
        ensure_audit_tables(self._db)
        self._db.execute(QUEUE_TABLE)
        self._db.execute(QUEUE_INDEX)

    def ask(self, items: Sequence[tuple[str, FragmentPair]], task: str = "") -> list[int]:
        """Open one query per ``(cache key, pair)`` (frames and ground truth stored with it); returns their ids."""
        frames, pairs = pair_rows(items, task, self.frame_size)
        now = time.time()
        ids = []
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(INSERT_FRAMES, frames)
            self._db.executemany(INSERT_PAIRS, pairs)
            for key, first, second, *_ in pairs:
                cur = self._db.execute(
                    "INSERT INTO human_queries (key, first, second, task, asked, status)"
                    " VALUES (?, ?, ?, ?, ?, 'open')",
                    (key, first, second, task, now),
                )
                ids.append(int(cur.lastrowid))
            self._db.execute("COMMIT")
        return ids

    def answered(self, ids: Sequence[int]) -> dict[int, tuple[float, str, float]]:
        """``{id: (value, by, when)}`` of the given queries that have an answer."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, value, by, answered FROM human_queries WHERE status = 'answered' AND id IN ({marks})",
                list(ids),
            ).fetchall()
        return {int(i): (int(v) if float(v).is_integer() else float(v), str(by), float(at)) for i, v, by, at in rows}

    def answer(self, query_id: int, value: float, by: str) -> None:
        """Answer an open query (0: first better, 1: second better, 0.5: equally good, -1: can't tell).

        Raises:
            KeyError: no open query has this id (unknown, already answered or expired; nothing written).
            ValueError: ``value`` is not -1, 0, 0.5 or 1, or ``by`` is empty (nothing written).
        """
        if isinstance(value, bool) or value not in OVERRIDE_VALUES:
            raise ValueError(
                f"answer {value!r}: use 0 (first better), 1 (second better), 0.5 (equal) or -1 (can't tell)"
            )
        if not str(by).strip():
            raise ValueError("an answer needs the name of who gave it")
        with self._lock:
            cur = self._db.execute(
                "UPDATE human_queries SET status = 'answered', value = ?, by = ?, answered = ?"
                " WHERE id = ? AND status = 'open'",
                (float(value), str(by), time.time(), int(query_id)),
            )
        if cur.rowcount != 1:
            raise KeyError(query_id)

    def expire(self, ids: Sequence[int]) -> None:
        """Close queries nobody answered in time (they leave the page)."""
        if ids:
            with self._lock:
                self._db.executemany(
                    "UPDATE human_queries SET status = 'expired' WHERE id = ? AND status = 'open'", [(i,) for i in ids]
                )

    def open_count(self) -> int:
        """Queries waiting for an answer."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM human_queries WHERE status = 'open'").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class HumanLabeler(Labeler):
    """Preference labels from a person on the ``vlmrl labels`` page: 0 first better, 1 second, 0.5 equal, -1 unsure.

    Args:
        db: the label file the queries are written to and the page shows; the pipeline's label cache
            (``labelers.label_cache``), so the answers land next to every other label.
        goal: the task text shown with each pair.
        task: an RL-VLM-F prompt file (``assets/prompts/rlvlmf/<task>.yaml``) whose goal sentence is shown when
            ``goal`` is empty, so a person judges by what the VLM is told.
        timeout: seconds a batch of queries waits for answers; then labeling goes on with what was answered.
        max_queries: pairs put to the human in all (``None``: no budget); afterwards ``exhausted`` is True and
            new pairs come back ``failed`` at once.
        poll_interval: seconds between looks for new answers.
        serve: start the label page for this file in the background (else run ``vlmrl labels cache=<db>``).
        host: the page's bind address (loopback by default).
        port: the page's port (0: a free one; see :attr:`url`).
        token_env: environment variable holding the page's access token (unset: no token).
        frame_size: frames are stored and shown at most this many pixels on a side.
        rng: unused (a human draws no random numbers); accepted so pipelines can pass one.
        name: labeler name in logs and stats.
    """

    def __init__(
        self,
        db: str | Path,
        goal: str = "",
        task: str | None = None,
        timeout: float = 600.0,
        max_queries: int | None = None,
        poll_interval: float = 0.5,
        serve: bool = True,
        host: str = "127.0.0.1",
        port: int = 8766,
        token_env: str = "VLMRL_LABELS_TOKEN",
        frame_size: int | None = 256,
        rng: np.random.Generator | None = None,
        name: str = "human",
    ):
        if not db:
            raise ValueError("the human labeler needs the label file the page shows: pass labelers.label_cache=<file>")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout}: seconds to wait for answers must be > 0")
        if max_queries is not None and max_queries < 0:
            raise ValueError(f"max_queries={max_queries}: the budget must be >= 0 (or null for none)")
        self.db = Path(db).expanduser()
        if not goal and task:
            from vlmrl.labelers.vlm import load_prompt

            goal = load_prompt(task)["goal"]
        self.goal, self.name = str(goal), str(name)
        self.timeout, self.poll_interval = float(timeout), float(poll_interval)
        self.max_queries = None if max_queries is None else int(max_queries)
        self.queue = HumanQueue(self.db, frame_size)
        self.stats: Counter[str] = Counter()
        self.server = None
        if serve:
            from vlmrl.report.label_page import LabelPage
            from vlmrl.web import WebServer

            self._page = LabelPage(self.db, token_env=token_env, who=getpass.getuser())
            try:
                self.server = WebServer(self._page.app, host=host, port=port, name="label-page").start()
            except OSError as e:
                self._page.close()
                self.queue.close()
                raise ValueError(
                    f"cannot serve the label page on {host}:{port} ({e}): set labelers.labeler.port to a free port"
                    " (0 picks one) or labelers.labeler.serve=false and run `vlmrl labels cache=<label file>`"
                ) from None
            log.warning("human labels: answer the queries at %s/queries", self.server.url)

    @property
    def url(self) -> str | None:
        """Where the page is served (``None`` with ``serve=False``)."""
        return None if self.server is None else self.server.url

    @property
    def exhausted(self) -> bool:
        """True once ``max_queries`` pairs were put to the human."""
        return self.max_queries is not None and self.stats["asked"] >= self.max_queries

    def endpoint_stats(self) -> dict[str, int]:
        """Counters: ``asked``, ``answered``, ``expired`` (no answer in time), ``refused`` (over budget)."""
        return {k: int(v) for k, v in self.stats.items()}

    def cache_key(self, query: FragmentPair) -> str:
        """Key of one pair: the human namespace, the goal, and both last frames' hashes."""
        return LabelCache.key("human", "", self.goal, self._frames(query))

    def __call__(self, queries: Sequence[FragmentPair]) -> list[Label]:
        """Wait for the human's answers (at most ``timeout`` s); unanswered pairs come back ``failed``."""
        out: dict[int, Label] = {}
        for answers in self.label_as_completed(queries):
            out.update(answers)
        return [out[i] for i in range(len(queries))]

    def label_as_completed(self, queries: Sequence[FragmentPair]) -> Iterator[dict[int, Label]]:
        """Put the pairs on the page, then yield ``{query index: label}`` as the human answers them."""
        by_key: dict[str, list[int]] = {}
        for i, pair in enumerate(queries):
            by_key.setdefault(self.cache_key(pair), []).append(i)
        refused: dict[int, Label] = {}
        asked: list[tuple[str, FragmentPair]] = []
        for key, idx in by_key.items():
            if self.exhausted:
                self.stats["refused"] += 1
                refused.update(dict.fromkeys(idx, Label(-1, source=self.name, raw="budget exhausted", failed=True)))
                continue
            self.stats["asked"] += 1
            asked.append((key, queries[idx[0]]))
        if refused:
            yield refused
        if not asked:
            return
        ids = self.queue.ask(asked, self.goal)
        waiting = {qid: key for qid, (key, _) in zip(ids, asked, strict=True)}
        log.info("human labels: %d pairs waiting%s", len(waiting), f" at {self.url}/queries" if self.url else "")
        deadline = time.monotonic() + self.timeout
        while waiting:
            answers = self.queue.answered(list(waiting))
            if answers:
                group = {}
                for qid, (value, by, at) in answers.items():
                    key = waiting.pop(qid)
                    raw = json.dumps({"by": by, "at": at})
                    group.update(dict.fromkeys(by_key[key], Label(value, source=self.name, raw=raw)))
                self.stats["answered"] += len(answers)
                yield group
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
        if waiting:
            self.queue.expire(list(waiting))
            self.stats["expired"] += len(waiting)
            log.warning(
                "human labels: %d pairs got no answer within %g s; going on without them", len(waiting), self.timeout
            )
            late = Label(-1, source=self.name, raw=f"no answer within {self.timeout:g} s", failed=True)
            yield {i: late for key in waiting.values() for i in by_key[key]}

    def close(self) -> None:
        """Stop the page and close the queue."""
        if self.server is not None:
            self.server.stop()
            self._page.close()
            self.server = None
        self.queue.close()

    @staticmethod
    def _frames(pair: FragmentPair) -> list[np.ndarray]:
        frames = []
        for frag in (pair.first, pair.second):
            if frag.frames is None or len(frag.frames) == 0:
                raise ValueError("fragment has no frames: a human labeler needs rendered frames uint8 (T, H, W, 3)")
            frames.append(np.asarray(frag.frames[-1]))
        return frames
