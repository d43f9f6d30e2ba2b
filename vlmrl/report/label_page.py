"""The label-audit page (``vlmrl labels``): see every label of a label file, filter them, override them, undo.

One SQLite label file (a run's ``labels.sqlite``, a relabel work folder's, the shared label cache or an ONI
annotation store) is served as server-rendered pages (FastAPI + Jinja2, no JavaScript):

- preference pairs: both frames side by side, the task text, the VLM's stage-1 analysis and stage-2 answer,
  the ground-truth (perfect simulated teacher) preference where the fragments' rewards are known, and whether
  the label agrees with it; ONI messages: the message, the judge's label and its log-prob margin;
- filters (disagrees with the ground truth, low confidence, inconsistent when the images are swapped,
  overridden) with their counts at the top, and paging, so 100,000 labels open as fast as 1,000;
- a human override of any label, stored in the same file with who and when and used by every later reader of
  the label cache (:meth:`~vlmrl.labelers.cache.LabelCache.get`), with undo;
- the queries a :class:`~vlmrl.labelers.human.HumanLabeler` is waiting on, answered on ``/queries``.

Labels are addressed by their cache key and frames by their content hash: both are database keys, never file
paths, and the app opens no file but the one it was given. With ``$VLMRL_LABELS_TOKEN`` set every request
needs the token: ``Authorization: Bearer <token>``, or once ``/?token=<token>`` in a browser, which sets an
HttpOnly cookie and redirects to the same page without the token in its address.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from omegaconf import OmegaConf
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlmrl.labelers.cache import OVERRIDE_VALUES, LabelCache
from vlmrl.labelers.human import HumanQueue
from vlmrl.runs import RunFolder
from vlmrl.web import bearer_token, harden, tokens_equal

TOKEN_ENV = "VLMRL_LABELS_TOKEN"
TOKEN_COOKIE = "vlmrl_labels_token"
WHO_COOKIE = "vlmrl_labels_who"
MAX_BODY = 64 << 10  # forms are a few fields
TEMPLATES = Path(__file__).resolve().parent / "templates"

FILTERS = {
    "all": "All",
    "disagree": "Disagrees with ground truth",
    "low": "Low confidence",
    "inconsistent": "Inconsistent when swapped",
    "overridden": "Overridden",
}
KINDS = {"preference": "Preference pairs", "message": "ONI messages"}
#: Usage numbers shown per label when its answer recorded them (``meta["usage"]``, written by the cache layer).
SPEND_FIELDS = ("prompt_tokens", "completion_tokens", "cost_usd")

_HEX = re.compile(r"[0-9a-f]{64}")
_MARGIN = re.compile(r"margin=(-?[\d.]+(?:e-?\d+)?)(?: threshold=(-?[\d.]+(?:e-?\d+)?))?")

# ---- SQL over labels LEFT JOIN label_pairs LEFT JOIN label_overrides ------------------------------------------
EFFECTIVE = "COALESCE(o.value, l.value)"  # what every reader of the cache gets: the override wins
IS_MESSAGE = "(substr(COALESCE(l.meta, ''), 1, 11) = '{\"message\":')"  # the annotation store's meta: {"message": ...}
MARGIN_SQL = "CAST(substr(l.raw, 8, instr(l.raw, ' ') - 8) AS REAL)"
THRESHOLD_SQL = "CAST(substr(l.raw, instr(l.raw, 'threshold=') + 10) AS REAL)"
# Cheap string tests, not JSON functions: these run over every row of the file when the counts are computed.
CONDITIONS = {
    "all": "1",
    "disagree": f"(p.truth IS NOT NULL AND {EFFECTIVE} IN (0, 1) AND {EFFECTIVE} != p.truth)",
    "low": (  # can't tell, or an ONI margin close to its threshold (CASE: SQLite's AND/OR may evaluate both sides)
        f"(CASE WHEN {EFFECTIVE} = -1 THEN 1 WHEN substr(l.raw, 1, 7) = 'margin=' AND instr(l.raw, ' threshold=') > 0"
        f" THEN abs({MARGIN_SQL} - {THRESHOLD_SQL}) < :low ELSE 0 END)"
    ),
    "inconsistent": "(instr(l.meta, '\"inconsistent\": true') > 0)",  # the cache's meta: {"inconsistent": true}
    "overridden": "(o.value IS NOT NULL)",
}
NO_PAIRS = (
    "(SELECT NULL AS key, NULL AS first, NULL AS second, NULL AS task, NULL AS gt_first, NULL AS gt_second,"
    " NULL AS truth LIMIT 0)"
)
NO_OVERRIDES = "(SELECT NULL AS key, NULL AS value, NULL AS by, NULL AS at LIMIT 0)"


class LabelFileError(ValueError):
    """A label file (or a run folder's) that cannot be shown, with what to do about it."""


def find_label_file(source: str | Path) -> tuple[Path, RunFolder | None]:
    """The label file of ``source`` and its run folder (``None`` when given a file).

    ``source`` is the SQLite file itself, or a folder holding one: ``labels.sqlite`` (a relabel work folder),
    ``labels/*.sqlite`` (a run's copy), ``*.work/labels.sqlite`` (a relabel output folder), or the label cache
    its ``config.yaml`` names (``labelers.label_cache``).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        LabelFileError: the folder holds no labels.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass run_dir=<run folder> or cache=<label file>.sqlite")
    if path.is_file():
        return path, None
    candidates = [path / "labels.sqlite", *sorted((path / "labels").glob("*.sqlite"))]
    candidates += sorted(path.glob("*.work/labels.sqlite"))
    if (path / "config.yaml").is_file():
        try:
            named = OmegaConf.select(OmegaConf.load(path / "config.yaml"), "labelers.label_cache", default=None)
        except Exception:  # noqa: BLE001 - an unreadable config names no cache; the other places still count
            named = None
        if isinstance(named, str) and named:
            candidates.append(Path(named).expanduser())
    for candidate in candidates:
        if candidate.is_file():
            return candidate, RunFolder(path)
    raise LabelFileError(
        f"run folder {path} has no labels (no labels.sqlite, labels/*.sqlite, *.work/labels.sqlite or"
        " labelers.label_cache in config.yaml): run it with a labeler (labelers=rlvlmf, teacher, human, oni)"
        " or pass cache=<label file>.sqlite"
    )


@dataclass
class Listing:
    """One page of labels: rows, counts per filter, paging."""

    kind: str
    filter: str
    page: int
    pages: int
    total: int
    counts: dict[str, int]
    kinds: dict[str, int]
    rows: list[dict[str, Any]]
    spend_columns: list[str]


class LabelFile:
    """Read side of one label file; writes (overrides, answers) go through the label cache and the human queue.

    Args:
        path: the SQLite file.
        low_margin: an ONI label whose yes/no log-prob margin is this close to its threshold is low confidence.

    Raises:
        FileNotFoundError: no file at ``path`` (none is created).
        LabelFileError: the file is not SQLite or has no ``labels`` table (it is not written to).
    """

    def __init__(self, path: str | Path, low_margin: float = 0.5):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"no label file at {self.path}: pass the labels.sqlite a run or relabel wrote")
        self.low_margin = float(low_margin)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA query_only = 1")  # this connection only reads
        try:
            tables = self._tables()
            columns = {r[1] for r in self._query("PRAGMA table_info(labels)")} if "labels" in tables else set()
            if "labels" in tables:
                self._query("SELECT COUNT(*) FROM labels")
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise LabelFileError(f"{self.path} is not a readable label file ({e}); nothing was changed") from None
        missing = {"key", "value", "source", "raw", "meta", "created"} - columns
        if missing:
            self._db.close()
            what = "no labels table" if "labels" not in tables else f"a labels table without {sorted(missing)}"
            raise LabelFileError(f"{self.path} has {what}: it is not a vlmrl label file; nothing was changed")
        self._cache: LabelCache | None = None
        self._queue: HumanQueue | None = None
        self._memo: dict[str, tuple[int, Any]] = {}

    # ---- reading -------------------------------------------------------------------------------------------
    def _tables(self) -> set[str]:
        return {r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _from(self) -> str:
        tables = self._tables()
        pairs = "label_pairs" if "label_pairs" in tables else NO_PAIRS
        overrides = "label_overrides" if "label_overrides" in tables else NO_OVERRIDES
        return f"labels l LEFT JOIN {pairs} p ON p.key = l.key LEFT JOIN {overrides} o ON o.key = l.key"

    def _query(self, sql: str, params: dict | tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def listing(self, kind: str | None = None, filter: str = "all", page: int = 1, per_page: int = 50) -> Listing:
        """One page of labels of ``kind`` (default: preferences when there are any) passing ``filter``."""
        if filter not in CONDITIONS:
            raise ValueError(f"unknown filter {filter!r}: use one of {', '.join(CONDITIONS)}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
        kinds = self.kinds()
        if kind is None:
            kind = "message" if kinds["message"] and not kinds["preference"] else "preference"
        where_kind = IS_MESSAGE if kind == "message" else f"NOT {IS_MESSAGE}"
        counts = self.counts(kind)
        params = {"low": self.low_margin}
        source = self._from()
        total = counts[filter]
        pages = max(1, math.ceil(total / per_page))
        page = min(max(1, int(page)), pages)
        # The page's rowids first (the skipped rows are only tested, not read), then their columns.
        rows = self._query(
            "SELECT l.key, l.value, l.source, l.raw, l.meta, l.created, o.value, o.by, o.at, p.first, p.second,"
            f" p.task, p.gt_first, p.gt_second, p.truth FROM {source} WHERE l.rowid IN (SELECT l.rowid"
            f" FROM {source} WHERE {where_kind} AND {CONDITIONS[filter]} ORDER BY l.rowid DESC LIMIT :limit"
            " OFFSET :offset) ORDER BY l.rowid DESC",
            {**params, "limit": per_page, "offset": (page - 1) * per_page},
        )
        shown = [self._row(r) for r in rows]
        spend_columns = [c for c in SPEND_FIELDS if any(r["spend"].get(c) is not None for r in shown)]
        return Listing(kind, filter, page, pages, total, counts, kinds, shown, spend_columns)

    def _cached(self, name: str, compute: Any) -> Any:
        """``compute()``, reused until the file changes (``PRAGMA data_version`` moves on every outside commit)."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        hit = self._memo.get(name)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        self._memo[name] = (version, value)
        return value

    def kinds(self) -> dict[str, int]:
        """How many preference labels and ONI messages the file holds."""

        def compute() -> dict[str, int]:
            messages, total = self._query(f"SELECT COALESCE(SUM({IS_MESSAGE}), 0), COUNT(*) FROM labels l")[0]
            return {"preference": int(total - messages), "message": int(messages)}

        return self._cached("kinds", compute)

    def counts(self, kind: str) -> dict[str, int]:
        """Labels of ``kind`` passing each filter (one pass over the file, then reused until it changes)."""
        where_kind = IS_MESSAGE if kind == "message" else f"NOT {IS_MESSAGE}"
        sums = ", ".join(f"COALESCE(SUM({cond}), 0)" for name, cond in CONDITIONS.items() if name != "all")

        def compute() -> dict[str, int]:
            sql = f"SELECT COUNT(*), {sums} FROM {self._from()} WHERE {where_kind}"
            row = self._query(sql, {"low": self.low_margin})[0]
            return dict(zip(CONDITIONS, (int(v) for v in row), strict=True))

        return self._cached(f"counts:{kind}", compute)

    def label(self, key: str) -> dict[str, Any] | None:
        """One label with everything known about it (``None`` when the file has no such key)."""
        rows = self._query(
            "SELECT l.key, l.value, l.source, l.raw, l.meta, l.created, o.value, o.by, o.at, p.first, p.second,"
            f" p.task, p.gt_first, p.gt_second, p.truth FROM {self._from()} WHERE l.key = ?",
            (key,),
        )
        if not rows:
            return None
        out = self._row(rows[0])
        out["history"] = []
        if "label_override_log" in self._tables():
            cols = ("value", "previous", "by", "at", "undone_by", "undone_at")
            out["history"] = [
                dict(zip(cols, r, strict=True))
                for r in self._query(
                    f"SELECT {', '.join(cols)} FROM label_override_log WHERE key = ? ORDER BY id", (key,)
                )
            ]
        return out

    def has_label(self, key: str) -> bool:
        """Whether the file holds a label under ``key``."""
        return bool(self._query("SELECT 1 FROM labels WHERE key = ?", (key,)))

    def frame(self, digest: str) -> bytes | None:
        """The PNG of the frame with content hash ``digest``, or ``None``."""
        if "label_frames" not in self._tables():
            return None
        rows = self._query("SELECT png FROM label_frames WHERE hash = ?", (digest,))
        return bytes(rows[0][0]) if rows else None

    def spend(self) -> list[dict[str, Any]]:
        """What was paid per budget key, as the label cache records it (``[]`` when nothing was)."""
        if "spend" not in self._tables():
            return []
        cols = ("budget_key", "queries", "prompt_tokens", "completion_tokens", "cost_usd")
        rows = self._query(f"SELECT {', '.join(cols)} FROM spend ORDER BY budget_key")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def open_queries(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        """The oldest ``limit`` queries waiting for a human, and how many wait in all."""
        if "human_queries" not in self._tables():
            return [], 0
        cols = ("id", "key", "first", "second", "task", "asked")
        rows = self._query(
            f"SELECT {', '.join(cols)} FROM human_queries WHERE status = 'open' ORDER BY id LIMIT ?", (int(limit),)
        )
        waiting = self._query("SELECT COUNT(*) FROM human_queries WHERE status = 'open'")[0][0]
        return [dict(zip(cols, r, strict=True)) for r in rows], int(waiting)

    def _row(self, r: tuple) -> dict[str, Any]:
        key, value, source, raw, meta, created, human, by, at, first, second, task, gt1, gt2, truth = r
        meta_d = _json(meta)
        raw_d = _json(raw)
        machine = _number(value)
        effective = machine if human is None else _number(human)
        usage = meta_d.get("usage") if isinstance(meta_d.get("usage"), dict) else {}  # what the answer cost
        spend = {name: usage.get(name) for name in SPEND_FIELDS}
        margin = threshold = None
        m = _MARGIN.match(raw or "")
        if m:
            margin, threshold = float(m[1]), None if m[2] is None else float(m[2])
        return {
            "key": key,
            "value": effective,
            "machine_value": machine,
            "source": source or "",
            "raw": raw or "",
            "analysis": raw_d.get("analysis") if isinstance(raw_d.get("analysis"), str) else None,
            "answer": raw_d.get("answer") if isinstance(raw_d.get("answer"), str) else None,
            "inconsistent": bool(meta_d.get("inconsistent")),
            "meta": meta_d,
            "message": meta_d.get("message") if isinstance(meta_d.get("message"), str) else None,
            "created": created,
            "overridden": human is not None,
            "by": by,
            "at": at,
            "first": first,
            "second": second,
            "task": task or "",
            "gt_first": gt1,
            "gt_second": gt2,
            "truth": truth,
            "agrees": None if truth is None or effective not in (0, 1) else effective == truth,
            "machine_agrees": None if truth is None or machine not in (0, 1) else machine == truth,
            "margin": margin,
            "threshold": threshold,
            "spend": spend,
        }

    # ---- writing -------------------------------------------------------------------------------------------
    def _writer(self) -> LabelCache:
        if self._cache is None:
            self._cache = LabelCache(self.path)
        return self._cache

    def override(self, key: str, value: int, by: str) -> None:
        """Store a human label for ``key`` (KeyError for an unknown key: checked before anything is opened)."""
        if not self.has_label(key):
            raise KeyError(key)
        self._writer().override(key, value, by)

    def undo(self, key: str, by: str) -> None:
        """Take back the latest override of ``key`` (KeyError when it has none)."""
        label = self.label(key)
        if label is None or not label["overridden"]:
            raise KeyError(key)
        self._writer().undo_override(key, by)

    def answer(self, query_id: int, value: int, by: str) -> None:
        """Answer an open human query (KeyError for an unknown or closed id)."""
        if "human_queries" not in self._tables():
            raise KeyError(query_id)
        if self._queue is None:
            self._queue = HumanQueue(self.path)
        self._queue.answer(query_id, value, by)

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            self._db.close()
        for writer in (self._cache, self._queue):
            if writer is not None:
                writer.close()


def _json(text: str | None) -> dict[str, Any]:
    if not text or text[0] != "{":
        return {}
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}


def _safe_back(back: str | None, default: str = "/") -> str:
    """A redirect target on this site only (a path, never another host)."""
    if not back or not back.startswith("/") or back.startswith("//") or "\\" in back or any(c < " " for c in back):
        return default
    return back


def _number(value: float) -> int | float:
    """A stored label value as it reads best: ``1`` for 1.0, ``0.5`` stays."""
    return int(value) if float(value).is_integer() else float(value)


def _preference_name(value: float | None) -> str:
    return {0: "first", 1: "second", 0.5: "equally good", -1: "can't tell"}.get(value, str(value))


def _message_name(value: float | None) -> str:
    return {1: "helpful", 0: "not helpful", -1: "unparseable"}.get(value, str(value))


def _when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))


class LabelPage:
    """The web app over one label file (``.app``, a FastAPI app with the shared request limits).

    Args:
        source: a label file, or a folder holding one (see :func:`find_label_file`).
        token_env: environment variable with the access token (unset or empty: no token needed).
        who: the name overrides are stored under unless the page says another (default: the OS user).
        per_page: labels per page.
        low_margin: ONI margin distance to the threshold below which a label counts as low confidence.
        max_body: request body limit in bytes.
    """

    def __init__(
        self,
        source: str | Path,
        token_env: str = TOKEN_ENV,
        who: str | None = None,
        per_page: int = 50,
        low_margin: float = 0.5,
        max_body: int = MAX_BODY,
    ):
        if not 1 <= int(per_page) <= 1000:
            raise ValueError(f"per_page={per_page}: show 1 to 1000 labels per page")
        path, self.run = find_label_file(source)
        self.labels = LabelFile(path, low_margin)
        self.token_env, self.who, self.per_page = token_env, who or getpass.getuser(), int(per_page)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
        )
        self.env.globals.update(when=_when, filters=FILTERS, kinds=KINDS, pref=_preference_name, oni=_message_name)
        self.app = harden(self._build(), max_body=max_body)

    # ---- helpers -------------------------------------------------------------------------------------------
    def _render(self, name: str, request: Request, code: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("who", self._who(request))
        ctx.setdefault("label_file", str(self.labels.path))
        ctx.setdefault("run_dir", None if self.run is None else str(self.run.path))
        return HTMLResponse(self.env.get_template(name).render(**ctx), status_code=code)

    def _who(self, request: Request) -> str:
        return (request.cookies.get(WHO_COOKIE) or self.who)[:100]

    def _stats(self) -> dict[str, Any] | str | None:
        if self.run is None:
            return None
        try:
            stats = self.run.read_label_stats()
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
            return f"labels/stats.json is unreadable ({e})"
        if stats is None:
            return None
        out = stats.to_dict()
        extra = out.pop("extra", {}) or {}
        out.update({k: v for k, v in extra.items() if isinstance(v, int | float | str | bool) or v is None})
        for k, v in extra.items():  # one level of nested numbers (spend totals, endpoint counters)
            if isinstance(v, dict) and all(isinstance(x, int | float) for x in v.values()) and len(v) <= 12:
                out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        return out

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        try:
            if ctype == "application/json":
                data = json.loads(body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                return {str(k): str(v) for k, v in data.items()}
            if ctype in ("application/x-www-form-urlencoded", ""):
                parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
                return {k: v[-1] for k, v in parsed.items()}
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPException(400, f"unreadable form ({e})") from None
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded or application/json")

    @staticmethod
    def _value(form: dict[str, str]) -> float:
        try:
            value = float(form.get("value", ""))
        except ValueError:
            value = None
        if value not in OVERRIDE_VALUES:
            raise HTTPException(400, f"value={form.get('value')!r}: use 0 (first), 1 (second), 0.5 (equal) or -1")
        return _number(value)

    def _by(self, form: dict[str, str], request: Request) -> str:
        by = (form.get("by") or "").strip() or self._who(request)
        if len(by) > 100:
            raise HTTPException(400, "the name is over 100 characters")
        return by

    def _check_access(self, request: Request) -> Response | None:
        """None when the request may pass; else the answer (401, or the redirect that sets the cookie)."""
        expected = os.environ.get(self.token_env)
        if not expected:
            return None
        given = request.query_params.get("token")
        if given is not None and request.method == "GET" and tokens_equal(given, expected):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            redirect = RedirectResponse(_safe_back(target), status_code=303)
            redirect.set_cookie(TOKEN_COOKIE, expected, httponly=True, samesite="strict")
            return redirect
        if tokens_equal(bearer_token(request), expected) or tokens_equal(request.cookies.get(TOKEN_COOKIE), expected):
            return None
        detail = (
            f"this page needs the token in ${self.token_env}: open /?token=<token> once (a cookie keeps it)"
            " or send Authorization: Bearer <token>"
        )
        if "text/html" in request.headers.get("accept", ""):
            return self._render("error.html", request, 401, status=401, detail=detail, who="")
        return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    # ---- routes --------------------------------------------------------------------------------------------
    def _build(self) -> FastAPI:
        app = FastAPI(title="vlmrl labels", docs_url=None, redoc_url=None, openapi_url=None)
        labels = self.labels

        @app.middleware("http")
        async def access(request: Request, call_next):
            refused = self._check_access(request)
            return refused if refused is not None else await call_next(request)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
            if "text/html" in request.headers.get("accept", ""):
                return self._render("error.html", request, exc.status_code, status=exc.status_code, detail=exc.detail)
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

        @app.exception_handler(sqlite3.DatabaseError)
        async def db_error(request: Request, exc: sqlite3.DatabaseError) -> Response:
            detail = f"the label file {labels.path} cannot be read ({exc})"
            return await http_error(request, StarletteHTTPException(500, detail))

        @app.get("/", response_class=HTMLResponse)
        def index(request: Request, kind: str | None = None, filter: str = "all", page: str = "1") -> Response:
            if not page.isdigit():
                raise HTTPException(400, f"page={page!r}: pages are numbered from 1")
            try:
                listing = labels.listing(kind or None, filter, int(page), self.per_page)
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
            _, waiting = labels.open_queries(0)
            here = str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")

            def link(**changes: Any) -> str:
                params = {"kind": listing.kind, "filter": listing.filter, "page": listing.page, **changes}
                return "/?" + urlencode({k: v for k, v in params.items() if v not in (None, "all", 1)})

            return self._render(
                "labels.html",
                request,
                listing=listing,
                stats=self._stats(),
                spend=labels.spend(),
                waiting=waiting,
                here=here,
                link=link,
            )

        @app.get("/labels/{key}", response_class=HTMLResponse)
        def detail(request: Request, key: str) -> Response:
            label = labels.label(key)
            if label is None:
                raise HTTPException(404, f"no label {key!r} in {labels.path}")
            return self._render("label.html", request, label=label, here=f"/labels/{key}")

        @app.post("/labels/{key}/override")
        async def override(request: Request, key: str) -> Response:
            form = await self._form(request)
            value, by = self._value(form), self._by(form, request)
            try:
                labels.override(key, value, by)
            except KeyError:
                raise HTTPException(404, f"no label {key!r} in {labels.path}: nothing was written") from None
            return RedirectResponse(_safe_back(form.get("back"), f"/labels/{key}"), status_code=303)

        @app.post("/labels/{key}/undo")
        async def undo(request: Request, key: str) -> Response:
            form = await self._form(request)
            try:
                labels.undo(key, self._by(form, request))
            except KeyError:
                raise HTTPException(404, f"label {key!r} has no override to undo: nothing was written") from None
            return RedirectResponse(_safe_back(form.get("back"), f"/labels/{key}"), status_code=303)

        @app.get("/queries", response_class=HTMLResponse)
        def queries(request: Request) -> Response:
            rows, waiting = labels.open_queries(20)
            return self._render("queries.html", request, queries=rows, waiting=waiting, here="/queries")

        @app.post("/queries/{query_id}/answer")
        async def answer(request: Request, query_id: str) -> Response:
            form = await self._form(request)
            value, by = self._value(form), self._by(form, request)
            if not query_id.isdigit():
                raise HTTPException(404, f"no open query {query_id!r}")
            try:
                labels.answer(int(query_id), value, by)
            except KeyError:
                raise HTTPException(404, f"no open query {query_id}: answered or expired already") from None
            return RedirectResponse(_safe_back(form.get("back"), "/queries"), status_code=303)

        @app.post("/who")
        async def who(request: Request) -> Response:
            form = await self._form(request)
            name = (form.get("by") or "").strip()
            if not name or len(name) > 100:
                raise HTTPException(400, "give a name of 1 to 100 characters")
            response = RedirectResponse(_safe_back(form.get("back")), status_code=303)
            response.set_cookie(WHO_COOKIE, name, httponly=True, samesite="strict")
            return response

        @app.get("/frames/{name}")
        def frame(name: str) -> Response:
            digest = name.removesuffix(".png")
            png = labels.frame(digest) if _HEX.fullmatch(digest) else None
            if png is None:
                raise HTTPException(404, f"no frame {name!r} in this label file")
            return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

        @app.get("/healthz")
        def healthz() -> dict[str, Any]:
            return {"label_file": str(labels.path), "labels": labels.kinds()}

        return app

    def close(self) -> None:
        """Close the label file."""
        self.labels.close()
