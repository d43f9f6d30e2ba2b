import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from vlmrl.annotation.client import HttpClient
from vlmrl.annotation.server import AnnotationServer
from vlmrl.annotation.store import AnnotationStore
from vlmrl.labelers.llm import CONTENT_FREE, LLMJudge, Refusal
from vlmrl.testing.stub_llm import CONTENT_FREE_MARGIN, StubEndpoint

MESSAGES = [f"You see here {i} gold pieces." for i in range(10)] + [f"It's solid stone {i}." for i in range(10)]
EXPECTED = {m: int("gold" in m) for m in MESSAGES}


def judge(**kw):
    return LLMJudge(timeout=kw.pop("timeout", 0.5), concurrency=2, **kw)


def paid_messages(stub):
    return {m: n for m, n in stub.paid.items() if m not in CONTENT_FREE}


def test_labels_every_message_once_through_every_fault(tmp_path):
    faults = ("ok", "429", "ok", "500", "timeout", "malformed", "ok", "drop", "garbage")
    with StubEndpoint(faults=faults, hang=0.8) as stub:
        server = AnnotationServer(
            judge(), store_path=tmp_path / "labels.sqlite", endpoint=stub.base_url, batch_size=4, max_backoff=0.2
        ).start()
        client = HttpClient(server.url)
        try:
            ack = client.submit(MESSAGES + MESSAGES[:5])  # duplicates are deduplicated
            assert ack == {"accepted": 25, "new": 20, "known": 0}
            assert server.wait_idle(timeout=60)
            labels = client.labels(MESSAGES)
            stats = client.stats()
        finally:
            client.close()
            server.stop()
    assert labels == EXPECTED  # no label lost, calibration removed the stub's bias toward "yes"
    paid = paid_messages(stub)
    assert set(paid) == set(MESSAGES) and max(paid.values()) == 1  # nothing paid twice
    errors = stats["backend_errors"]
    assert {"rate_limited", "server_error", "timeout", "malformed", "connection"} <= set(errors)
    assert stats["labels"] == 20 and stats["queue"] == 0 and stats["failed_batches"] > 0
    assert stats["threshold"] == pytest.approx(CONTENT_FREE_MARGIN)


def test_restarted_server_and_new_run_pay_nothing_again(tmp_path):
    store = tmp_path / "labels.sqlite"
    with StubEndpoint() as stub:
        with AnnotationServer(judge(), store_path=store, endpoint=stub.base_url) as server:
            server.submit(MESSAGES)
            assert server.wait_idle(timeout=30)
        first = sum(paid_messages(stub).values())
        assert sum(stub.paid[c] for c in CONTENT_FREE) == 3  # calibration, paid once
        with AnnotationServer(judge(), store_path=store, endpoint=stub.base_url) as server:
            assert server.labeler.threshold == pytest.approx(CONTENT_FREE_MARGIN)  # calibration reused
            server.submit(["You kill the newt!"])
            assert server.wait_idle(timeout=30) and server.labels(["You kill the newt!"]) == {"You kill the newt!": 1}
            ack = server.submit(MESSAGES)
            assert ack["new"] == 0 and ack["known"] == 20
            assert server.labels(MESSAGES) == EXPECTED
            assert server.stats()["cache_hit_rate"] == pytest.approx(20 / 21)
    assert first == 20 and sum(paid_messages(stub).values()) == 21
    assert sum(stub.paid[c] for c in CONTENT_FREE) == 3


def test_free_text_path_and_parse_failures(tmp_path):
    with StubEndpoint(free_text="label") as stub:
        with AnnotationServer(judge(mode="text"), endpoint=stub.base_url) as server:
            server.submit(MESSAGES[:4] + MESSAGES[-4:])
            assert server.wait_idle(timeout=30)
            assert server.labels(MESSAGES[:2] + MESSAGES[-2:]) == {m: EXPECTED[m] for m in MESSAGES[:2] + MESSAGES[-2:]}
    with StubEndpoint(free_text="ramble") as stub:
        with AnnotationServer(judge(mode="text"), endpoint=stub.base_url) as server:
            server.submit(MESSAGES[:3])
            assert server.wait_idle(timeout=30)
            assert set(server.labels(MESSAGES[:3]).values()) == {-1}  # answered but unparseable: kept, not re-paid
            assert server.stats()["parse_failures"] == 3


def test_acknowledged_submissions_survive_a_kill(tmp_path):
    store = tmp_path / "labels.sqlite"
    with StubEndpoint(faults=("500",)) as down:  # the backend never answers while the server lives
        script = textwrap.dedent(f"""
            import time
            from vlmrl.annotation.server import AnnotationServer
            from vlmrl.labelers.llm import LLMJudge
            s = AnnotationServer(LLMJudge(timeout=0.5, threshold=0.5), store_path={str(store)!r},
                                 endpoint={down.base_url!r}, port=0, max_backoff=0.1).start()
            print(s.url, flush=True)
            time.sleep(600)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            url = proc.stdout.readline().strip()
            client = HttpClient(url)
            assert client.submit(MESSAGES)["new"] == 20
            client.close()
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    reopened = AnnotationStore(store, "oni-judge:logprob", "stub", LLMJudge().template)
    assert set(reopened.pending) == set(MESSAGES)
    reopened.close()
    with StubEndpoint() as up:
        with AnnotationServer(judge(threshold=0.5), store_path=store, endpoint=up.base_url) as server:
            assert server.wait_idle(timeout=30)  # the queue left on disk is labeled without resubmission
            assert server.labels(MESSAGES) == EXPECTED
    assert paid_messages(up) == {m: 1 for m in MESSAGES}


def test_http_front_token_and_bad_requests(monkeypatch):
    monkeypatch.setenv("ONI_TEST_TOKEN", "s3cret")
    with StubEndpoint() as stub:
        with AnnotationServer(judge(threshold=0.5), endpoint=stub.base_url, token_env="ONI_TEST_TOKEN") as server:
            assert server.host == "127.0.0.1"
            assert httpx.get(server.url + "/stats").status_code == 401
            with pytest.raises(PermissionError, match="VLMRL_ANNOTATION_TOKEN"):
                HttpClient(server.url).submit(["x"])
            client = HttpClient(server.url, token_env="ONI_TEST_TOKEN")
            assert client.submit(["You kill the newt!"])["new"] == 1
            bad = httpx.post(server.url + "/submit", content=b"{not json", headers={"Authorization": "Bearer s3cret"})
            assert bad.status_code == 400 and "messages" in bad.json()["error"]
            deadline = time.monotonic() + 20
            while client.labels(["You kill the newt!"])["You kill the newt!"] is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.labels(["You kill the newt!"]) == {"You kill the newt!": 1}
            client.close()


def test_rejects_bad_config():
    with pytest.raises(ValueError, match="batch_size"):
        AnnotationServer(judge(), batch_size=0)
    with pytest.raises(ValueError, match="goal"):
        LLMJudge(goal="shopping")


def test_a_message_the_backend_refuses_is_dead_lettered_once_and_slows_nothing(tmp_path):
    too_long = "You see " + "a " * 50_000  # 100k characters: more than the model's context
    with StubEndpoint(context_chars=4000) as stub:
        server = AnnotationServer(judge(timeout=2.0), store_path=tmp_path / "labels.sqlite", endpoint=stub.base_url,
                                  batch_size=4, max_message_chars=200_000)  # fmt: skip
        with server:
            server.submit([too_long])
            took = []
            for i in range(6):  # messages trickle in while the refused one would be retried
                message = f"You kill the newt {i}!"
                t0 = time.monotonic()
                server.submit([message])
                while server.labels([message])[message] is None and time.monotonic() - t0 < 30:
                    time.sleep(0.01)
                took.append(time.monotonic() - t0)
            stats = server.stats()
            dead = server.store.dead_letters()
        again = AnnotationServer(judge(timeout=2.0), store_path=tmp_path / "labels.sqlite", endpoint=stub.base_url,
                                 max_message_chars=200_000)  # fmt: skip
        with again:
            assert again.submit([too_long])["new"] == 0 and again.stats()["dead_letters"] == 1  # not queued again
            assert again.labels([too_long]) == {too_long: None}
    assert stub.seen[too_long] == 1  # refused once, never retried
    assert stats["dead_letters"] == 1 and stats["queue"] == 0 and stats["labels"] == 6
    assert [m for m, _ in dead] == [too_long] and "400" in dead[0][1] and "context" in dead[0][1]
    assert max(took) < 3.0, took


def test_a_kill_asks_again_at_most_the_batch_in_flight(tmp_path):
    store = tmp_path / "labels.sqlite"
    with StubEndpoint(latency=0.1) as stub:  # a batch of 4 takes 0.4 s: the kill lands inside one
        script = textwrap.dedent(f"""
            import time
            from vlmrl.annotation.server import AnnotationServer
            from vlmrl.labelers.llm import LLMJudge
            s = AnnotationServer(LLMJudge(timeout=5, threshold=0.5, concurrency=2), store_path={str(store)!r},
                                 endpoint={stub.base_url!r}, batch_size=4).start()
            print(s.url, flush=True)
            time.sleep(600)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            client = HttpClient(proc.stdout.readline().strip())
            assert client.submit(MESSAGES)["new"] == 20
            client.close()
            deadline = time.monotonic() + 30
            while sum(paid_messages(stub).values()) < 6 and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        before = dict(paid_messages(stub))
        with AnnotationServer(judge(threshold=0.5), store_path=store, endpoint=stub.base_url) as server:
            assert server.wait_idle(timeout=60)
            assert server.labels(MESSAGES) == EXPECTED
    paid = paid_messages(stub)
    assert 6 <= sum(before.values()) < 20 and set(paid) == set(MESSAGES)
    asked_again = [m for m, n in paid.items() if n > 1]
    assert len(asked_again) <= 4 and max(paid.values()) <= 2, paid  # at most one batch (batch_size=4)


def test_a_refused_prompt_in_a_batched_request_is_singled_out():
    with StubEndpoint(context_chars=4000) as stub:
        batched = LLMJudge(base_url=stub.base_url, batch_prompts=True, threshold=0.5)
        out = batched.attempt(["You kill the newt!", "x" * 5000, "It's a wall."])
        batched.close()
    assert out[0].value == 1 and out[2].value == 0
    assert isinstance(out[1], Refusal) and out[1].error.startswith("http_400")
    assert batched.try_label(["x" * 5000]) == [None]  # try_label keeps its contract: None is "not labeled"


def test_an_endpoint_that_refuses_everything_dead_letters_nothing(tmp_path):
    with StubEndpoint(context_chars=10) as stub:  # every prompt refused: a misconfiguration, not bad messages
        with AnnotationServer(judge(threshold=0.5), endpoint=stub.base_url, max_backoff=0.05) as server:
            server.submit(MESSAGES[:3])
            deadline = time.monotonic() + 10
            while server.stats()["failed_batches"] < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            stats = server.stats()
    assert stats["failed_batches"] >= 3 and stats["dead_letters"] == 0 and stats["queue"] == 3  # kept for the fix
