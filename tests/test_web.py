import http.client
import json
import socket
import time

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, Response

from vlmrl.web import WebServer, drop_connection, harden, require_token, tokens_equal


def make_app(max_body=1000, body_timeout=0.5):
    app = harden(FastAPI(), max_body=max_body, body_timeout=body_timeout)

    @app.post("/echo", dependencies=[Depends(require_token("VLMRL_TEST_TOKEN"))])
    async def echo(body: dict) -> dict:
        return body

    @app.post("/drop")
    def drop(request: Request) -> Response:  # from a worker thread, as blocking handlers run
        drop_connection(request)
        return Response("never delivered")

    return app


@pytest.fixture
def server():
    with WebServer(make_app(), head_timeout=0.5) as srv:
        yield srv


def test_echo_on_loopback_with_keep_alive(server):
    assert server.host == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=server.url) as client:
        for i in range(3):
            assert client.post("/echo", json={"i": i}).json() == {"i": i}


def test_body_limits(server):
    with httpx.Client(base_url=server.url) as client:
        assert (
            client.post("/echo", content=b"x" * 2000, headers={"content-type": "application/json"}).status_code == 413
        )
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.putrequest("POST", "/echo")
    conn.putheader("Content-Length", "-1")
    conn.endheaders()
    assert conn.getresponse().status == 400
    with httpx.Client(base_url=server.url) as client:  # a moderately large body is read and answered, no reset
        for _ in range(3):
            assert client.post("/echo", content=b"[" + b"0," * 4000 + b"0]").status_code == 413


def test_a_slow_body_gets_408_instead_of_holding_a_worker(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
    t0 = time.monotonic()
    reply = sock.recv(1000).decode()
    assert reply.startswith("HTTP/1.1 408") and time.monotonic() - t0 < 3
    sock.close()


def test_token_check_never_raises(server, monkeypatch):
    monkeypatch.setenv("VLMRL_TEST_TOKEN", "s3cret")
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/echo", json={}).status_code == 401
        assert client.post("/echo", json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        bad = {"Authorization": "Bearer ünïcode".encode()}
        assert client.post("/echo", json={}, headers=bad).status_code == 401
        assert client.post("/echo", json={"a": 1}, headers={"Authorization": "Bearer s3cret"}).json() == {"a": 1}
    assert tokens_equal("ü", "ü") and not tokens_equal(None, "x") and not tokens_equal(b"\xff", "x")


def test_a_request_head_that_never_ends_gets_408_and_is_closed(server):
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    partial = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    partial.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    for sock in (idle, partial):
        assert sock.recv(1000).startswith(b"HTTP/1.1 408") and sock.recv(1000) == b""
        sock.close()
    assert time.monotonic() - t0 < 3
    with httpx.Client(base_url=server.url) as client:  # served requests re-arm the deadline on keep-alive
        for i in range(3):
            assert client.post("/echo", json={"i": i}).json() == {"i": i}
            time.sleep(0.3)


def test_drop_connection_closes_without_an_answer(server):
    with httpx.Client(base_url=server.url) as client:
        with pytest.raises(httpx.TransportError):
            client.post("/drop")
        assert client.post("/echo", json={"after": 1}).json() == {"after": 1}


def test_keep_alive_answers_do_not_wait_for_a_delayed_ack(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    times = []
    for i in range(20):
        t0 = time.perf_counter()
        conn.request("POST", "/echo", json.dumps({"i": i}), {"Content-Type": "application/json"})
        assert json.loads(conn.getresponse().read()) == {"i": i}
        times.append(time.perf_counter() - t0)
    conn.close()
    assert sorted(times)[10] < 0.02, times  # head and body written apart waited ~40 ms without TCP_NODELAY
