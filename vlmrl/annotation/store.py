"""Durable state of the annotation server: labels and the queue of messages waiting for one.

One SQLite file (WAL) holds the tables. ``labels`` has the schema of :class:`vlmrl.labelers.cache.LabelCache`
(so the same file serves as a label cache) with the message kept in ``meta``; ``pending`` holds every
message acknowledged as submitted and not yet labeled; ``dead_letter`` holds messages the backend refused
for good, with its error (they are not asked again). A submission is committed before it is acknowledged,
and a batch's labels are committed together with the removal of their pending rows, so killing the process
loses nothing acknowledged, and at most the batch in flight at the kill is asked again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from vlmrl.labelers.cache import LabelCache, open_label_db
from vlmrl.runs import atomic_path
from vlmrl.types import Label


class AnnotationStore:
    """Labels and pending messages of one judge configuration (labeler, model, prompt template).

    Args:
        path: SQLite file (created with its folder); ``None`` keeps everything in memory.
        labeler: the judge's cache namespace (e.g. ``"oni-judge:logprob"``).
        model: the judge's model name.
        template: the judge's prompt template (its hash is part of every key).
    """

    def __init__(self, path: str | Path | None, labeler: str, model: str, template: str):
        self.path = None if path is None else Path(path)
        self.labeler, self.model, self.template = labeler, model, template
        self._lock = threading.RLock()
        self._db = open_label_db(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS pending (key TEXT PRIMARY KEY, message TEXT, submitted REAL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS judge_state (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dead_letter (key TEXT PRIMARY KEY, message TEXT, error TEXT, failed REAL)"
        )
        self.labels: dict[str, int] = {}  # message -> label value, everything this judge has answered
        self.pending: OrderedDict[str, str] = OrderedDict()  # message -> key, oldest first
        self.in_flight: set[str] = set()
        self.dead: set[str] = set()  # messages the backend refused for good
        self._load()

    def key(self, message: str) -> str:
        """Cache key of a message under this judge configuration."""
        return LabelCache.key(self.labeler, self.model, self.template, [message])

    def _load(self) -> None:
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # A human override (the label page's, see vlmrl.labelers.cache) wins over the judge's label.
        human = dict(self._db.execute("SELECT key, value FROM label_overrides")) if "label_overrides" in tables else {}
        for key, value, meta in self._db.execute("SELECT key, value, meta FROM labels"):
            message = json.loads(meta or "{}").get("message")
            if isinstance(message, str) and self.key(message) == key:
                self.labels[message] = int(human.get(key, value))
        for key, message in self._db.execute("SELECT key, message FROM dead_letter"):
            if self.key(message) == key:
                self.dead.add(message)
        stale = []
        for key, message in self._db.execute("SELECT key, message FROM pending ORDER BY submitted"):
            if self.key(message) != key:
                continue  # queued by another judge configuration; left for it
            if message in self.labels or message in self.dead:
                stale.append((key,))
            else:
                self.pending[message] = key
        if stale:
            self._db.executemany("DELETE FROM pending WHERE key = ?", stale)

    def add(self, messages: Iterable[str]) -> tuple[int, int]:
        """Queue messages that have no label, are not queued yet and were not refused (committed before returning).

        Returns:
            ``(new, already_labeled)``: how many were queued now, and how many already had a label.
        """
        now = time.time()
        with self._lock:
            fresh: dict[str, str] = {}
            labeled = 0
            for m in messages:
                if m in self.labels:
                    labeled += 1
                elif m not in self.pending and m not in fresh and m not in self.dead:
                    fresh[m] = self.key(m)
            if fresh:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR IGNORE INTO pending VALUES (?, ?, ?)", [(k, m, now) for m, k in fresh.items()]
                )
                self._db.execute("COMMIT")
                self.pending.update(fresh)
        return len(fresh), labeled

    def take(self, n: int, newest_first: bool = True) -> list[str]:
        """Mark up to ``n`` queued messages as in flight and return them (ONI labels the newest first)."""
        with self._lock:
            order = reversed(self.pending) if newest_first else iter(self.pending)
            batch = []
            for m in order:
                if m not in self.in_flight:
                    batch.append(m)
                    if len(batch) >= n:
                        break
            self.in_flight.update(batch)
        return batch

    def release(self, messages: Iterable[str]) -> None:
        """Put in-flight messages back in the queue (their request failed; they will be retried)."""
        with self._lock:
            self.in_flight.difference_update(messages)

    def put(self, answered: Sequence[tuple[str, Label]]) -> None:
        """Store labels and drop their messages from the queue, in one transaction."""
        if not answered:
            return
        now = time.time()
        rows, done = [], []
        for m, label in answered:
            key = self.pending.get(m) or self.key(m)
            meta = json.dumps({"message": m})
            rows.append((key, int(label.value), label.source, label.raw, meta, now))
            done.append((key,))
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("DELETE FROM pending WHERE key = ?", done)
            self._db.execute("COMMIT")
            for m, label in answered:
                self.labels[m] = int(label.value)
                self.pending.pop(m, None)
                self.in_flight.discard(m)

    def put_dead(self, refused: Sequence[tuple[str, str]]) -> None:
        """Move messages the backend refused for good, with its error, from the queue to ``dead_letter``."""
        if not refused:
            return
        now = time.time()
        rows = [(self.pending.get(m) or self.key(m), m, error, now) for m, error in refused]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO dead_letter VALUES (?, ?, ?, ?)", rows)
            self._db.executemany("DELETE FROM pending WHERE key = ?", [(key,) for key, *_ in rows])
            self._db.execute("COMMIT")
            for m, _ in refused:
                self.dead.add(m)
                self.pending.pop(m, None)
                self.in_flight.discard(m)

    def dead_letters(self, limit: int = 1000) -> list[tuple[str, str]]:
        """``(message, error)`` of refused messages of this judge configuration, the latest first."""
        with self._lock:
            rows = self._db.execute("SELECT key, message, error FROM dead_letter ORDER BY failed DESC").fetchall()
        return [(m, e) for key, m, e in rows if m in self.dead and self.key(m) == key][:limit]

    def get_state(self, name: str) -> dict | None:
        """A JSON value this judge configuration saved under ``name`` (e.g. its calibration), or ``None``."""
        with self._lock:
            key = self.key(f"state:{name}")
            row = self._db.execute("SELECT value FROM judge_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_state(self, name: str, value: dict) -> None:
        """Save a JSON value for this judge configuration (committed before returning)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO judge_state VALUES (?, ?)", (self.key(f"state:{name}"), json.dumps(value))
            )

    def lookup(self, messages: Iterable[str]) -> dict[str, int | None]:
        """Label value of each message, ``None`` while it has none."""
        with self._lock:
            return {m: self.labels.get(m) for m in messages}

    def backup(self, path: str | Path) -> None:
        """Write a consistent copy of the database to ``path`` (e.g. into a run folder)."""
        with atomic_path(path) as tmp:
            dst = sqlite3.connect(str(tmp))
            with self._lock:
                self._db.backup(dst)
            dst.close()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
