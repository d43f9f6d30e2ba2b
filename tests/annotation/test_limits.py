"""The annotation server's HTTP front against careless or hostile clients: limits, timeouts, token, latency."""

import http.client
import json
import socket
import statistics
import threading
import time

import httpx
import pytest

from vlmrl.annotation.client import DirectClient, HttpClient
from vlmrl.annotation.server import AnnotationServer
from vlmrl.labelers.llm import LLMJudge
from vlmrl.testing.stub_llm import StubEndpoint


@pytest.fixture
def server(tmp_path):
    with StubEndpoint() as stub:
        judge = LLMJudge(timeout=2.0, threshold=0.5)
        store = tmp_path / "labels.sqlite"
        with AnnotationServer(judge, store_path=store, endpoint=stub.base_url, client_timeout=2.0) as srv:
            yield srv


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (raises if it is still open at ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_body_over_the_limit_is_refused_and_not_stored(server, tmp_path):
    body = json.dumps({"messages": [f"{i} " + "x" * 500 for i in range(4000)]}).encode()  # 2 MiB of short messages
    reply = httpx.post(server.url + "/submit", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert reply.status_code == 413
    stats = server.stats()
    assert stats["submitted"] == 0 and stats["queue"] == 0
    assert (tmp_path / "labels.sqlite").stat().st_size < len(body) // 4


def test_a_bad_content_length_is_answered_and_the_connection_closed(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n")
    assert read_until_closed(sock, timeout=5).startswith(b"HTTP/1.1 400")
    sock.close()


def test_idle_and_half_sent_connections_hold_no_thread_and_are_closed(server):
    threads = threading.active_count()
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(60)]
    for s in socks[::2]:
        s.sendall(b"POST /submit HTTP/1.1\r\nHost: x\r\n")  # a request head that never ends
    time.sleep(0.5)
    assert threading.active_count() - threads <= 2  # no thread per connection
    client = HttpClient(server.url)
    assert client.submit(["You kill the newt!"])["accepted"] == 1  # the others are still served
    client.close()
    t0 = time.monotonic()
    for s in socks:
        read_until_closed(s, timeout=10)  # the server hangs up on each of them
        s.close()
    assert time.monotonic() - t0 < 6


def test_a_non_ascii_token_is_refused_with_401(monkeypatch):
    monkeypatch.setenv("ONI_TEST_TOKEN", "s3cret")
    with StubEndpoint() as stub:
        judge = LLMJudge(timeout=2.0, threshold=0.5)
        with AnnotationServer(judge, endpoint=stub.base_url, token_env="ONI_TEST_TOKEN") as server:
            for token in ("Bearer ünïcode".encode(), b"Bearer \xff\xfe", "Bearer s3crét".encode()):
                assert httpx.get(server.url + "/stats", headers={"Authorization": token}).status_code == 401
            assert httpx.get(server.url + "/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def _median_latency(server, new_connection: bool, n: int = 40) -> float:
    body = json.dumps({"messages": ["You kill the newt!", "It's a wall."]})
    headers = {"Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    times = []
    for _ in range(n):
        if new_connection:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        t0 = time.perf_counter()
        conn.request("POST", "/labels", body, headers)
        reply = conn.getresponse()
        reply.read()
        times.append(time.perf_counter() - t0)
        assert reply.status == 200
    conn.close()
    return statistics.median(times)


def test_a_keep_alive_request_is_no_slower_than_a_new_connection(server):
    _median_latency(server, new_connection=False, n=5)  # warm up
    keep_alive = _median_latency(server, new_connection=False)
    fresh = _median_latency(server, new_connection=True)
    assert keep_alive < 2 * fresh + 0.005, (keep_alive, fresh)  # was 44 ms against 3 ms (delayed ACK)


def test_an_over_long_message_is_refused_with_422_by_both_clients(tmp_path):
    with StubEndpoint() as stub:
        judge = LLMJudge(timeout=2.0, threshold=0.5)
        with AnnotationServer(judge, endpoint=stub.base_url, max_message_chars=100) as server:
            reply = httpx.post(server.url + "/submit", json={"messages": ["ok", "x" * 101]})
            assert reply.status_code == 422 and "100 characters" in reply.json()["error"]
            for client in (HttpClient(server.url), DirectClient(server)):
                with pytest.raises(ValueError, match="100 characters"):
                    client.submit(["You kill the newt!", "y" * 101])
                assert client.submit(["x" * 100])["new"] in (0, 1)
                client.close()
            assert server.stats()["submitted"] == 2  # the refused requests queued nothing
