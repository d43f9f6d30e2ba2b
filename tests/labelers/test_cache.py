import threading

import numpy as np
import pytest

from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import CachedLabeler, LabelCache, content_hash
from vlmrl.types import Label, Spend


def test_labels_survive_reopening_and_count_hits(tmp_path):
    frame = np.zeros((4, 4, 3), np.uint8)
    key = LabelCache.key("vlm", "gpt-4o", "template v1", [frame, frame + 1])
    cache = LabelCache(tmp_path / "labels.sqlite")
    assert cache.get(key) is None
    cache.put(key, Label(1, source="vlm", raw="image 2 is closer"))
    cache.close()
    again = LabelCache(tmp_path / "labels.sqlite")
    got = again.get(key)
    assert got == Label(1, source="vlm", cached=True, raw="image 2 is closer")
    assert (again.hits, again.misses, again.hit_rate) == (1, 0, 1.0) and len(again) == 1 and key in again


def test_key_depends_on_every_part():
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    base = LabelCache.key("vlm", "m", "t", [a, b])
    assert base == LabelCache.key("vlm", "m", "t", [a.copy(), b.copy()])
    others = [
        LabelCache.key("teacher", "m", "t", [a, b]),
        LabelCache.key("vlm", "m2", "t", [a, b]),
        LabelCache.key("vlm", "m", "t2", [a, b]),
        LabelCache.key("vlm", "m", "t", [b, a]),
    ]
    assert base not in others and len(set(others)) == 4
    assert content_hash(a) != content_hash(a.astype(np.float32))  # dtype is part of the content
    with pytest.raises(TypeError, match="cannot hash"):
        content_hash(3.0)


def test_concurrent_writers_lose_nothing(tmp_path):
    cache = LabelCache(tmp_path / "c.sqlite")

    def write(i):
        for j in range(50):
            cache.put(f"{i}-{j}", Label(j % 2))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 200 and cache.get("3-49").value == 1


class ScriptedLabeler(Labeler):
    """Answers text queries from a script; counts what it was asked; "fail:..." queries fail."""

    name = "scripted"

    def __init__(self):
        self.asked: list[str] = []

    def cache_key(self, query):
        return None if query.startswith("nocache:") else LabelCache.key(self.name, "", "", [query])

    def __call__(self, queries):
        self.asked += list(queries)
        return [Label(-1, raw="boom", failed=True) if q.startswith("fail:") else Label(len(q) % 2) for q in queries]


def test_cached_labeler_asks_each_key_once_and_never_stores_failures(tmp_path):
    inner = ScriptedLabeler()
    cached = CachedLabeler(inner, tmp_path / "c.sqlite")
    first = cached(["ab", "abc", "fail:x", "nocache:y", "ab"])
    assert [lab.value for lab in first] == [0, 1, -1, 1, 0] and not any(lab.cached for lab in first)
    assert len(cached.cache) == 2  # "ab" once, "abc"; not the failure, not the uncacheable query
    again = cached(["ab", "abc", "fail:x", "nocache:y"])
    assert [lab.cached for lab in again] == [True, True, False, False]
    assert inner.asked == ["ab", "abc", "fail:x", "nocache:y", "ab", "fail:x", "nocache:y"]
    cached.close()
    reopened = CachedLabeler(ScriptedLabeler(), LabelCache(tmp_path / "c.sqlite"))
    assert [lab.cached for lab in reopened(["abc"])] == [True]  # across runs
    with pytest.raises(ValueError, match="already cached"):
        CachedLabeler(reopened, LabelCache())


def test_cached_labeler_stores_each_answer_group_before_waiting_for_the_next(tmp_path):
    cache = LabelCache(tmp_path / "c.sqlite")

    class Streaming(ScriptedLabeler):
        def label_as_completed(self, queries):
            for i, q in enumerate(queries):
                if i == 1:
                    assert len(cache) == 1, "the first answer must be stored before the second is waited for"
                    raise KeyboardInterrupt("killed")
                yield {i: Label(1, raw=q)}

    with pytest.raises(KeyboardInterrupt):
        CachedLabeler(Streaming(), cache)(["a", "b"])
    assert LabelCache.key("scripted", "", "", ["a"]) in cache  # paid before the crash, kept


def test_spend_records_add_up_per_budget_key_and_survive_reopening(tmp_path):
    cache = LabelCache(tmp_path / "c.sqlite")
    assert cache.spend("vlm:m") == Spend()
    cache.add_spend("vlm:m", Spend(2, 300, 40, 0.01))
    cache.add_spend("vlm:m", Spend(1, 100, 10, 0.005))
    cache.add_spend("other", Spend(5, 0, 0, 0.0))
    cache.close()
    again = LabelCache(tmp_path / "c.sqlite")
    total = again.spend("vlm:m")
    assert (total.queries, total.prompt_tokens, total.completion_tokens) == (3, 400, 50)
    assert total.cost_usd == pytest.approx(0.015) and again.spend("other").queries == 5
    assert len(again) == 0  # spend is not a label


class PaidLabeler(ScriptedLabeler):
    """Answers like the scripted labeler and says what each answer cost; "bad:..." answers are paid failures."""

    budget_key = "paid"

    def __init__(self):
        super().__init__()
        self.recorded = None

    def bind_spend(self, recorded):
        self.recorded = recorded

    def __call__(self, queries):
        self.asked += list(queries)
        return [
            Label(-1 if q.startswith("bad:") else 1, failed=q.startswith("bad:"), spend=Spend(1, 10, 1))
            for q in queries
        ]


def test_cached_labeler_records_what_answers_cost_even_when_they_are_not_labels(tmp_path):
    cached = CachedLabeler(PaidLabeler(), tmp_path / "c.sqlite")
    labels = cached(["a", "bad:b", "c"])
    assert [lab.failed for lab in labels] == [False, True, False] and len(cached.cache) == 2
    assert cached.labeler.recorded() == Spend(3, 30, 3) == cached.cache.spend("paid")
    assert [lab.cached for lab in cached(["a", "c"])] == [True, True]
    assert cached.cache.spend("paid").queries == 3  # cache hits cost nothing
    cached.close()
