"""Does the annotation server stay correct and fast under many clients, on keep-alive and on new connections?

The server (with the scripted stub LLM as its backend) runs in a child process on 127.0.0.1. ``--clients``
threads each send ``--requests`` requests (``POST /submit`` of a few messages, ``POST /labels``, now and then
``GET /stats``), first each on one keep-alive connection, then each on a new connection per request. Reported:
errors (any failure or status other than 200; target 0), latency percentiles, requests/s, and the server's
memory and thread count before and after. ``ratio`` = keep-alive p50 / new-connection p50 (target <= 1).
Bounded: ``--max-seconds`` caps each phase (requests not sent by then are reported as ``unsent``).

    python benchmarks/server_load.py [--clients 20] [--requests 500] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only
WORDS = ["gold", "newt", "wall", "door", "stone", "jackal", "staircase", "fountain", "dagger", "apple"]


def serve(store: str) -> None:
    """Child process: the stub LLM and the annotation server until stdin closes."""
    from vlmrl.annotation.server import AnnotationServer
    from vlmrl.labelers.llm import LLMJudge
    from vlmrl.testing.stub_llm import StubEndpoint

    with StubEndpoint() as stub:
        with AnnotationServer(LLMJudge(timeout=5.0), store_path=store, endpoint=stub.base_url, host=HOST) as server:
            print(server.port, flush=True)
            sys.stdin.read()


def proc_status(pid: int) -> dict[str, int]:
    """Resident memory (KiB) and thread count of ``pid``."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"])}


def client(port: int, n: int, keep_alive: bool, seed: int, deadline: float, out: dict) -> None:
    """Send ``n`` requests; record each latency, and failures.

    Each phase draws from its own pool of 5,000 messages, so both give the labeling worker the same new work.
    """
    rng = np.random.default_rng(seed)
    tag = "keep" if keep_alive else "new"
    headers = {"Content-Type": "application/json"}
    conn = None
    times, errors, sent = [], 0, 0
    for i in range(n):
        if time.monotonic() > deadline:
            break
        if conn is None or not keep_alive:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
        messages = [f"You see a {WORDS[j % len(WORDS)]} here ({tag} {j})." for j in rng.integers(0, 5000, size=4)]
        if i % 50 == 49:
            method, path, body = "GET", "/stats", None
        else:
            method, path = "POST", ("/submit" if i % 2 == 0 else "/labels")
            body = json.dumps({"messages": messages})
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body, headers)
            reply = conn.getresponse()
            reply.read()
            ok = reply.status == 200
        except (OSError, http.client.HTTPException):
            ok, conn = False, None
        times.append(time.perf_counter() - t0)
        errors += not ok
        sent += 1
    if conn is not None:
        conn.close()
    out.update(times=times, errors=errors, sent=sent)


def phase(port: int, clients: int, requests: int, keep_alive: bool, max_seconds: float) -> dict[str, float]:
    """Run all clients at once; latency percentiles (ms), requests/s, errors."""
    results = [{} for _ in range(clients)]
    deadline = time.monotonic() + max_seconds
    threads = [
        threading.Thread(target=client, args=(port, requests, keep_alive, 1000 * keep_alive + c, deadline, results[c]))
        for c in range(clients)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    times = np.concatenate([r["times"] for r in results]) * 1e3
    sent = sum(r["sent"] for r in results)
    return {
        "requests": sent,
        "unsent": clients * requests - sent,
        "errors": sum(r["errors"] for r in results),
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": float(times.max()),
        "req_per_s": sent / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=500, help="requests per client and phase")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="cap on each phase")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    store = Path(tempfile.mkdtemp(prefix="server-load-")) / "labels.sqlite"
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(child.stdout.readline())
        before = proc_status(child.pid)
        keep = phase(port, args.clients, args.requests, True, args.max_seconds)
        middle = proc_status(child.pid)
        fresh = phase(port, args.clients, args.requests, False, args.max_seconds)
        time.sleep(1.0)
        after = proc_status(child.pid)
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()

    cols = ["requests", "unsent", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms", "req_per_s"]
    print(f"{'connections':<14}" + "".join(f"{c:>11}" for c in cols))
    for name, r in (("keep-alive", keep), ("new", fresh)):
        print(f"{name:<14}" + "".join(f"{r[c]:>11.0f}" if c in cols[:3] else f"{r[c]:>11.2f}" for c in cols))
    print(f"{'server':<14}{'rss MiB':>11}{'threads':>11}")
    for name, s in (("before", before), ("after keep", middle), ("after new", after)):
        print(f"{name:<14}{s['rss_kib'] / 1024:>11.1f}{s['threads']:>11}")
    print(f"clients={args.clients}")
    print(f"requests_per_client={args.requests}")
    for name, r in (("keepalive", keep), ("new", fresh)):
        for c in cols:
            print(f"{name}_{c}={r[c]:.3f}" if c.endswith(("ms", "_s")) else f"{name}_{c}={r[c]}")
    print(f"errors={keep['errors'] + fresh['errors']}")
    print(f"rss_before_mib={before['rss_kib'] / 1024:.1f}")
    print(f"rss_after_mib={after['rss_kib'] / 1024:.1f}")
    print(f"threads_before={before['threads']}")
    print(f"threads_after={after['threads']}")
    print(f"ratio={keep['p50_ms'] / fresh['p50_ms']:.3f}")


if __name__ == "__main__":
    main()
