"""Spend is durable: kept with the labels, read by the budget check, shared by every run of one cache and key."""

import inspect
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vlmrl.labelers.cache import CachedLabeler, LabelCache
from vlmrl.labelers.vlm import VLMPreferenceLabeler
from vlmrl.testing.stub_vlm import StubVLMServer, render_toy_cloth
from vlmrl.types import Fragment, FragmentPair


def toy_pairs(n, seed=0, size=32):
    """Pairs of toy cloth frames whose fold levels differ by at least 0.15."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        f1, f2 = rng.uniform(0, 1, 2)
        if abs(f1 - f2) >= 0.15:
            a, b = render_toy_cloth(f1, size, rng)[None], render_toy_cloth(f2, size, rng)[None]
            pairs.append(FragmentPair(Fragment(frames=a), Fragment(frames=b)))
    return pairs


def make_vlm(server, **kw):
    kw = {"max_workers": 4, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0, **kw}
    return VLMPreferenceLabeler(model="stub-vlm", task="cloth_fold", base_url=server.base_url, **kw)


class UsageStub(StubVLMServer):
    """The stub endpoint, answering with token counts in ``usage`` (as a paid API does) and summing them."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.usage_sum = {"prompt_tokens": 0, "completion_tokens": 0}
        self.answers = 0
        self.usage_lock = threading.Lock()

    def answer(self, body):
        status, out = super().answer(body)
        if status == 200:
            images = sum(
                part.get("type") == "image_url"
                for msg in body.get("messages", [])
                if isinstance(msg.get("content"), list)
                for part in msg["content"]
            )
            text = json.dumps(body.get("messages", []))
            prompt = 85 * images + len(text) % 97 + 11
            completion = len(out["choices"][0]["message"]["content"]) // 4 + 1
            out["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            with self.usage_lock:
                self.usage_sum["prompt_tokens"] += prompt
                self.usage_sum["completion_tokens"] += completion
                self.answers += 1
        return status, out


def test_a_second_run_on_the_same_cache_continues_from_what_was_paid(tmp_path):
    """A resumed (or second) run used to start the budget afresh: 20 + 25 pairs paid under max_queries=25."""
    pairs = toy_pairs(40)
    with StubVLMServer() as server:
        first = CachedLabeler(make_vlm(server, max_queries=25), LabelCache(tmp_path / "c.sqlite"))
        first(pairs[:20])  # then killed: nothing closed, nothing else saved
        second = CachedLabeler(make_vlm(server, max_queries=25), LabelCache(tmp_path / "c.sqlite"))
        labels = second(pairs)
        assert server.counts["stage1"] == 25
        assert sum(lab.cached for lab in labels) == 20
        assert sum(lab.raw == "budget exhausted" for lab in labels) == 15
        assert second.exhausted
        second.close()


CHILD = """
import numpy as np
from vlmrl.labelers.cache import CachedLabeler, LabelCache
from vlmrl.labelers.vlm import VLMPreferenceLabeler
from vlmrl.testing.stub_vlm import render_toy_cloth
from vlmrl.types import Fragment, FragmentPair

{helpers}

class Server:
    base_url = {url!r}

labeler = CachedLabeler(make_vlm(Server, max_queries=50, max_workers=4), LabelCache({cache!r}))
print("ready", flush=True)
labeler(toy_pairs(100))
"""


def test_a_run_killed_mid_batch_pays_at_most_the_batch_in_flight_again(tmp_path):
    """SIGKILL while answers arrive, then run again: the budget holds; only the pairs in flight were asked twice."""
    cache = tmp_path / "c.sqlite"
    with StubVLMServer(latency=0.05) as server:
        helpers = inspect.getsource(toy_pairs) + "\n\n" + inspect.getsource(make_vlm)
        script = CHILD.format(helpers=helpers, url=server.base_url, cache=str(cache))
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 60
            while server.counts["stage1"] < 20 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait()
        before = server.counts["stage1"]
        assert 20 <= before < 50, "the child must be killed mid-batch"
        stored = LabelCache(cache)
        kept = len(stored)
        rerun = CachedLabeler(make_vlm(server, max_queries=50), stored)
        labels = rerun(toy_pairs(100))
        assert server.counts["stage1"] <= 50 + 4  # at most the 4 pairs in flight at the kill were paid twice
        assert sum(not lab.failed for lab in labels) == 50 and sum(lab.cached for lab in labels) == kept
        assert stored.spend("vlm:stub-vlm").queries == 50
        rerun.close()


def test_spend_totals_equal_the_sum_of_the_endpoint_usage(tmp_path):
    pairs = toy_pairs(12, seed=1)
    prices = {"stub-vlm": {"prompt": 2.5, "completion": 10.0}}
    with UsageStub() as server:
        labeler = CachedLabeler(make_vlm(server, prices=prices), LabelCache(tmp_path / "c.sqlite"))
        labels = labeler(pairs + pairs[:3])  # a pair asked twice in one batch is paid once
        total = labeler.cache.spend("vlm:stub-vlm")
        assert server.answers == 24  # stage 1 and stage 2 of 12 pairs
        assert total.queries == 12
        assert total.prompt_tokens == server.usage_sum["prompt_tokens"] > 0
        assert total.completion_tokens == server.usage_sum["completion_tokens"] > 0
        expected = (2.5 * total.prompt_tokens + 10.0 * total.completion_tokens) / 1e6
        assert total.cost_usd == pytest.approx(expected)
        per_label = [lab.spend for lab in labels[:12]]
        assert sum(s.prompt_tokens for s in per_label) == total.prompt_tokens  # stored with each label
        meta = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT meta FROM labels").fetchall()
        assert sum(json.loads(m)["usage"]["completion_tokens"] for (m,) in meta) == total.completion_tokens

        from vlmrl.preferences import label_stats

        stats = label_stats(pairs + pairs[:3], labels)
        assert (stats.prompt_tokens, stats.completion_tokens) == (total.prompt_tokens, total.completion_tokens)
        assert stats.cost_usd == pytest.approx(total.cost_usd)
        again = labeler(pairs)  # served from the cache: nothing paid, nothing added
        assert all(lab.cached and lab.spend is None for lab in again)
        assert labeler.cache.spend("vlm:stub-vlm") == total
        labeler.close()


def test_max_spend_stops_paying_once_the_money_is_spent(tmp_path):
    pairs = toy_pairs(30, seed=2)
    with UsageStub() as server:
        prices = {"stub-vlm": {"prompt": 1000.0, "completion": 1000.0}}  # dollars per million tokens
        labeler = CachedLabeler(make_vlm(server, prices=prices, max_spend=2.0, max_workers=1), LabelCache())
        labels = labeler(pairs)
        total = labeler.cache.spend("vlm:stub-vlm")
        per_pair = total.cost_usd / total.queries
        assert 0 < total.queries < 30 and labeler.exhausted
        assert 2.0 <= total.cost_usd < 2.0 + per_pair  # sequential: at most the last pair goes over
        assert sum(lab.raw == "budget exhausted" for lab in labels) == 30 - total.queries
        labeler.close()
    with pytest.raises(ValueError, match="prices"):
        VLMPreferenceLabeler(model="m", base_url="http://127.0.0.1:1/v1", max_spend=1.0)


def test_budget_keys_separate_and_share_budgets(tmp_path):
    pairs = toy_pairs(10, seed=3)
    cache = LabelCache(tmp_path / "c.sqlite")
    with StubVLMServer() as server:
        a = CachedLabeler(make_vlm(server, max_queries=6, budget_key="exp-a"), cache)
        a(pairs[:6])
        assert a.exhausted
        b = CachedLabeler(make_vlm(server, max_queries=6, budget_key="exp-b"), cache)
        assert not b.exhausted
        b(pairs[6:])
        assert cache.spend("exp-a").queries == 6 and cache.spend("exp-b").queries == 4
        assert cache.spend("nobody").queries == 0
        assert b.spend_total() == {
            "budget_key": "exp-b",
            "queries": 4,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "max_queries": 6,
            "max_spend": None,
            "durable": True,
        }
