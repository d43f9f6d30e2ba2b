import numpy as np
import pytest

from vlmrl.cli import main
from vlmrl.data.collect import Behaviour, collect, parse_mixture, split_episodes
from vlmrl.envs.experts import ScriptedPushPolicy
from vlmrl.envs.push import make_push


def push_env():
    return make_push(max_episode_steps=12, width=32, height=32)


def test_split_episodes_by_fraction_with_largest_remainder():
    mixture = parse_mixture([{"policy": "expert", "fraction": 0.2}, {"policy": "random", "fraction": 0.8}])
    np.testing.assert_array_equal(np.bincount(split_episodes(mixture, 7)), [1, 6])
    three = parse_mixture([{"fraction": 1}, {"fraction": 1}, {"fraction": 1}])
    np.testing.assert_array_equal(np.bincount(split_episodes(three, 10)), [4, 3, 3])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"policy": "teleport"}, "use one of expert, random, checkpoint"),
        ({"policy": "expert", "noise": -0.1}, "noise=-0.1"),
        ({"policy": "random", "fraction": 0}, "fraction=0"),
        ({"policy": "checkpoint"}, "needs path="),
        ({"policy": "random", "expert_args": {"decoy": "mirror"}}, "expert_args is for policy=expert"),
    ],
)
def test_bad_behaviours_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        Behaviour(**spec)


def test_expert_without_expert_fn_names_the_setting():
    with pytest.raises(ValueError, match="set collect.expert"):
        collect(push_env, [{"policy": "expert"}], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="part_episodes=0: save at least one episode per part"):
        collect(push_env, [{"policy": "random"}], 1, np.random.default_rng(0), part_episodes=0)


def test_push_mixture_dataset_records_frames_metric_and_behaviour(tmp_path):
    mixture = [{"policy": "expert", "noise": 0.0, "fraction": 1}, {"policy": "random", "fraction": 1}]

    def collect_push(episodes):
        return collect(
            push_env,
            mixture,
            episodes,
            np.random.default_rng(0),
            expert_fn=ScriptedPushPolicy,
            metadata={"task": "push"},
            work_dir=tmp_path,
            part_episodes=3,
        )

    ds = collect_push(4)
    assert len(ds) == 48 and ds.num_episodes == 4
    assert ds.frames.shape == (48, 32, 32, 3) and ds.frames.max() > 0
    assert ds.timeouts.sum() == 4 and not ds.terminals.any()
    np.testing.assert_allclose(ds.rewards, -ds.infos["gt_metric"], rtol=1e-6)
    np.testing.assert_array_equal(np.bincount(ds.infos["policy_id"][ds.episode_ends]), [2, 2])
    assert ds.metadata["task"] == "push" and ds.metadata["mixture"][1]["policy"] == "random"
    # the noise-free expert makes progress, random actions barely move the block
    ends, starts = ds.episode_ends, np.r_[0, ds.episode_ends[:-1] + 1]
    progress = ds.infos["gt_metric"][starts] - ds.infos["gt_metric"][ends]
    expert = ds.infos["policy_id"][ends] == 0
    assert progress[expert].min() >= 0.0
    assert sorted(p.name for p in (tmp_path / "parts").glob("part_*.npz")) == ["part_00000.npz", "part_00001.npz"]
    # a second call with the same seed reuses the saved parts and gives identical data
    again = collect_push(4)
    np.testing.assert_array_equal(again.observations, ds.observations)
    with pytest.raises(ValueError, match="parts of a different collection"):
        collect_push(5)


def test_expert_args_reach_the_expert_and_the_metadata():
    def behind_env():
        return make_push(max_episode_steps=40, width=32, height=32, start="behind")

    decoy = {"decoy": "mirror"}
    mixture = [{"policy": "expert", "fraction": 1}, {"policy": "expert", "fraction": 1, "expert_args": decoy}]
    ds = collect(behind_env, mixture, 2, np.random.default_rng(3), expert_fn=ScriptedPushPolicy, keep_frames=False)
    assert ds.metadata["mixture"][1]["expert_args"] == decoy and ds.metadata["mixture"][0]["expert_args"] is None
    ends = ds.episode_ends
    final = dict(zip(ds.infos["policy_id"][ends], ds.infos["is_success"][ends], strict=True))
    assert final == {0: True, 1: False}  # the expert does this task, the decoy expert another one


def test_kept_parts_resume_only_the_same_collection(tmp_path):
    def collect_push(part_episodes=2, settings=None, fresh=False, max_steps=6):
        return collect(
            lambda: make_push(max_episode_steps=max_steps, width=16, height=16),
            [{"policy": "random"}],
            4,
            np.random.default_rng(0),
            keep_frames=False,
            work_dir=tmp_path,
            part_episodes=part_episodes,
            settings={"envs.max_episode_steps": max_steps} if settings is None else settings,
            fresh=fresh,
        )

    first = collect_push()
    (tmp_path / "parts" / "part_00001.npz").unlink()  # as if killed after the first part
    with pytest.raises(ValueError, match=r"different collection: collect.part_episodes differs \(.*2 -> 3\)"):
        collect_push(part_episodes=3)
    with pytest.raises(ValueError, match=r"envs.max_episode_steps differs.*collect.fresh=true"):
        collect_push(max_steps=3)
    np.testing.assert_array_equal(collect_push().observations, first.observations)  # same settings: resumed
    fresh = collect_push(max_steps=3, fresh=True)
    assert len(fresh) == 4 * 3 and np.all(np.diff(np.r_[-1, fresh.episode_ends]) == 3)
    # parts without a stored fingerprint (an older layout) are never reused blindly
    (tmp_path / "parts" / "fingerprint.json").unlink()
    with pytest.raises(ValueError, match="settings are unknown"):
        collect_push(max_steps=3)


def test_collect_job_refuses_to_resume_with_other_settings(tmp_path, capsys, monkeypatch):
    import vlmrl.jobs.collect as collect_job

    out = tmp_path / "raw.npz"
    args = ["collect", "push_offline", f"collect.out={out}", "collect.episodes=4", "collect.part_episodes=2"]
    args += ["envs.width=16", "envs.height=16", "collect.frames=false"]

    def killed(*a, **k):
        raise KeyboardInterrupt  # the parts are kept, the dataset is not written

    monkeypatch.setattr(collect_job, "save_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "envs.max_episode_steps=4"])
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*args, "envs.max_episode_steps=3"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "envs.max_episode_steps differs (envs.max_episode_steps: 4 -> 3" in err and "collect.fresh=true" in err
    assert main([*args, "envs.max_episode_steps=3", "collect.part_episodes=1", "collect.fresh=true"]) == 0
    from vlmrl.data.storage import load_dataset

    ds = load_dataset(out)
    assert ds.num_episodes == 4 and len(ds) == 4 * 3
    assert not (tmp_path / "raw.npz.work").exists()
