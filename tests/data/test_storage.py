import json

import h5py
import numpy as np
import pytest

from vlmrl.data import DatasetError, OfflineDataset, load_dataset, save_dataset

FORMATS = ["h5", "npz"]


def raw_arrays(ds: OfflineDataset) -> dict[str, np.ndarray]:
    out = {
        "observations": ds.observations,
        "actions": ds.actions,
        "rewards": ds.rewards,
        "terminals": ds.terminals,
        "timeouts": ds.timeouts,
        "frames": ds.frames,
    }
    out.update({f"infos/{k}": v for k, v in ds.infos.items()})
    return out


def write_raw(path, arrays: dict, metadata: str = '{"env": "toy"}') -> None:
    """Write arrays without any validation, the way a foreign or buggy tool might."""
    if path.suffix == ".npz":
        np.savez(path, metadata=np.array(metadata), **arrays)
    else:
        with h5py.File(path, "w") as f:
            f.attrs["metadata"] = metadata
            for k, v in arrays.items():
                f.create_dataset(k, data=v)


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_keeps_every_array_and_metadata(dataset, tmp_path, fmt):
    path = save_dataset(dataset, tmp_path / f"d.{fmt}")
    back = load_dataset(path)
    assert back.source == str(path)
    assert len(back) == 15 and back.num_episodes == 3
    np.testing.assert_array_equal(back.observations, dataset.observations)
    np.testing.assert_array_equal(back.actions, dataset.actions)
    np.testing.assert_array_equal(back.rewards, dataset.rewards)
    np.testing.assert_array_equal(back.frames, dataset.frames)
    np.testing.assert_array_equal(back.timeouts, dataset.timeouts)
    np.testing.assert_array_equal(back.infos["gt_metric"], dataset.infos["gt_metric"])
    assert back.metadata == {"env": "toy", "task": "move right", "source": "test"}
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_hdf5_uses_the_d4rl_layout(dataset, tmp_path):
    path = save_dataset(dataset, tmp_path / "d.hdf5")
    with h5py.File(path, "r") as f:
        assert {"observations", "actions", "rewards", "terminals", "timeouts", "frames", "infos"} <= set(f)
        assert f["rewards"].shape == (15,)
        assert json.loads(f.attrs["metadata"])["task"] == "move right"


def test_episode_bookkeeping(dataset):
    np.testing.assert_array_equal(dataset.episode_ends, [4, 9, 14])
    np.testing.assert_array_equal(dataset.episode_ids(), np.repeat([0, 1, 2], 5))
    expected = [dataset.rewards[s].sum() for s in dataset.episode_slices()]
    np.testing.assert_allclose(dataset.episode_returns(), expected, rtol=1e-6)
    sub = dataset.select_episodes(np.array([2, 0]))
    np.testing.assert_array_equal(sub.observations[:5], dataset.observations[10:15])
    assert sub.num_episodes == 2


def test_with_rewards_keeps_ground_truth(dataset):
    learned = np.arange(15, dtype=np.float32)
    relabeled = dataset.with_rewards(learned, reward_source="test")
    np.testing.assert_array_equal(relabeled.rewards, learned)
    np.testing.assert_array_equal(relabeled.ground_truth_rewards(), dataset.rewards)
    assert relabeled.metadata["relabeled"] is True and relabeled.metadata["reward_source"] == "test"
    # relabeling twice keeps the original ground truth, not the first learned rewards
    twice = relabeled.with_rewards(-learned)
    np.testing.assert_array_equal(twice.ground_truth_rewards(), dataset.rewards)


def test_to_d3rlpy_keeps_transitions_and_episodes(dataset):
    mdp = dataset.to_d3rlpy()
    assert mdp.size() == 3
    assert sum(len(ep.observations) for ep in mdp.episodes) == 15
    # d3rlpy samples T-1 transitions of a timed-out episode (its last step has no next observation)
    assert mdp.transition_count == 12
    np.testing.assert_allclose(mdp.episodes[1].rewards[:, 0], dataset.rewards[5:10])
    gt = dataset.to_d3rlpy(rewards=np.ones(15, np.float32))
    assert float(gt.episodes[0].rewards.sum()) == 5.0
    with pytest.raises(DatasetError, match="do not match"):
        dataset.to_d3rlpy(rewards=np.ones(3, np.float32))


# ---------------------------------------------------------------- malformed files: one clear error each


def _break(arrays: dict, case: str) -> tuple[dict, str]:
    a = {k: np.array(v) for k, v in arrays.items()}
    if case == "missing_key":
        del a["actions"]
        return a, r"missing key\(s\) \['actions'\]"
    if case == "short_rewards":
        a["rewards"] = a["rewards"][:-2]
        return a, "'rewards' has length 13 but observations has length 15"
    if case == "short_frames":
        a["frames"] = a["frames"][:10]
        return a, "'frames' has length 10"
    if case == "short_info":
        a["infos/gt_metric"] = a["infos/gt_metric"][:4]
        return a, "'infos/gt_metric' has length 4"
    if case == "nan_observation":
        a["observations"][7, 2] = np.nan
        return a, "'observations' contains 1 NaN value\\(s\\), first at transition 7"
    if case == "nan_reward":
        a["rewards"][3] = np.nan
        return a, "'rewards' contains 1 NaN value\\(s\\), first at transition 3"
    if case == "inf_action":
        a["actions"][12, 0] = np.inf
        return a, "'actions' contains 1 inf value\\(s\\), first at transition 12"
    if case == "partial_episode":
        a["timeouts"][-1] = False
        return a, "partial episode"
    if case == "bad_frames":
        a["frames"] = a["frames"].astype(np.float32)
        return a, "'frames' must be uint8"
    if case == "empty":
        a = {k: v[:0] for k, v in a.items()}
        return a, "holds no transitions"
    if case == "rewards_2d":
        a["rewards"] = a["rewards"].reshape(-1, 1)
        return a, "'rewards' must be 1-D"
    raise AssertionError(case)


CASES = [
    "missing_key",
    "short_rewards",
    "short_frames",
    "short_info",
    "nan_observation",
    "nan_reward",
    "inf_action",
    "partial_episode",
    "bad_frames",
    "empty",
    "rewards_2d",
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_malformed_file_raises_one_error_naming_file_and_problem(dataset, tmp_path, fmt, case):
    arrays, message = _break(raw_arrays(dataset), case)
    path = tmp_path / f"broken.{fmt}"
    write_raw(path, arrays)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_file_raises(dataset, tmp_path, fmt, keep):
    path = save_dataset(dataset, tmp_path / f"d.{fmt}", compression=None)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DatasetError, match="truncated or corrupt") as info:
        load_dataset(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_metadata_json_raises(dataset, tmp_path, fmt):
    path = tmp_path / f"d.{fmt}"
    write_raw(path, raw_arrays(dataset), metadata="{not json")
    with pytest.raises(DatasetError, match="metadata is not valid JSON"):
        load_dataset(path)


def test_not_a_dataset_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("hello")
    with pytest.raises(DatasetError, match="cannot open as HDF5"):
        load_dataset(path)


def test_missing_file_and_unknown_extension(dataset, tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope.h5")
    with pytest.raises(DatasetError, match="unknown dataset extension '.pkl'"):
        save_dataset(dataset, tmp_path / "d.pkl")


def test_in_memory_validation_names_memory(dataset):
    with pytest.raises(DatasetError, match="^<memory>: 'actions' has length 3"):
        OfflineDataset(
            observations=dataset.observations,
            actions=dataset.actions[:3],
            rewards=dataset.rewards,
            terminals=dataset.terminals,
            timeouts=dataset.timeouts,
        )
