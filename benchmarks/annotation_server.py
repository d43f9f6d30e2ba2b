"""How fast does the annotation server ingest messages, and how close to the backend's own speed does it label?

1. Ingest: actors POST batches of messages (half of them duplicates) to /submit over HTTP; messages/s
   acknowledged (durably queued or found labeled). Target >= 5,000/s.
2. LLM-bound throughput: the judge labels K fresh messages directly against the backend (baseline, the
   backend's own batch throughput), then K other fresh messages go through the server (submit, wait until
   labeled). ratio = server labels/s / backend labels/s. Target >= 0.9.

The backend is the embedded llama.cpp server with SmolLM2-135M (``--backend llama``, default) or the
scripted stub endpoint with a fixed per-message latency (``--backend stub``).

    python benchmarks/annotation_server.py [--backend llama|stub] [--k 24] [--ingest 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vlmrl.annotation.backends import LlamaCppServer
from vlmrl.annotation.client import HttpClient
from vlmrl.annotation.server import AnnotationServer
from vlmrl.labelers.llm import LLMJudge
from vlmrl.testing.stub_llm import StubEndpoint

WORDS = ["gold", "newt", "wall", "door", "stone", "jackal", "staircase", "fountain", "dagger", "apple"]


def fake_messages(n: int, rng: np.random.Generator, tag: str) -> list[str]:
    return [f"You see a {WORDS[i % len(WORDS)]} here ({tag} {j})." for i, j in enumerate(rng.permutation(n))]


def ingest(server: AnnotationServer, total: int, batch: int, rng: np.random.Generator) -> float:
    unique = fake_messages(total // 2, rng, "ingest")
    stream = [unique[i] for i in rng.integers(0, len(unique), size=total)]
    client = HttpClient(server.url)
    t0 = time.perf_counter()
    for i in range(0, total, batch):
        client.submit(stream[i : i + batch])
    dt = time.perf_counter() - t0
    client.close()
    return total / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["llama", "stub"], default="llama")
    ap.add_argument("--k", type=int, default=24, help="messages per throughput measurement")
    ap.add_argument("--ingest", type=int, default=50_000, help="messages submitted in the ingest test")
    ap.add_argument("--batch", type=int, default=500, help="messages per /submit request")
    ap.add_argument("--latency", type=float, default=0.05, help="stub seconds per message")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="annotation-bench-"))

    if args.backend == "llama":
        backend = LlamaCppServer(n_threads=2, log_path=tmp / "llama.log").start()
        base_url = backend.base_url
    else:
        backend = StubEndpoint(latency=args.latency).start()
        base_url = backend.base_url
    try:
        judge = LLMJudge(base_url=base_url, concurrency=1, timeout=120)
        judge.calibrate()  # also warms the model up
        judge.try_label(["You kill the newt!"])
        direct_msgs = fake_messages(args.k, rng, "direct")
        t0 = time.perf_counter()
        direct = judge.try_label(direct_msgs)
        backend_rate = args.k / (time.perf_counter() - t0)
        assert all(lab is not None for lab in direct), "backend failed during the baseline"

        server = AnnotationServer(judge, store_path=tmp / "labels.sqlite", batch_size=8).start()
        try:
            served_msgs = fake_messages(args.k, rng, "served")
            t0 = time.perf_counter()
            server.submit(served_msgs)
            if not server.wait_idle(timeout=600):
                raise RuntimeError("server did not finish labeling in 600 s")
            server_rate = args.k / (time.perf_counter() - t0)
            ingest_rate = ingest(server, args.ingest, args.batch, rng)
            stats = server.stats()
        finally:
            server.stop()
    finally:
        backend.stop()

    ratio = server_rate / backend_rate
    print(f"{'measure':<36}{'value':>14}")
    print(f"{'backend (direct) labels/s':<36}{backend_rate:>14.2f}")
    print(f"{'through server labels/s':<36}{server_rate:>14.2f}")
    print(f"{'ingest messages/s (HTTP, 50% dup)':<36}{ingest_rate:>14.0f}")
    print(f"{'server cache hit rate':<36}{stats['cache_hit_rate']:>14.3f}")
    print(f"backend={args.backend}")
    print(f"k={args.k}")
    print(f"backend_labels_per_s={backend_rate:.3f}")
    print(f"server_labels_per_s={server_rate:.3f}")
    print(f"ingest_per_s={ingest_rate:.0f}")
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
