"""Both clients of the annotation server give the same answers; the direct one needs no HTTP front."""

import time

import pytest

from vlmrl.annotation.client import AnnotationClient, DirectClient, HttpClient
from vlmrl.annotation.core import AnnotationCore
from vlmrl.annotation.server import AnnotationServer
from vlmrl.labelers.llm import LLMJudge
from vlmrl.testing.stub_llm import StubEndpoint

MESSAGES = ["You kill the newt!", "It's a wall.", "You see here 3 gold pieces."]
EXPECTED = {"You kill the newt!": 1, "It's a wall.": 0, "You see here 3 gold pieces.": 1}


def wait_for(client: AnnotationClient, messages: list[str], timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while None in (got := client.labels(messages)).values() and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


@pytest.mark.parametrize("kind", ["http", "direct"])
def test_clients_submit_dedup_and_fetch_labels_alike(tmp_path, kind):
    with StubEndpoint() as stub:
        with AnnotationServer(LLMJudge(timeout=2.0), store_path=tmp_path / "s.db", endpoint=stub.base_url) as server:
            client = HttpClient(server.url) if kind == "http" else DirectClient(server)
            assert client.labels(MESSAGES[:1]) == {MESSAGES[0]: None}
            assert client.submit(MESSAGES + MESSAGES[:1] + [""]) == {"accepted": 4, "new": 3, "known": 0}
            assert wait_for(client, MESSAGES) == EXPECTED
            assert client.submit(MESSAGES[:2]) == {"accepted": 2, "new": 0, "known": 2}
            stats = client.stats()
            assert stats["labels"] == 3 and stats["queue"] == 0 and stats["submitted"] == 6
            assert set(stats) == set(server.stats())
            client.close()


def test_direct_client_on_a_core_without_http_front():
    with StubEndpoint() as stub:
        with AnnotationCore(LLMJudge(timeout=2.0), endpoint=stub.base_url) as core:
            assert not hasattr(core, "url")  # nothing listens: the core has no HTTP front
            client = DirectClient(core)
            client.submit(MESSAGES)
            assert wait_for(client, MESSAGES) == EXPECTED
            client.close()  # the core is not the client's: it keeps running
            assert core.labels(MESSAGES[:1]) == {MESSAGES[0]: 1}
