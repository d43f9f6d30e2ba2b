import numpy as np
import pytest

from vlmrl.data.scoring import score_dataset
from vlmrl.rewards.preference import PreferenceRewardModel

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_backend_gives_the_local_rewards_and_resumes(local_ray, tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(300, 16, 16, 3), dtype=np.uint8)
    model = PreferenceRewardModel(ensemble_size=2, image_size=16, seed=3)
    local = score_dataset(model, frames, tmp_path / "local", "fp", backend="local", shard_size=128, batch_size=50)
    remote = score_dataset(
        model, frames, tmp_path / "ray", "fp", backend="ray", shard_size=128, batch_size=32, num_actors=2
    )
    assert remote.shape == (300,) and np.std(local) > 0
    np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "ray").glob("shard_*.npy"))) == 3


@pytest.mark.slow
def test_killed_ray_scoring_resumes_with_only_the_missing_shard(local_ray, tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, size=(200, 16, 16, 3), dtype=np.uint8)
    model = PreferenceRewardModel(ensemble_size=1, image_size=16, seed=4)
    first = score_dataset(model, frames, tmp_path, "fp", backend="ray", shard_size=64, batch_size=32)
    (tmp_path / "shard_00001.npy").unlink()
    (tmp_path / "shard_00003.npy").unlink()
    again = score_dataset(model, frames, tmp_path, "fp", backend="ray", shard_size=64, batch_size=32)
    np.testing.assert_allclose(again, first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again, model.predict(frames), rtol=1e-5, atol=1e-6)
