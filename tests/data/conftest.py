import numpy as np
import pytest

from vlmrl.data import OfflineDataset


def make_dataset(
    rng: np.random.Generator, episodes: int = 3, length: int = 5, obs_dim: int = 4, frames: bool = True
) -> OfflineDataset:
    """A small well-formed dataset: rewards equal the first observation coordinate."""
    n = episodes * length
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[length - 1 :: length] = True
    return OfflineDataset(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=obs[:, 0].copy(),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        frames=rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8) if frames else None,
        infos={"gt_metric": obs[:, 1].copy()},
        metadata={"env": "toy", "task": "move right", "source": "test"},
    )


@pytest.fixture
def dataset() -> OfflineDataset:
    return make_dataset(np.random.default_rng(0))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models train faster on one thread; on a busy 2-core machine OpenMP spin-waits otherwise."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
