"""Persistent label cache: a label paid for once is never paid for again, across runs.

Keys are ``sha256(labeler | model | prompt-template hash | content hashes)``; values are stored in SQLite
(WAL mode, one committed transaction per write) so a crash loses nothing that was acknowledged.
:class:`CachedLabeler` is the one cache layer: it wraps any labeler that names its cache key
(:meth:`~vlmrl.labelers.base.Labeler.cache_key`), online and offline alike.

For audits (the ``vlmrl labels`` page) the same file keeps, beside each preference label, the two frames shown
(downsampled PNGs in ``label_frames``, keyed by content hash) and the pair's ground truth (``label_pairs``).
A human override (``label_overrides``, every change and undo logged in ``label_override_log`` with who and
when) takes precedence over the machine label in :meth:`LabelCache.get`, so the next relabel or reward update
that reads the label uses it.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlmrl.labelers.base import Labeler
from vlmrl.types import Fragment, FragmentPair, Label, Spend


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


#: Tables of the audit trail kept beside ``labels`` (see the module docstring).
AUDIT_TABLES = (
    "CREATE TABLE IF NOT EXISTS label_frames (hash TEXT PRIMARY KEY, png BLOB NOT NULL, width INTEGER, height INTEGER)",
    "CREATE TABLE IF NOT EXISTS label_pairs (key TEXT PRIMARY KEY, first TEXT, second TEXT, task TEXT,"
    " gt_first REAL, gt_second REAL, truth INTEGER)",
    "CREATE TABLE IF NOT EXISTS label_overrides (key TEXT PRIMARY KEY, value INTEGER NOT NULL, by TEXT NOT NULL,"
    " at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS label_override_log (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,"
    " value INTEGER NOT NULL, previous INTEGER, by TEXT NOT NULL, at REAL NOT NULL, undone_by TEXT, undone_at REAL)",
    "CREATE INDEX IF NOT EXISTS label_override_log_key ON label_override_log (key, id)",
)
#: Values a human may give: 0 / 1 (first / second preferred; ONI: not helpful / helpful), 0.5 (equally good)
#: or -1 (can't tell).
OVERRIDE_VALUES = (-1, 0, 0.5, 1)


def ensure_audit_tables(db: sqlite3.Connection) -> None:
    """Create the frame, pair and override tables when missing (idempotent)."""
    for ddl in AUDIT_TABLES:
        db.execute(ddl)


def frame_png(frame: np.ndarray, max_side: int | None = None) -> tuple[bytes, int, int]:
    """``uint8 (H, W, 3)`` -> ``(PNG bytes, width, height)``, shrunk to ``max_side`` on its longer side."""
    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), img.width, img.height


def _fragment_return(fragment: Fragment) -> float | None:
    rewards = fragment.env_rewards
    return None if rewards is None or len(rewards) == 0 else float(np.asarray(rewards, np.float64).sum())


INSERT_FRAMES = "INSERT OR IGNORE INTO label_frames VALUES (?, ?, ?, ?)"
INSERT_PAIRS = "INSERT OR REPLACE INTO label_pairs VALUES (?, ?, ?, ?, ?, ?, ?)"


def pair_rows(
    items: Iterable[tuple[str, FragmentPair]], task: str = "", frame_size: int | None = 256
) -> tuple[list[tuple], list[tuple]]:
    """Rows of ``label_frames`` and ``label_pairs`` for labelled pairs ``(key, pair)``.

    Each fragment is shown by its last frame (what the VLM sees), kept as a PNG at most ``frame_size`` pixels
    on a side (``None``: no frames) under its content hash; ``truth`` is the ground-truth preference (1 when
    the second fragment's return is higher, 0 when lower, NULL when unknown or tied).
    """
    frames: dict[str, tuple[bytes, int, int]] = {}
    rows = []
    for key, pair in items:
        hashes: list[str | None] = []
        for frag in (pair.first, pair.second):
            if frame_size is None or frag.frames is None or len(frag.frames) == 0:
                hashes.append(None)
                continue
            frame = np.asarray(frag.frames[-1])
            digest = content_hash(frame)
            if digest not in frames:
                frames[digest] = frame_png(frame, frame_size)
            hashes.append(digest)
        r1, r2 = _fragment_return(pair.first), _fragment_return(pair.second)
        truth = None if r1 is None or r2 is None or r1 == r2 else int(r2 > r1)
        rows.append((key, hashes[0], hashes[1], task, r1, r2, truth))
    return [(h, *v) for h, v in frames.items()], rows


#: Spend recorded per budget key (queries answered, tokens, money), written as the answers it paid for arrive.
SPEND_TABLE = (
    "CREATE TABLE IF NOT EXISTS spend (budget_key TEXT PRIMARY KEY, queries INTEGER NOT NULL,"
    " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, updated REAL)"
)
ADD_SPEND = (
    "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(budget_key) DO UPDATE SET"
    " queries = queries + excluded.queries, prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = completion_tokens + excluded.completion_tokens,"
    " cost_usd = cost_usd + excluded.cost_usd, updated = excluded.updated"
)


class LabelCache:
    """SQLite-backed map from query key to :class:`Label`, safe to share between threads.

    Args:
        path: database file; ``None`` keeps the cache in memory (tests, dry runs).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._db = open_label_db(self.path)
        ensure_audit_tables(self._db)
        self._db.execute(SPEND_TABLE)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(labeler: str, model: str, template: str, contents: Iterable[bytes | str | np.ndarray]) -> str:
        """Cache key of one query: who answers, with which prompt, about which inputs."""
        template_hash = hashlib.sha256(template.encode("utf-8")).hexdigest()
        parts = [labeler, model, template_hash, *(content_hash(c) for c in contents)]
        return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()

    def get(self, key: str) -> Label | None:
        """The cached label for ``key`` (a human override wins over the machine label), or ``None``.

        Counts hits and misses. An overridden label has ``source="human"`` and a JSON ``raw`` naming who
        overrode it, when, and the machine label it replaces.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT l.value, l.source, l.raw, o.value, o.by, o.at FROM labels l"
                " LEFT JOIN label_overrides o ON o.key = l.key WHERE l.key = ?",
                (key,),
            ).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        value, source, raw, human, by, at = row
        value = int(value) if float(value).is_integer() else float(value)  # a preference tie is stored as 0.5
        if human is None:
            return Label(value=value, source=source or "", cached=True, raw=raw or "")
        note = {"override_by": by, "at": at, "machine_value": value, "machine_source": source or ""}
        human = int(human) if float(human).is_integer() else float(human)
        return Label(value=human, source="human", cached=True, raw=json.dumps(note))

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
        rows = [(k, float(lab.value), lab.source, lab.raw, json.dumps(m or {}), time.time()) for k, lab, m in items]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")

    # ---- spend ---------------------------------------------------------------------------------------------
    def spend(self, budget_key: str) -> Spend:
        """What was paid under ``budget_key`` by every run on this file (zero when nothing was)."""
        with self._lock:
            row = self._db.execute(
                "SELECT queries, prompt_tokens, completion_tokens, cost_usd FROM spend WHERE budget_key = ?",
                (budget_key,),
            ).fetchone()
        return Spend() if row is None else Spend(int(row[0]), int(row[1]), int(row[2]), float(row[3]))

    def add_spend(self, budget_key: str, spend: Spend) -> None:
        """Add what answers cost to ``budget_key``'s record (committed before returning).

        The cache layer adds it before it stores the labels those answers gave, so a kill between the two writes
        counts an answer that was paid for and not kept (a later run asks again, and pays again).
        """
        row = (budget_key, spend.queries, spend.prompt_tokens, spend.completion_tokens, spend.cost_usd, time.time())
        with self._lock:
            self._db.execute(ADD_SPEND, row)

    # ---- human overrides ----------------------------------------------------------------------------------
    def override(self, key: str, value: float, by: str) -> Label:
        """Store a human label for ``key`` that takes precedence over the machine label; returns the new label.

        Raises:
            KeyError: ``key`` has no label in this file (nothing is written).
            ValueError: ``value`` is not one of -1, 0, 0.5, 1, or ``by`` is empty (nothing is written).
        """
        if isinstance(value, bool) or not isinstance(value, int | float) or value not in OVERRIDE_VALUES:
            raise ValueError(
                f"override value {value!r}: use 0 (first / not helpful), 1 (second / helpful), 0.5 (equal) or -1"
            )
        if not str(by).strip():
            raise ValueError("an override needs the name of who made it")
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM labels WHERE key = ?", (key,)).fetchone() is None:
                    raise KeyError(key)
                prev = self._db.execute("SELECT value FROM label_overrides WHERE key = ?", (key,)).fetchone()
                self._db.execute(
                    "INSERT INTO label_override_log (key, value, previous, by, at) VALUES (?, ?, ?, ?, ?)",
                    (key, float(value), None if prev is None else prev[0], str(by), now),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO label_overrides VALUES (?, ?, ?, ?)", (key, float(value), str(by), now)
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return self.get(key)  # type: ignore[return-value]

    def undo_override(self, key: str, by: str) -> Label:
        """Take back the latest override of ``key`` (the one before it, or the machine label, applies again).

        Raises:
            KeyError: ``key`` has no override to undo (nothing is written).
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                live = self._db.execute(
                    "SELECT id FROM label_override_log WHERE key = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 2",
                    (key,),
                ).fetchall()
                if not live:
                    raise KeyError(key)
                self._db.execute(
                    "UPDATE label_override_log SET undone_by = ?, undone_at = ? WHERE id = ?",
                    (str(by), now, live[0][0]),
                )
                if len(live) > 1:  # the override before it applies again
                    self._db.execute(
                        "INSERT OR REPLACE INTO label_overrides SELECT key, value, by, at FROM label_override_log"
                        " WHERE id = ?",
                        (live[1][0],),
                    )
                else:
                    self._db.execute("DELETE FROM label_overrides WHERE key = ?", (key,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return self.get(key)  # type: ignore[return-value]

    def override_history(self, key: str) -> list[dict[str, Any]]:
        """Every override of ``key``, oldest first: value, previous, by, at, undone_by, undone_at."""
        cols = ("value", "previous", "by", "at", "undone_by", "undone_at")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(cols)} FROM label_override_log WHERE key = ? ORDER BY id", (key,)
            ).fetchall()
        return [dict(zip(cols, row, strict=True)) for row in rows]

    # ---- what was shown ------------------------------------------------------------------------------------
    def put_pairs(
        self, items: Iterable[tuple[str, FragmentPair]], task: str = "", frame_size: int | None = 256
    ) -> None:
        """Keep the frames shown and the ground truth of labelled pairs (:func:`pair_rows`), for the label page."""
        frames, pairs = pair_rows(items, task, frame_size)
        if not pairs:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(INSERT_FRAMES, frames)
            self._db.executemany(INSERT_PAIRS, pairs)
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
    queries whose :meth:`~Labeler.cache_key` is ``None`` are always asked. What the answers cost
    (``Label.spend``, unparseable answers included) is added to the labeler's :attr:`~Labeler.budget_key`
    record just before their labels are stored, and the labeler's budget reads that record
    (:meth:`Labeler.bind_spend`): a resumed run, or any run on the same file and key, continues from what was
    paid. Only the answers in flight at a kill can be paid twice.

    Args:
        labeler: the labeler that answers cache misses.
        cache: an open :class:`LabelCache` (shared, not closed here), or the path of its SQLite file
            (``~`` expanded; opened and closed by this object).
        frame_size: the frames of each stored preference pair are kept beside its label for audits, at most
            this many pixels on a side (``None``: not kept; the ground truth is kept either way).

    Example:
        >>> import numpy as np
        >>> from vlmrl.labelers.teacher import SimulatedTeacher
        >>> from vlmrl.types import Fragment, FragmentPair
        >>> labeler = CachedLabeler(SimulatedTeacher(), LabelCache())
        >>> pair = FragmentPair(Fragment(env_rewards=np.array([0.1])), Fragment(env_rewards=np.array([0.9])))
        >>> [(lab.value, lab.cached) for lab in labeler([pair]) + labeler([pair])]
        [(1, False), (1, True)]
    """

    def __init__(self, labeler: Labeler, cache: LabelCache | str | Path, frame_size: int | None = 256):
        if isinstance(labeler, CachedLabeler):
            raise ValueError("the labeler is already cached: wrap the inner labeler once")
        self.labeler = labeler
        self.name = labeler.name
        self._owns_cache = not isinstance(cache, LabelCache)
        self.cache = LabelCache(Path(cache).expanduser()) if self._owns_cache else cache
        self.frame_size = frame_size
        budget_key = labeler.budget_key
        if budget_key is not None:
            labeler.bind_spend(lambda: self.cache.spend(budget_key))

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
            budget_key = self.labeler.budget_key
            for answers in self.labeler.label_as_completed([queries[i] for i in todo]):
                rows: dict[str, tuple[str, Label, dict]] = {}  # one row per key, however often it was asked
                paid: dict[int, Spend] = {}  # one answer given for several queries is paid once
                for j, label in answers.items():
                    i = todo[j]
                    out[i] = label
                    if label.spend is not None:
                        paid[id(label)] = label.spend
                    if keys[i] is not None and not label.failed:
                        rows[keys[i]] = (keys[i], label, _query_meta(self.name, queries[i], label))
                if paid and budget_key is not None:  # what they cost first: no kill loses a paid answer's count
                    self.cache.add_spend(budget_key, sum(paid.values(), Spend()))
                if rows:  # stored before the next answers are waited for
                    self.cache.put_many(rows.values())
                    shown = {keys[todo[j]]: queries[todo[j]] for j in answers if keys[todo[j]] in rows}
                    pairs = [(k, q) for k, q in shown.items() if isinstance(q, FragmentPair)]
                    if pairs:
                        self.cache.put_pairs(pairs, self.labeler.goal, self.frame_size)
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

    @property
    def budget_key(self) -> str | None:
        """The wrapped labeler's budget key."""
        return self.labeler.budget_key

    def bind_spend(self, recorded: Callable[[], Spend]) -> None:
        """Hand ``recorded`` to the wrapped labeler."""
        self.labeler.bind_spend(recorded)

    def spend_total(self) -> dict[str, Any]:
        """The wrapped labeler's recorded spend and budget."""
        return self.labeler.spend_total()

    def close(self) -> None:
        """Close the wrapped labeler, and the cache if this object opened it."""
        self.labeler.close()
        if self._owns_cache:
            self.cache.close()


def _query_meta(labeler: str, query: Any, label: Label | None = None) -> dict[str, Any]:
    """Provenance stored beside a label: the labeler, for fragment pairs the fragments' ``meta``, and what the
    answer cost (``usage``: queries, prompt and completion tokens, cost_usd) and whether it was inconsistent.
    """  # noqa: D205
    meta: dict[str, Any] = {"labeler": labeler}
    if isinstance(query, FragmentPair) and (query.first.meta or query.second.meta):
        meta.update(first=query.first.meta, second=query.second.meta)
    if label is not None and label.spend is not None:
        meta["usage"] = label.spend.to_dict()
    if label is not None and label.inconsistent:
        meta["inconsistent"] = True
    return meta
