"""RL-VLM-F labeling throughput: concurrent pool vs sequential queries on a 200 ms endpoint; cache hits.

Each label costs two requests (analysis, then the 0/1/-1 answer). The stub endpoint sleeps ``--latency``
seconds per request, like a remote VLM. The sequential baseline (one query at a time, the original RL-VLM-F
loop) and the concurrent pool are measured in the same run on fresh frames, then the concurrent batch is
labeled again to time cache hits (no endpoint calls).

    .venv/bin/python benchmarks/labeler_throughput.py [--latency 0.2 --workers 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vlmrl.labelers.cache import CachedLabeler, LabelCache
from vlmrl.labelers.vlm import VLMPreferenceLabeler
from vlmrl.testing.stub_vlm import StubVLMServer, render_toy_cloth
from vlmrl.types import Fragment, FragmentPair


def make_pairs(n: int, rng: np.random.Generator, size: int) -> list[FragmentPair]:
    folds = rng.uniform(0, 1, (n, 2))
    return [
        FragmentPair(
            Fragment(frames=render_toy_cloth(a, size, rng)[None]),
            Fragment(frames=render_toy_cloth(b, size, rng)[None]),
        )
        for a, b in folds
    ]


def timed_labels(server: StubVLMServer, pairs: list[FragmentPair], workers: int, cache: LabelCache):
    vlm = VLMPreferenceLabeler(model="stub-vlm", base_url=server.base_url, max_workers=workers)
    labeler = CachedLabeler(vlm, cache)
    start = time.perf_counter()
    labels = labeler(pairs)
    elapsed = time.perf_counter() - start
    labeler.close()
    return labels, elapsed, labeler.endpoint_stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--sequential-labels", type=int, default=10)
    parser.add_argument("--concurrent-labels", type=int, default=96)
    parser.add_argument("--size", type=int, default=96, help="frame side in pixels")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    seq_pairs = make_pairs(args.sequential_labels, rng, args.size)
    conc_pairs = make_pairs(args.concurrent_labels, rng, args.size)
    cache = LabelCache()
    with StubVLMServer(latency=args.latency) as server:
        # warm-up: first connection, lazy imports
        timed_labels(server, make_pairs(2, rng, args.size), 2, LabelCache())
        seq_labels, seq_s, _ = timed_labels(server, seq_pairs, 1, cache)
        conc_labels, conc_s, stats = timed_labels(server, conc_pairs, args.workers, cache)
        calls_before = server.counts["total"]
        hit_labels, hit_s, _ = timed_labels(server, conc_pairs, args.workers, cache)
        hit_calls = server.counts["total"] - calls_before
    assert all(lab.cached for lab in hit_labels) and hit_calls == 0
    assert [lab.value for lab in hit_labels] == [lab.value for lab in conc_labels]
    # raw lookup latency of one cached key
    key = LabelCache.key("x", "m", "t", [b"a"])
    cache.put(key, conc_labels[0])
    n_get = 2000
    t0 = time.perf_counter()
    for _ in range(n_get):
        cache.get(key)
    get_ms = (time.perf_counter() - t0) / n_get * 1e3

    seq_rate = len(seq_pairs) / seq_s
    conc_rate = len(conc_pairs) / conc_s
    hit_ms = hit_s / len(conc_pairs) * 1e3
    rows = [
        ("sequential (1 worker)", len(seq_pairs), seq_s, seq_rate),
        (f"concurrent ({args.workers} workers)", len(conc_pairs), conc_s, conc_rate),
        ("cache hits (re-run)", len(conc_pairs), hit_s, len(conc_pairs) / hit_s),
    ]
    print(
        f"stub endpoint latency {args.latency * 1e3:.0f} ms per request, 2 requests per label, "
        f"frames {args.size}x{args.size}"
    )
    print(f"{'mode':<26}{'labels':>8}{'seconds':>10}{'labels/s':>12}")
    for name, n, s, rate in rows:
        print(f"{name:<26}{n:>8}{s:>10.3f}{rate:>12.2f}")
    print(f"sequential_labels_per_s={seq_rate:.3f}")
    print(f"concurrent_labels_per_s={conc_rate:.3f}")
    print(f"api_calls_concurrent={stats['api_calls']}")
    print(f"cache_get_ms={get_ms:.4f}")
    print(f"cache_hit_calls={hit_calls}")
    print(f"cache_hit_ms={hit_ms:.4f}")
    print(f"ratio={conc_rate / seq_rate:.2f}")


if __name__ == "__main__":
    main()
