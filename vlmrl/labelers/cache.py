"""Persistent label cache: a label paid for once is never paid for again, across runs.

Keys are ``sha256(labeler | model | prompt-template hash | content hashes)``; values are stored in SQLite
(WAL mode, one committed transaction per write) so a crash loses nothing that was acknowledged.
:class:`CachedLabeler` is the one cache layer: it wraps any labeler that names its cache key
(:meth:`~vlmrl.labelers.base.Labeler.cache_key`), online and offline alike.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmrl.labelers.base import Labeler
from vlmrl.types import FragmentPair, Label


def content_hash(item: bytes | str | np.ndarray) -> str:
    """Stable hash of one query input (image array, text or raw bytes)."""
    h = hashlib.sha256()
    if isinstance(item, np.ndarray):
        arr = np.ascontiguousarray(item)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    elif isinstance(item, str):
        h.update(item.encode("utf-8"))
    elif isinstance(item, bytes | bytearray | memoryview):
        h.update(bytes(item))
    else:
        raise TypeError(f"cannot hash query input of type {type(item).__name__}")
    return h.hexdigest()


def open_label_db(path: Path | None) -> sqlite3.Connection:
    """SQLite connection with the ``labels`` table, WAL journal and autocommit (``None``: in memory).

    Shared by this cache and the annotation server's store, so both read and write the same schema.
    """
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS labels (key TEXT PRIMARY KEY, value INTEGER NOT NULL, source TEXT,"
        " raw TEXT, meta TEXT, created REAL)"
    )
    return db


class LabelCache:
    """SQLite-backed map from query key to :class:`Label`, safe to share between threads.

    Args:
        path: database file; ``None`` keeps the cache in memory (tests, dry runs).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._db = open_label_db(self.path)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(labeler: str, model: str, template: str, contents: Iterable[bytes | str | np.ndarray]) -> str:
        """Cache key of one query: who answers, with which prompt, about which inputs."""
        template_hash = hashlib.sha256(template.encode("utf-8")).hexdigest()
        parts = [labeler, model, template_hash, *(content_hash(c) for c in contents)]
        return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()

    def get(self, key: str) -> Label | None:
        """The cached label for ``key``, or ``None``; counts hits and misses."""
        with self._lock:
            row = self._db.execute("SELECT value, source, raw FROM labels WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return Label(value=int(row[0]), source=row[1] or "", cached=True, raw=row[2] or "")

    def get_many(self, keys: Iterable[str]) -> dict[str, Label]:
        """Cached labels for the keys that have one."""
        out = {}
        for k in keys:
            label = self.get(k)
            if label is not None:
                out[k] = label
        return out

    def put(self, key: str, label: Label, meta: dict | None = None) -> None:
        """Store one label durably (committed before returning)."""
        self.put_many([(key, label, meta)])

    def put_many(self, items: Iterable[tuple[str, Label, dict | None]]) -> None:
        """Store several labels in one transaction."""
        rows = [(k, int(lab.value), lab.source, lab.raw, json.dumps(m or {}), time.time()) for k, lab, m in items]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM labels WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])

    @property
    def hit_rate(self) -> float:
        """Fraction of lookups served from the cache since this object was opened."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


class CachedLabeler(Labeler):
    """Serves answers from a :class:`LabelCache` and asks the wrapped labeler only for the rest.

    Every answer is stored as soon as the wrapped labeler yields it (:meth:`Labeler.label_as_completed`), so
    neither a crash nor a later run pays for it again. Failed labels (``Label.failed``) are not stored, and
    queries whose :meth:`~Labeler.cache_key` is ``None`` are always asked.

    Args:
        labeler: the labeler that answers cache misses.
        cache: an open :class:`LabelCache` (shared, not closed here), or the path of its SQLite file
            (``~`` expanded; opened and closed by this object).

    Example:
        >>> import numpy as np
        >>> from vlmrl.labelers.teacher import SimulatedTeacher
        >>> from vlmrl.types import Fragment, FragmentPair
        >>> labeler = CachedLabeler(SimulatedTeacher(), LabelCache())
        >>> pair = FragmentPair(Fragment(env_rewards=np.array([0.1])), Fragment(env_rewards=np.array([0.9])))
        >>> [(lab.value, lab.cached) for lab in labeler([pair]) + labeler([pair])]
        [(1, False), (1, True)]
    """

    def __init__(self, labeler: Labeler, cache: LabelCache | str | Path):
        if isinstance(labeler, CachedLabeler):
            raise ValueError("the labeler is already cached: wrap the inner labeler once")
        self.labeler = labeler
        self.name = labeler.name
        self._owns_cache = not isinstance(cache, LabelCache)
        self.cache = LabelCache(Path(cache).expanduser()) if self._owns_cache else cache

    def __call__(self, queries: Sequence[Any]) -> list[Label]:
        """Label ``queries``: cached answers have ``cached=True``; the misses go to the wrapped labeler in one call."""
        keys = [self.labeler.cache_key(q) for q in queries]
        out: list[Label | None] = [None] * len(queries)
        todo = []
        for i, key in enumerate(keys):
            hit = None if key is None else self.cache.get(key)
            if hit is None:
                todo.append(i)
            else:
                out[i] = hit
        if todo:
            for answers in self.labeler.label_as_completed([queries[i] for i in todo]):
                rows: dict[str, tuple[str, Label, dict]] = {}  # one row per key, however often it was asked
                for j, label in answers.items():
                    i = todo[j]
                    out[i] = label
                    if keys[i] is not None and not label.failed:
                        rows[keys[i]] = (keys[i], label, _query_meta(self.name, queries[i]))
                if rows:  # stored before the next answers are waited for
                    self.cache.put_many(rows.values())
        missing = [i for i, label in enumerate(out) if label is None]
        if missing:
            raise ValueError(f"labeler {self.name} gave no label for {len(missing)} of {len(todo)} queries")
        return out  # type: ignore[return-value]

    def cache_key(self, query: Any) -> str | None:
        """The wrapped labeler's key."""
        return self.labeler.cache_key(query)

    @property
    def exhausted(self) -> bool:
        """The wrapped labeler's budget state (cached answers stay free after it)."""
        return self.labeler.exhausted

    def endpoint_stats(self) -> dict[str, int]:
        """The wrapped labeler's endpoint counters."""
        return self.labeler.endpoint_stats()

    def close(self) -> None:
        """Close the wrapped labeler, and the cache if this object opened it."""
        self.labeler.close()
        if self._owns_cache:
            self.cache.close()


def _query_meta(labeler: str, query: Any) -> dict[str, Any]:
    """Provenance stored beside a label: the labeler and, for fragment pairs, the fragments' ``meta``."""
    meta: dict[str, Any] = {"labeler": labeler}
    if isinstance(query, FragmentPair) and (query.first.meta or query.second.meta):
        meta.update(first=query.first.meta, second=query.second.meta)
    return meta
