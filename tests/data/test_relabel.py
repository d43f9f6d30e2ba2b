import numpy as np
import pytest
import torch

from vlmrl.data import OfflineDataset
from vlmrl.data.relabel import relabel
from vlmrl.labelers.cache import CachedLabeler
from vlmrl.labelers.teacher import SimulatedTeacher
from vlmrl.preferences import DatasetFragmenter, label_stats
from vlmrl.rewards.preference import PreferenceRewardModel


def brightness_dataset(rng: np.random.Generator, episodes: int = 8, length: int = 25) -> OfflineDataset:
    """Frames whose brightness is the ground-truth reward (plus pixel noise): a signal a tiny CNN can learn."""
    n = episodes * length
    reward = rng.uniform(0, 1, size=n).astype(np.float32)
    frames = (reward[:, None, None, None] * 200 + rng.integers(0, 40, size=(n, 16, 16, 3))).astype(np.uint8)
    timeouts = np.zeros(n, bool)
    timeouts[length - 1 :: length] = True
    return OfflineDataset(
        observations=rng.normal(size=(n, 3)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=reward,
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        frames=frames,
        metadata={"task": "make it bright"},
    )


def tiny_model() -> PreferenceRewardModel:
    return PreferenceRewardModel(ensemble_size=2, image_size=16, lr=3e-3, batch_size=32, seed=0)


def test_segment_pairs_stay_inside_episodes():
    ds = brightness_dataset(np.random.default_rng(0), episodes=4, length=10)
    pairs = DatasetFragmenter(ds, 3)(500, np.random.default_rng(1))
    assert pairs.first_index.shape == (500, 3)
    ids = ds.episode_ids()
    for rows in (pairs.first_index, pairs.second_index):
        assert (ids[rows] == ids[rows[:, :1]]).all()
        np.testing.assert_array_equal(np.diff(rows, axis=1), 1)


def test_teacher_labels_follow_ground_truth_and_are_cached(tmp_path):
    from vlmrl.labelers.cache import LabelCache

    ds = brightness_dataset(np.random.default_rng(0))
    pairs = DatasetFragmenter(ds, 1)(100, np.random.default_rng(1))
    cache = LabelCache(tmp_path / "labels.sqlite")
    answers = CachedLabeler(SimulatedTeacher(), cache)(pairs.pairs)
    labels, stats = [lab.value for lab in answers], label_stats(pairs.pairs, answers)
    expected = (ds.rewards[pairs.second_index[:, 0]] > ds.rewards[pairs.first_index[:, 0]]).astype(int)
    np.testing.assert_array_equal(labels, expected)
    assert stats.paid == 100 and stats.accuracy == 1.0
    answers2 = CachedLabeler(SimulatedTeacher(), cache)(pairs.pairs)
    labels2, stats2 = [lab.value for lab in answers2], label_stats(pairs.pairs, answers2)
    np.testing.assert_array_equal(labels2, labels)
    assert stats2.paid == 0 and stats2.cache_hits == 100


def test_relabel_learns_the_reward_and_a_rerun_pays_for_nothing(tmp_path):
    torch.manual_seed(0)
    ds = brightness_dataset(np.random.default_rng(0))
    kwargs = dict(
        labeler=SimulatedTeacher(), num_pairs=300, fit_kwargs={"max_epochs": 15}, shard_size=64, log=lambda m: None
    )
    out, report = relabel(ds, tiny_model(), tmp_path, np.random.default_rng(2), **kwargs)
    assert report["agreement"]["spearman"] > 0.9, report
    assert report["labels"]["paid"] == 300
    np.testing.assert_array_equal(out.ground_truth_rewards(), ds.rewards)
    assert out.metadata["relabeled"] and out.metadata["reward_source"] == "preference"
    for name in ("labels.sqlite", "labels.npz", "reward_model.pt", "fit.json"):
        assert (tmp_path / name).exists(), name
    assert len(list((tmp_path / "shards").glob("shard_*.npy"))) == 4
    # kill after scoring two shards, then run again: labels come from the cache, the model is reloaded,
    # the kept shards are reused, and the result is identical
    for shard in sorted((tmp_path / "shards").glob("shard_*.npy"))[2:]:
        shard.unlink()
    again, report2 = relabel(ds, tiny_model(), tmp_path, np.random.default_rng(2), **kwargs)
    assert report2["labels"]["paid"] == 0 and report2["labels"]["cached"] == 300
    np.testing.assert_allclose(again.rewards, out.rewards, rtol=1e-6)


def test_zero_shot_relabel_without_labeler(tmp_path):
    ds = brightness_dataset(np.random.default_rng(0), episodes=2, length=5)
    model = tiny_model()
    out, report = relabel(ds, model, tmp_path, np.random.default_rng(0), log=lambda m: None)
    np.testing.assert_allclose(out.rewards, model.predict(ds.frames), rtol=1e-5)
    assert "labels" not in report and out.metadata["reward_source"] == "zero_shot"


def test_frame_model_on_a_dataset_without_frames_is_refused(tmp_path):
    from vlmrl.data import DatasetError

    ds = brightness_dataset(np.random.default_rng(0), episodes=2, length=5)
    ds.frames = None
    with pytest.raises(DatasetError, match="has no frames but the reward model reads frames"):
        relabel(ds, tiny_model(), tmp_path, np.random.default_rng(0), log=lambda m: None)


def cloth_dataset(rng: np.random.Generator, episodes: int = 4, length: int = 20) -> OfflineDataset:
    """Toy cloth frames (what the stub VLM can judge) whose fold level is the ground-truth reward."""
    from vlmrl.testing.stub_vlm import render_toy_cloth

    n = episodes * length
    fold = rng.uniform(0, 1, size=n).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[length - 1 :: length] = True
    return OfflineDataset(
        observations=np.zeros((n, 2), np.float32),
        actions=np.zeros((n, 1), np.float32),
        rewards=fold,
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        frames=np.stack([render_toy_cloth(float(f), 16, rng) for f in fold]),
        metadata={"task": "fold the cloth"},
    )


def test_failures_are_asked_again_by_a_later_run_and_its_model_is_refit(tmp_path):
    """Budget refusals are not labels: the rerun pays for them, reports what it paid and fits on the new labels."""
    from vlmrl.labelers.cache import LabelCache
    from vlmrl.labelers.vlm import VLMPreferenceLabeler
    from vlmrl.testing.stub_vlm import StubVLMServer

    ds = cloth_dataset(np.random.default_rng(0))
    with StubVLMServer() as server:

        def run(max_queries):
            vlm = VLMPreferenceLabeler(model="stub", base_url=server.base_url, max_queries=max_queries, max_workers=4)
            try:
                return relabel(
                    ds,
                    tiny_model(),
                    tmp_path,
                    np.random.default_rng(2),
                    labeler=vlm,
                    num_pairs=40,
                    fit_kwargs={"max_epochs": 2},
                    shard_size=64,
                    log=lambda m: None,
                )[1]
            finally:
                vlm.close()

        first = run(20)
        assert len(LabelCache(tmp_path / "labels.sqlite")) == 20  # budget refusals are not stored
        assert server.counts["stage1"] == 20 and first["labels"]["paid"] == 20
        second = run(40)  # the same budget key: 20 recorded, 20 more allowed
        assert server.counts["stage1"] == 40
        assert second["labels"]["paid"] == 20 and second["labels"]["cached"] == 20
        assert second["fit"]["pairs"] == second["labels"]["valid"] > first["fit"]["pairs"]  # refit on every label
        assert first["label_stats"]["failures"] == 20 and second["label_stats"]["failures"] == 0
        assert second["label_stats"]["spend_total"]["queries"] == 40  # what was paid, over both runs
        third = run(40)  # nothing new: the fitted model is reused
        assert third["labels"]["cached"] == 40 and third["fit"] == second["fit"]


def test_a_labeler_that_gives_no_valid_label_stops_relabel(tmp_path):
    from vlmrl.labelers.base import Labeler
    from vlmrl.types import Label

    class Unsure(Labeler):
        name = "unsure"

        def __call__(self, queries):
            return [Label(-1, source=self.name) for _ in queries]

    ds = brightness_dataset(np.random.default_rng(0), episodes=2, length=10)
    with pytest.raises(ValueError, match="valid labels"):
        relabel(
            ds,
            tiny_model(),
            tmp_path,
            np.random.default_rng(0),
            labeler=Unsure(),
            num_pairs=20,
            log=lambda m: None,
        )
    assert not (tmp_path / "reward_model.pt").exists()
