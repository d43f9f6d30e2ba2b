"""How fast does the embedded judge label, how fast does the annotation server ingest, and what does it add?

1. Judge speed, old vs new: the same K fresh messages are labeled directly by the judge (a) through
   llama.cpp's OpenAI-compatible server in a child process (``--logits_all``, one completion request per
   message: the ``embedded.mode: server`` path) and (b) in-process (:class:`LlamaCppScorer`: the prompt
   prefix evaluated once, each message's own tokens only, logits at the last one: the default). Both on
   ``--threads`` threads, under the same OpenMP settings (the scorer sets ``GOMP_SPINCOUNT`` before the
   server starts). ratio = in-process labels/s / server labels/s. Target >= 3.
2. Through the server: K other fresh messages go through the annotation server hosting the in-process
   judge (submit, wait until labeled); served labels/s / direct in-process labels/s, target >= 0.9.
3. Ingest: actors POST batches of messages (half of them duplicates) to /submit over HTTP; messages/s
   acknowledged (durably queued or found labeled). Target >= 5,000/s.

``--backend stub`` replaces the LLM by the scripted stub endpoint with a fixed per-message latency (parts 2
and 3 only; ratio = served / direct).

    python benchmarks/annotation_server.py [--backend llama|stub] [--k 24] [--threads 2] [--ingest 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from vlmrl.annotation.backends import LlamaCppScorer, LlamaCppServer
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


def direct_rates(judges: list[LLMJudge], messages: list[str], batch: int) -> list[tuple[float, list[float]]]:
    """Labels/s of each judge on the same ``messages`` in batches of ``batch`` (after calibration and a warm-up).

    The judges take turns batch by batch (the order alternating), so a change in the machine's load between
    batches weighs on all of them alike.
    """
    for judge in judges:
        judge.calibrate()  # also evaluates the prompt once (warm-up)
        judge.try_label(["You kill the newt!"])
    seconds, labels = [0.0] * len(judges), [[] for _ in judges]
    for n, i in enumerate(range(0, len(messages), batch)):
        for j in range(len(judges))[:: 1 if n % 2 == 0 else -1]:
            t0 = time.perf_counter()
            labels[j] += judges[j].try_label(messages[i : i + batch])
            seconds[j] += time.perf_counter() - t0
    out = []
    for judge, secs, labs in zip(judges, seconds, labels, strict=True):
        assert all(lab is not None for lab in labs), f"the backend failed: {dict(judge.errors)}"
        out.append((len(messages) / secs, [float(lab.raw.split()[0].removeprefix("margin=")) for lab in labs]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["llama", "stub"], default="llama")
    ap.add_argument("--k", type=int, default=24, help="messages per throughput measurement")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads, both paths")
    ap.add_argument("--batch", type=int, default=8, help="messages per judge call (the server's batch_size)")
    ap.add_argument("--ingest", type=int, default=50_000, help="messages submitted in the ingest test")
    ap.add_argument("--submit-batch", type=int, default=500, help="messages per /submit request")
    ap.add_argument("--latency", type=float, default=0.05, help="stub seconds per message")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="annotation-bench-"))
    direct_msgs = fake_messages(args.k, rng, "direct")
    rows: list[tuple[str, str]] = []
    keys: dict[str, str] = {"backend": args.backend, "k": str(args.k), "threads": str(args.threads)}

    if args.backend == "llama":
        scorer = LlamaCppScorer(n_threads=args.threads)
        judge = LLMJudge(timeout=600)
        judge.attach(scorer)
        with LlamaCppServer(n_threads=args.threads, log_path=tmp / "llama.log") as old_backend:
            old_judge = LLMJudge(base_url=old_backend.base_url, concurrency=1, timeout=600)
            (old_rate, old_margins), (backend_rate, new_margins) = direct_rates(
                [old_judge, judge], direct_msgs, args.batch
            )
            old_judge.close()
        agree = np.mean((np.array(old_margins) > old_judge.threshold) == (np.array(new_margins) > judge.threshold))
        diff = float(np.max(np.abs(np.array(old_margins) - np.array(new_margins))))
        rows += [
            ("old: llama.cpp server labels/s", f"{old_rate:.2f}"),
            ("new: in-process labels/s", f"{backend_rate:.2f}"),
            ("max |margin old - new|", f"{diff:.4f}"),
            ("labels agreeing old/new", f"{agree:.3f}"),
        ]
        keys |= {"old_labels_per_s": f"{old_rate:.3f}", "new_labels_per_s": f"{backend_rate:.3f}"}
        keys |= {"max_margin_diff": f"{diff:.4f}", "label_agreement": f"{agree:.3f}"}
        ratio = backend_rate / old_rate
        stop = scorer.stop
    else:
        stub = StubEndpoint(latency=args.latency).start()
        judge = LLMJudge(base_url=stub.base_url, concurrency=1, timeout=120)
        ((backend_rate, _),) = direct_rates([judge], direct_msgs, args.batch)
        rows.append(("stub (direct) labels/s", f"{backend_rate:.2f}"))
        keys["backend_labels_per_s"] = f"{backend_rate:.3f}"
        stop = stub.stop
        ratio = None
    try:
        server = AnnotationServer(judge, store_path=tmp / "labels.sqlite", batch_size=args.batch).start()
        try:
            served_msgs = fake_messages(args.k, rng, "served")
            t0 = time.perf_counter()
            server.submit(served_msgs)
            if not server.wait_idle(timeout=600):
                raise RuntimeError("server did not finish labeling in 600 s")
            server_rate = args.k / (time.perf_counter() - t0)
            ingest_rate = ingest(server, args.ingest, args.submit_batch, rng)
            stats = server.stats()
        finally:
            server.stop()
    finally:
        stop()

    rows += [
        ("through server labels/s", f"{server_rate:.2f}"),
        ("ingest messages/s (HTTP, 50% dup)", f"{ingest_rate:.0f}"),
        ("server cache hit rate", f"{stats['cache_hit_rate']:.3f}"),
    ]
    keys |= {"server_labels_per_s": f"{server_rate:.3f}", "server_vs_direct": f"{server_rate / backend_rate:.3f}"}
    keys["ingest_per_s"] = f"{ingest_rate:.0f}"
    ratio = ratio if ratio is not None else server_rate / backend_rate
    print(f"{'measure':<36}{'value':>14}")
    for name, value in rows:
        print(f"{name:<36}{value:>14}")
    for key, value in keys.items():
        print(f"{key}={value}")
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
