"""The shared JSON-over-HTTP pieces: handler helpers, the threaded server and the client."""

import httpx
import pytest

from vlmrl.http_json import JsonClient, JsonHandler, JsonServer


class EchoHandler(JsonHandler):
    def do_GET(self):  # noqa: N802
        if self.authorized(self.app.token):
            self.send_json(200, {"path": self.path, "calls": self.app.calls})

    def do_POST(self):  # noqa: N802
        if not self.authorized(self.app.token):
            return
        try:
            body = self.read_json()
        except ValueError as e:
            return self.send_json(400, {"error": str(e)})
        if self.path == "/drop":
            return self.drop_connection()
        if self.path == "/fail":
            return self.send_json(500, {"error": "failed on purpose"})
        self.app.calls += 1
        self.send_json(201 if self.path == "/created" else 200, {"echo": body})


class Echo:
    def __init__(self, token=None):
        self.token, self.calls = token, 0


def test_server_and_client_exchange_json():
    app = Echo()
    with JsonServer(EchoHandler, app=app) as server:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.base_url == server.url + "/v1"
        client = JsonClient(server.url)
        assert client.post("/created", {"a": [1, "x"]}) == {"echo": {"a": [1, "x"]}}
        assert client.post("/", {}) == {"echo": {}}
        assert client.get("/stats") == {"path": "/stats", "calls": 2}
        bad = httpx.post(server.url + "/", content=b"{nope")
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/json"
        with pytest.raises(httpx.HTTPStatusError, match="500"):
            client.post("/fail", {})
        with pytest.raises(httpx.TransportError):
            client.post("/drop", {})
        client.close()


def test_bearer_token_is_required_when_set():
    with JsonServer(EchoHandler, app=Echo(token="s3cret")) as server:
        with pytest.raises(PermissionError, match="bearer token"):
            JsonClient(server.url).post("/", {"x": 1})
        assert httpx.get(server.url + "/").status_code == 401
        client = JsonClient(server.url, token="s3cret")
        assert client.post("/", {"x": 1}) == {"echo": {"x": 1}}
        client.close()


def test_stop_frees_the_port_even_if_never_started():
    server = JsonServer(EchoHandler, app=Echo())
    port = server.port
    server.stop()
    JsonServer(EchoHandler, app=Echo(), port=port).stop()
