import numpy as np
import pytest

from vlmrl.data.scoring import ShardStore, score_dataset
from vlmrl.rewards.base import RewardModel


class LinearStateReward(RewardModel):
    """A fixed linear reward on state vectors; counts predicted rows and can fail after a budget."""

    input_key = "observation"

    def __init__(self, weights: np.ndarray, fail_after_rows: int | None = None):
        self.weights = np.asarray(weights, np.float32)
        self.fail_after_rows = fail_after_rows
        self.rows_seen = 0

    def predict(self, batch):
        batch = np.asarray(batch, np.float32)
        if self.fail_after_rows is not None and self.rows_seen + len(batch) > self.fail_after_rows:
            raise KeyboardInterrupt("simulated kill")
        self.rows_seen += len(batch)
        return batch @ self.weights


@pytest.fixture
def inputs():
    return np.random.default_rng(1).normal(size=(1000, 4)).astype(np.float32)


def test_local_scoring_matches_direct_prediction(tmp_path, inputs):
    model = LinearStateReward([1.0, -2.0, 0.5, 0.0])
    rewards = score_dataset(model, inputs, tmp_path / "s", "fp", shard_size=300, batch_size=64)
    np.testing.assert_allclose(rewards, inputs @ model.weights, rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "s").glob("shard_*.npy")) == [
        "shard_00000.npy",
        "shard_00001.npy",
        "shard_00002.npy",
        "shard_00003.npy",
    ]


def test_killed_scoring_resumes_with_only_the_missing_shards(tmp_path, inputs):
    weights = [0.3, 0.1, -1.0, 2.0]
    crashing = LinearStateReward(weights, fail_after_rows=650)
    with pytest.raises(KeyboardInterrupt):
        score_dataset(crashing, inputs, tmp_path / "s", "fp", shard_size=200, batch_size=50)
    assert len(list((tmp_path / "s").glob("shard_*.npy"))) == 3  # 600 rows were kept
    resumed = LinearStateReward(weights)
    rewards = score_dataset(resumed, inputs, tmp_path / "s", "fp", shard_size=200, batch_size=50)
    assert resumed.rows_seen == 400
    np.testing.assert_allclose(rewards, inputs @ resumed.weights, rtol=1e-6)


def test_shards_of_another_model_are_refused(tmp_path, inputs):
    score_dataset(LinearStateReward([1, 0, 0, 0]), inputs, tmp_path / "s", "model-a", shard_size=500)
    with pytest.raises(ValueError, match="another dataset or reward model"):
        score_dataset(LinearStateReward([0, 1, 0, 0]), inputs, tmp_path / "s", "model-b", shard_size=500)


def test_bad_model_output_and_backend_are_named(tmp_path, inputs):
    class Wrong(RewardModel):
        def predict(self, batch):
            return np.zeros(3, np.float32)

    with pytest.raises(ValueError, match="Wrong.predict returned 3 rewards for a batch of 64"):
        score_dataset(Wrong(), inputs, tmp_path / "a", "fp", batch_size=64)
    with pytest.raises(ValueError, match="use 'local' or 'ray'"):
        score_dataset(LinearStateReward([1, 0, 0, 0]), inputs, tmp_path / "b", "fp", backend="spark")
    with pytest.raises(ValueError, match="shard_size=0"):
        ShardStore(tmp_path / "c", 10, 0, "fp")
