import sqlite3

import numpy as np
import pytest

from vlmrl.data import OfflineDataset
from vlmrl.data.relabel import relabel, report_labels
from vlmrl.labelers.cache import CachedLabeler, LabelCache
from vlmrl.labelers.teacher import SimulatedTeacher
from vlmrl.labelers.vlm import VLMPreferenceLabeler
from vlmrl.preferences import DatasetFragmenter, RewardTrainer, RolloutFragmenter, label_stats
from vlmrl.rewards.online_preference import OnlinePreferenceReward
from vlmrl.rewards.preference import PreferenceRewardModel
from vlmrl.runs import LabelStats
from vlmrl.testing.stub_vlm import StubVLMServer, render_toy_cloth
from vlmrl.types import Fragment, FragmentPair, Label


def frag(*rewards):
    return Fragment(frames=np.zeros((len(rewards), 4, 4, 3), np.uint8), env_rewards=np.array(rewards, np.float32))


def one_episode_dataset(frames: np.ndarray, rewards: np.ndarray) -> OfflineDataset:
    n = len(frames)
    timeouts = np.zeros(n, bool)
    timeouts[-1] = True
    return OfflineDataset(
        observations=np.zeros((n, 2), np.float32),
        actions=np.zeros((n, 1), np.float32),
        rewards=np.asarray(rewards, np.float32),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        frames=frames,
        metadata={"task": "fold"},
    )


def tiny_model() -> PreferenceRewardModel:
    return PreferenceRewardModel(ensemble_size=1, image_size=16, lr=3e-3, batch_size=16, seed=0)


class CountingTeacher(SimulatedTeacher):
    """The simulated teacher, counting the queries that reach it."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.asked = 0

    def __call__(self, queries):
        self.asked += len(queries)
        return super().__call__(queries)


class CountingCache(LabelCache):
    """A label cache that counts the rows written to it."""

    written = 0

    def put_many(self, items):
        items = list(items)
        self.written += len(items)
        super().put_many(items)


def test_label_accuracy_on_a_hand_made_batch():
    pairs = [  # two-step segments: a segment's return is the sum of its rewards
        FragmentPair(frag(0.1, 0.0), frag(0.9, 0.0)),  # label 1: correct
        FragmentPair(frag(0.9, 0.0), frag(0.1, 0.0)),  # label 1: wrong
        FragmentPair(frag(0.2, 0.3), frag(0.4, 0.0)),  # returns 0.5 vs 0.4, label 0: correct
        FragmentPair(frag(0.5, 0.0), frag(0.0, 0.5)),  # tied ground truth: valid, not judged
        FragmentPair(frag(0.1, 0.0), frag(0.9, 0.0)),  # label -1: not valid
        FragmentPair(Fragment(frames=np.zeros((2, 4, 4, 3), np.uint8)), frag(0.3, 0.0)),  # no ground truth
        FragmentPair(frag(0.3, 0.0), frag(0.7, 0.0)),  # from the cache, correct
        FragmentPair(frag(0.3, 0.0), frag(0.7, 0.0)),  # failed
    ]
    labels = [
        Label(1),
        Label(1),
        Label(0),
        Label(1),
        Label(-1),
        Label(0),
        Label(1, cached=True),
        Label(-1, failed=True),
    ]
    stats = label_stats(pairs, labels, labeler="hand")
    expected = LabelStats(labeler="hand", queries=8, paid=6, cache_hits=1, failures=1, valid=6, judged=4, correct=3)
    assert stats == expected and stats.accuracy == 0.75
    assert report_labels(stats) == {"pairs": 8.0, "paid": 6.0, "cached": 1.0, "valid": 6.0, "label_accuracy": 0.75}
    # the trainer counts through the same function, keeps only the valid pairs and accumulates
    trainer = RewardTrainer(tiny_model(), labeler="hand")
    assert trainer.add(pairs[:4], labels[:4]) == LabelStats(
        labeler="hand", queries=4, paid=4, valid=4, judged=3, correct=2
    )
    trainer.add(pairs[4:], labels[4:])
    assert trainer.stats == expected and len(trainer) == 6
    np.testing.assert_array_equal(trainer.targets, [1, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="2 labels for 1 pairs"):
        label_stats(pairs[:1], labels[:2])


def test_rollout_fragmenter_positions_point_at_the_segments():
    rng = np.random.default_rng(0)
    fragmenter = RolloutFragmenter(segment_length=3, recent_rollouts=2)
    buffers = []
    for _ in range(3):  # the oldest rollout falls out of the buffer
        frames = rng.integers(0, 255, (10, 2, 4, 4, 3), dtype=np.uint8)
        rewards = rng.random((10, 2)).astype(np.float32)
        dones = np.zeros((10, 2), bool)
        dones[4, 0] = True
        fragmenter.add_rollout(frames, rewards, dones)
        buffers.append((frames.reshape(20, 4, 4, 3), rewards.reshape(20), dones.reshape(20)))
    flat_frames = np.concatenate([b[0] for b in buffers[1:]])
    flat_rewards = np.concatenate([b[1] for b in buffers[1:]])
    flat_dones = np.concatenate([b[2] for b in buffers[1:]])
    query = fragmenter(200, rng)
    assert len(query) == 200 and query.first_index.shape == (200, 3)
    for pair, a, b in zip(query.pairs, query.first_index, query.second_index, strict=True):
        np.testing.assert_array_equal(pair.first.frames, flat_frames[a])
        np.testing.assert_array_equal(pair.second.env_rewards, flat_rewards[b])
        assert not flat_dones[a[:-1]].any() and not flat_dones[b[:-1]].any()  # inside one episode
        assert np.all(np.diff(a) == 2)  # consecutive steps of one env (2 envs, step-major)
    assert len(RolloutFragmenter()(5, rng)) == 0  # nothing to pair yet
    with pytest.raises(ValueError, match="pass model="):
        RolloutFragmenter(sampling="entropy")


def test_dataset_fragmenter_fragments_are_the_rows():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (30, 4, 4, 3), dtype=np.uint8)
    ds = one_episode_dataset(frames, rng.random(30))
    query = DatasetFragmenter(ds, 2)(50, rng)
    for pair, rows in zip(query.pairs, query.first_index, strict=True):
        np.testing.assert_array_equal(pair.first.frames, frames[rows])
        np.testing.assert_array_equal(pair.first.env_rewards, ds.rewards[rows])
        assert pair.first.meta["rows"] == rows.tolist()


def test_the_same_cached_labeler_serves_online_and_offline(tmp_path):
    """A question the online loop paid for is not asked again by the offline relabeling (and vice versa)."""
    rng = np.random.default_rng(0)
    folds = np.linspace(0, 1, 6).astype(np.float32)
    images = np.stack([render_toy_cloth(f, 16, rng) for f in folds])
    teacher = CountingTeacher()
    cached = CachedLabeler(teacher, LabelCache(tmp_path / "labels.sqlite"))

    online = OnlinePreferenceReward(
        cached, rng=np.random.default_rng(1), ensemble_size=1, image_size=16, queries_per_update=20, max_epochs=1
    )
    online.observe_rollout(list(images), folds[:, None], np.zeros((6, 1), bool), 6)  # one env, one episode
    assert online.label_stats.queries == 20 and teacher.asked == 20
    with sqlite3.connect(tmp_path / "labels.sqlite") as db:
        paid_online = {row[0] for row in db.execute("SELECT key FROM labels")}

    ds = one_episode_dataset(images, folds)  # the same frames and rewards, as a dataset
    offline_keys = [cached.cache_key(p) for p in DatasetFragmenter(ds, 1)(30, np.random.default_rng(3)).pairs]
    _, report = relabel(
        ds, tiny_model(), tmp_path / "work", np.random.default_rng(3), labeler=cached, num_pairs=30,
        fit_kwargs={"max_epochs": 1}, log=lambda m: None,
    )  # fmt: skip
    assert not (tmp_path / "work" / "labels.sqlite").exists()  # the given cache layer is used as is
    expected_hits = sum(k in paid_online for k in offline_keys)
    assert expected_hits > 0 and report["labels"]["cached"] == expected_hits
    assert teacher.asked == 20 + 30 - expected_hits
    assert len(cached.cache) == len(paid_online | set(offline_keys))  # one row per distinct question
    cached.close()


def test_offline_vlm_relabeling_asks_each_pair_once_and_stores_it_once(tmp_path):
    rng = np.random.default_rng(0)
    folds = rng.uniform(0, 1, 40).astype(np.float32)
    ds = one_episode_dataset(np.stack([render_toy_cloth(f, 32, rng) for f in folds]), folds)
    with StubVLMServer() as server:
        vlm = VLMPreferenceLabeler(model="stub-vlm", base_url=server.base_url, max_workers=4)
        cache = CountingCache(tmp_path / "labels.sqlite")
        kwargs = dict(labeler=vlm, num_pairs=60, fit_kwargs={"max_epochs": 2}, label_cache=cache, log=lambda m: None)
        _, report = relabel(ds, tiny_model(), tmp_path / "work", np.random.default_rng(1), **kwargs)
        query = DatasetFragmenter(ds, 1)(60, np.random.default_rng(1))  # the same draw
        keys = {vlm.cache_key(p) for p in query.pairs}
        identical = {vlm.cache_key(p) for p in query.pairs if np.array_equal(p.first.frames, p.second.frames)}
        assert server.counts["stage1"] == len(keys - identical)  # each distinct pair asked once
        assert cache.written == len(cache) == len(keys)  # and written once: one cache, one row per pair
        assert report["labels"]["paid"] == 60 and report["labels"]["cached"] == 0
        assert report["labels"]["label_accuracy"] >= 0.9

        _, again = relabel(ds, tiny_model(), tmp_path / "work", np.random.default_rng(1), **kwargs)
        assert server.counts["stage1"] == len(keys - identical) and cache.written == len(keys)
        assert again["labels"]["paid"] == 0 and again["labels"]["cached"] == 60
        vlm.close()


def test_ties_train_as_one_half_online_and_offline_and_the_cache_keeps_them(tmp_path):
    """Teacher ties (B-Pref's equal rule) reach the trainer as 0.5, are counted, and come back from the cache as 0.5."""
    rng = np.random.default_rng(0)
    folds = np.repeat(np.array([0.2, 0.21, 0.8], np.float32), 4)  # mean 0.4 per step: thr_equal = 0.2 * 0.4
    images = np.stack([render_toy_cloth(f, 16, rng) for f in folds])
    teacher = SimulatedTeacher(eps_equal=0.2)

    online = OnlinePreferenceReward(
        teacher, rng=np.random.default_rng(1), ensemble_size=1, image_size=16, queries_per_update=40, max_epochs=1
    )
    online.observe_rollout(list(images), folds[:, None], np.zeros((12, 1), bool), 12)  # no episode ended yet
    assert online.label_stats.ties > 0 and online.stats().ties == online.label_stats.ties
    assert np.count_nonzero(online.trainer.targets == 0.5) == online.label_stats.ties

    cache = LabelCache(tmp_path / "labels.sqlite")
    ds = one_episode_dataset(images, folds)
    _, report = relabel(
        ds, tiny_model(), tmp_path / "work", np.random.default_rng(3), labeler=CachedLabeler(teacher, cache),
        num_pairs=40, fit_kwargs={"max_epochs": 1}, log=lambda m: None,
    )  # fmt: skip
    with np.load(tmp_path / "work" / "labels.npz") as saved:
        stored = saved["labels"]
    assert report["labels"]["ties"] == np.count_nonzero(stored == 0.5) > 0
    again = CachedLabeler(teacher, cache)(list(DatasetFragmenter(ds, 1)(40, np.random.default_rng(3)).pairs))
    assert all(lab.cached for lab in again)
    np.testing.assert_array_equal([lab.value for lab in again], stored)
    cache.close()
