import base64
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from vlmrl.labelers.cache import CachedLabeler, LabelCache, content_hash
from vlmrl.labelers.vlm import VLMPreferenceLabeler, parse_preference
from vlmrl.preferences import RewardTrainer, label_stats
from vlmrl.rewards.preference import PreferenceRewardModel
from vlmrl.testing.stub_vlm import StubVLMServer, render_toy_cloth
from vlmrl.types import Fragment, FragmentPair


def toy_pairs(n, seed=0, size=48):
    """Pairs of toy cloth frames whose fold levels differ by at least 0.15; returns pairs and true labels."""
    rng = np.random.default_rng(seed)
    pairs, truth = [], []
    while len(pairs) < n:
        f1, f2 = rng.uniform(0, 1, 2)
        if abs(f1 - f2) < 0.15:
            continue
        a, b = render_toy_cloth(f1, size, rng)[None], render_toy_cloth(f2, size, rng)[None]
        pairs.append(FragmentPair(Fragment(frames=a), Fragment(frames=b)))
        truth.append(int(f2 > f1))
    return pairs, truth


def make_labeler(server, cache, **kw):
    """The VLM labeler behind the one cache layer, as the pipelines use it."""
    return CachedLabeler(make_vlm(server, **kw), cache)


def make_vlm(server, **kw):
    kw = {"max_workers": 8, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 2.0, **kw}
    return VLMPreferenceLabeler(model="stub-vlm", task="cloth_fold", base_url=server.base_url, **kw)


@pytest.mark.parametrize(
    "text, value",
    [
        ("1", 1),
        (" 0\n", 0),
        ("-1.", -1),
        ("`1`", 1),
        ("The answer is 0.", 0),
        ("Image 2 wins: 1", 1),
        ("I can't tell", None),
        ("", None),
        ("0 or 1", None),
        ("-1 (unsure)", -1),
    ],
)
def test_parse_preference(text, value):
    assert parse_preference(text) == value


def test_stub_sees_images_and_labels_are_cached_across_runs(tmp_path):
    pairs, truth = toy_pairs(12)
    with StubVLMServer() as server:
        first = make_labeler(server, LabelCache(tmp_path / "labels.sqlite"))
        labels = first(pairs)
        first.close()
        assert [lab.value for lab in labels] == truth
        assert not any(lab.cached for lab in labels)
        assert server.counts["stage1"] == 12 and server.counts["stage2"] == 12 and server.counts["images"] == 24
        assert "cloth score" in labels[0].raw and labels[0].source == "vlm:stub-vlm"

        calls_before = server.counts["total"]
        cache = LabelCache(tmp_path / "labels.sqlite")  # reopened from disk, as a new run would
        assert len(cache) == 12
        second = make_labeler(server, cache)
        again = second(pairs)
        assert server.counts["total"] == calls_before  # zero endpoint calls on the re-run
        assert [lab.value for lab in again] == truth and all(lab.cached for lab in again)
        assert cache.hits == 12 and second.endpoint_stats().get("api_calls", 0) == 0
        second.close()


def test_failing_stub_is_retried_parsed_and_cached(tmp_path):
    pairs, truth = toy_pairs(24, seed=1)
    failures = {"timeout": 0.1, "429": 0.2, "500": 0.1, "malformed": 0.15}
    with StubVLMServer(failures=failures, timeout_sleep=1.0, rng=np.random.default_rng(0)) as server:
        labeler = make_labeler(server, LabelCache(tmp_path / "c.sqlite"), timeout=0.3, max_retries=10, parse_retries=5)
        labels = labeler(pairs)
        for kind in ("timeout", "429", "500", "malformed"):
            assert server.counts[kind] > 0, kind
        assert labeler.endpoint_stats()["retries"] >= server.counts["429"] + server.counts["500"]
        assert labeler.endpoint_stats()["malformed"] == server.counts["malformed"]
        assert [lab.value for lab in labels] == truth  # every label recovered despite the failures
        labeler.close()

        calls = server.counts["total"]
        rerun = make_labeler(server, LabelCache(tmp_path / "c.sqlite"))
        assert [lab.value for lab in rerun(pairs)] == truth
        assert server.counts["total"] == calls
        rerun.close()


def test_endpoint_that_always_fails_drops_labels_without_crashing():
    pairs, _ = toy_pairs(4, seed=2)
    with StubVLMServer(failures={"500": 1.0}) as server:
        cache = LabelCache()
        labeler = make_labeler(server, cache, max_retries=2)
        labels = labeler(pairs)
        assert [lab.value for lab in labels] == [-1] * 4
        assert all(lab.raw.startswith("error: InternalServerError") for lab in labels)
        assert server.counts["500"] == 4 * 3 and labeler.endpoint_stats()["errors"] == 4
        assert all(lab.failed for lab in labels)
        assert len(cache) == 0  # failures are not cached: the next run tries again
        labeler.close()


def test_spend_budget_stops_labeling_cleanly():
    pairs, truth = toy_pairs(5, seed=3)
    with StubVLMServer() as server:
        labeler = make_labeler(server, LabelCache(), max_queries=3)
        labels = labeler(pairs)
        assert [lab.value for lab in labels[:3]] == truth[:3]
        assert [lab.raw for lab in labels[3:]] == ["budget exhausted"] * 2
        assert labeler.exhausted and server.counts["stage1"] == 3
        labeler.close()


def test_identical_frames_and_duplicates_cost_nothing_extra():
    pairs, truth = toy_pairs(2, seed=4)
    same = FragmentPair(pairs[0].first, Fragment(frames=pairs[0].first.frames.copy()))
    with StubVLMServer() as server:
        labeler = make_labeler(server, LabelCache())
        labels = labeler([same, pairs[0], pairs[0], pairs[1]])
        assert [lab.value for lab in labels] == [-1, truth[0], truth[0], truth[1]]
        assert server.counts["stage1"] == 2
        labeler.close()


def test_rate_limit_spaces_requests():
    pairs, _ = toy_pairs(6, seed=5)
    with StubVLMServer() as server:
        labeler = make_labeler(server, LabelCache(), requests_per_second=20.0, burst=1)
        start = time.perf_counter()
        labeler(pairs)
        elapsed = time.perf_counter() - start
        assert elapsed >= 11 / 20.0 * 0.9  # 12 requests, the first immediate, then one per 50 ms
        labeler.close()


def test_configuration_errors_name_the_fix(monkeypatch):
    monkeypatch.delenv("VLMRL_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="VLMRL_TEST_KEY is not set"):
        VLMPreferenceLabeler(model="m", base_url="https://example.invalid/v1", api_key_env="VLMRL_TEST_KEY")
    with pytest.raises(FileNotFoundError, match="cloth_fold"):
        VLMPreferenceLabeler(model="m", task="no_such_task", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="needs rendered frames"):
        VLMPreferenceLabeler(model="m", base_url="http://127.0.0.1:1/v1")([FragmentPair(Fragment(), Fragment())])


def test_the_vlm_labeler_itself_caches_nothing_and_yields_answers_as_they_arrive():
    pairs, truth = toy_pairs(4, seed=6)
    with StubVLMServer() as server:
        vlm = make_vlm(server)
        groups = list(vlm.label_as_completed(pairs))
        assert sorted(i for g in groups for i in g) == [0, 1, 2, 3] and all(len(g) == 1 for g in groups)
        assert [lab.value for lab in vlm(pairs)] == truth and server.counts["stage1"] == 8  # asked again: no cache
        assert vlm.cache_key(pairs[0]) == vlm.cache_key(FragmentPair(pairs[0].first, pairs[0].second))
        assert vlm.cache_key(pairs[0]) != vlm.cache_key(pairs[1])
        vlm.close()
    with pytest.raises(ValueError, match="labelers.label_cache"):
        VLMPreferenceLabeler(model="m", base_url="http://127.0.0.1:1/v1", cache_path="/tmp/labels.sqlite")


def test_unparseable_answers_are_failures_and_never_cached(tmp_path):
    pairs, truth = toy_pairs(4, seed=7)
    with StubVLMServer(failures={"malformed": 1.0}) as server:
        labeler = make_labeler(server, LabelCache(tmp_path / "c.sqlite"), parse_retries=1)
        labels = labeler(pairs)
        assert all(lab.failed and lab.value == -1 for lab in labels)
        assert server.counts["malformed"] == 8 and labeler.endpoint_stats()["unparseable"] == 4
        assert len(labeler.cache) == 0
        labeler.close()
    with StubVLMServer() as healthy:  # a later run asks again and gets real answers
        rerun = make_labeler(healthy, LabelCache(tmp_path / "c.sqlite"))
        assert [lab.value for lab in rerun(pairs)] == truth and healthy.counts["stage1"] == 4
        rerun.close()


class PositionBiasedStub(StubVLMServer):
    """The stub endpoint, except that a pair showing one of ``biased`` frames is answered "Image 1" in any order."""

    def __init__(self, biased, **kw):
        super().__init__(**kw)
        self.biased = {content_hash(frame) for frame in biased}

    def answer(self, body):
        status, out = super().answer(body)
        urls = [
            part["image_url"]["url"]
            for msg in body.get("messages", [])
            if isinstance(msg.get("content"), list)
            for part in msg["content"]
            if part.get("type") == "image_url"
        ]
        frames = [
            np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")) for url in urls
        ]
        if status == 200 and any(content_hash(f) in self.biased for f in frames):
            out["choices"][0]["message"]["content"] = "Image 1 is closer to achieving the goal."
        return status, out


def test_swap_consistency_drops_exactly_the_pairs_answered_by_position(tmp_path):
    pairs, truth = toy_pairs(10, seed=8)
    biased = [3, 5, 8]
    with PositionBiasedStub([pairs[k].second.frames[-1] for k in biased]) as server:
        plain = make_labeler(server, LabelCache())
        assert [lab.value for lab in plain(pairs)] == [0 if k in biased else t for k, t in enumerate(truth)]
        plain.close()

        asked = server.counts["stage1"]
        cache = LabelCache(tmp_path / "c.sqlite")
        checked = make_labeler(server, cache, swap_consistency=True)
        labels = checked(pairs)
        assert server.counts["stage1"] - asked == 20  # each pair in both orders
        assert [k for k, lab in enumerate(labels) if lab.inconsistent] == biased
        assert [lab.value for lab in labels] == [-1 if k in biased else t for k, t in enumerate(truth)]
        assert not any(lab.failed for lab in labels) and len(cache) == 10  # real answers: cached as -1
        assert checked.endpoint_stats()["inconsistent"] == 3
        assert all(lab.spend.queries == 2 for lab in labels)
        stats = label_stats(pairs, labels)
        assert stats.inconsistent == 3 and stats.valid == 7
        trainer = RewardTrainer(PreferenceRewardModel(ensemble_size=1, image_size=16), min_valid_fraction=0.5)
        trainer.add(pairs, labels)
        assert len(trainer) == 7  # the inconsistent pairs are not trained on
        record = json.loads(labels[biased[0]].raw)
        assert record["inconsistent"] and "swapped" in record
        assert checked.cache_key(pairs[0]) != plain.cache_key(pairs[0])  # the option is part of the key
        checked.close()


def test_swap_consistency_counts_both_orders_against_the_budget():
    pairs, _ = toy_pairs(5, seed=9)
    with StubVLMServer() as server:
        labeler = make_labeler(server, LabelCache(), swap_consistency=True, max_queries=6)
        labels = labeler(pairs)
        assert sum(not lab.failed for lab in labels) == 3 and server.counts["stage1"] == 6
        assert labeler.cache.spend("vlm:stub-vlm").queries == 6 and labeler.exhausted
        labeler.close()
