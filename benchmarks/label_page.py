"""Does the label page open as fast with 100,000 labels as with 1,000?

A label file is filled with N preference labels (VLM-style raw answers, ground truth, frames from a pool of
distinct toy-cloth images, a few human overrides and ONI messages), the page is served on loopback, and
headless Chromium opens it: first contentful paint of the first page (all labels), of the "disagrees with
ground truth" filter and of the last page, median of ``--repeats``; cold = right after an override (the
filter counts over the whole file are computed again), warm = the same page again; the server's own time
for the same requests beside it. Target: first paint under 1 s at 100,000 labels, cold.
ratio = cold first paint at the largest N / at the smallest N (1 = the file's size costs nothing).

    python benchmarks/label_page.py [--sizes 1000 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from vlmrl.labelers.cache import INSERT_FRAMES, INSERT_PAIRS, LabelCache, content_hash, frame_png
from vlmrl.report.devtools import Chromium
from vlmrl.report.label_page import LabelPage
from vlmrl.testing.stub_vlm import render_toy_cloth
from vlmrl.types import Label
from vlmrl.web import WebServer


def fill(path: Path, n: int, rng: np.random.Generator, pool: int = 256) -> None:
    """``n`` labels: 95% preference pairs over ``pool`` distinct frames, 5% ONI messages, 0.1% overridden."""
    folds = rng.uniform(0, 1, pool)
    frames = [render_toy_cloth(float(f), 64, rng) for f in folds]
    hashes = [content_hash(f) for f in frames]
    cache = LabelCache(path)
    db = cache._db  # bulk load in one transaction per chunk
    db.execute("BEGIN")
    db.executemany(INSERT_FRAMES, [(h, *frame_png(f, 256)) for h, f in zip(hashes, frames, strict=True)])
    db.execute("COMMIT")
    chunk = 20_000
    for start in range(0, n, chunk):
        labels, pairs = [], []
        for i in range(start, min(n, start + chunk)):
            key = f"{i:064x}"
            if i % 20 == 19:
                meta = {"message": f"You see here a gold piece ({i})."}
                labels.append(
                    (
                        key,
                        Label(int(rng.random() < 0.3), "llm", raw=f"margin={rng.normal():.4f} threshold=0.1000"),
                        meta,
                    )
                )
                continue
            a, b = rng.integers(0, pool, 2)
            value = int(folds[b] > folds[a]) if rng.random() > 0.15 else int(folds[b] <= folds[a])
            raw = json.dumps(
                {"analysis": f"Image 1 cloth score {folds[a]:.3f}; image 2 {folds[b]:.3f}.", "answer": str(value)}
            )
            labels.append((key, Label(value, "vlm:stub", raw=raw), {"labeler": "vlm:stub"}))
            truth = None if folds[a] == folds[b] else int(folds[b] > folds[a])
            pairs.append((key, hashes[a], hashes[b], "fold the cloth", float(folds[a]), float(folds[b]), truth))
        cache.put_many(labels)
        db.execute("BEGIN")
        db.executemany(INSERT_PAIRS, pairs)
        db.execute("COMMIT")
    for i in range(0, n, 1000):
        cache.override(f"{i:064x}", 1, "bench")
    cache.close()


def measure(base: str, view: str, browser: Chromium, client: httpx.Client, repeats: int) -> dict[str, float]:
    """Median first contentful paint and server time (ms) of ``base + view``: cold (right after an override,
    so the filter counts are computed afresh) and warm (the same page again)."""
    page = browser.new_page()
    page.navigate(base + "/frames/warm-up")  # the first navigation of a tab pays for the tab
    out: dict[str, list[float]] = {"paint_cold": [], "paint_warm": [], "server_cold": [], "server_warm": []}
    for i in range(repeats):
        for kind in ("paint", "server"):
            answer = client.post(f"{base}/labels/{0:064x}/override", data={"value": str(i % 2)})
            assert answer.status_code == 303, answer.text
            for state in ("cold", "warm"):
                if kind == "paint":
                    page.navigate(base + view)
                    out[f"paint_{state}"].append(page.first_contentful_paint_ms())
                else:
                    t0 = time.perf_counter()
                    client.get(base + view).raise_for_status()
                    out[f"server_{state}"].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="label-page-bench-"))
    results = {}
    views = {"all": "/", "disagree": "/?filter=disagree", "last page": "/?page=1000000"}
    with Chromium() as browser, httpx.Client() as client:
        for n in args.sizes:
            path = tmp / f"labels_{n}.sqlite"
            t0 = time.perf_counter()
            fill(path, n, rng)
            fill_s = time.perf_counter() - t0
            page = LabelPage(path)
            with WebServer(page.app) as server:
                results[n] = {v: measure(server.url, url, browser, client, args.repeats) for v, url in views.items()}
            page.close()
            print(f"filled {n} labels in {fill_s:.1f} s", flush=True)
    heads = ("paint cold", "paint warm", "server cold", "server warm")
    print(f"{'labels':>8} {'view':>10} " + " ".join(f"{h:>12}" for h in heads) + "  (ms)")
    for n, r in results.items():
        for v, m in r.items():
            print(
                f"{n:>8} {v:>10} {m['paint_cold']:>12.0f} {m['paint_warm']:>12.0f}"
                f" {m['server_cold']:>12.1f} {m['server_warm']:>12.1f}"
            )
    small, large = min(results), max(results)
    for n in (small, large):
        print(f"first_paint_ms_{n}={results[n]['all']['paint_cold']:.0f}")
        print(f"first_paint_warm_ms_{n}={results[n]['all']['paint_warm']:.0f}")
        print(f"first_paint_disagree_ms_{n}={results[n]['disagree']['paint_cold']:.0f}")
        print(f"server_ms_{n}={results[n]['all']['server_cold']:.1f}")
    print(f"ratio={results[large]['all']['paint_cold'] / results[small]['all']['paint_cold']:.2f}")


if __name__ == "__main__":
    main()
