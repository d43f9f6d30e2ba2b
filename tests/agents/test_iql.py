import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from vlmrl.agents.iql import IQLAgent, evaluate_policy
from vlmrl.data import DatasetError, save_dataset
from vlmrl.data.collect import collect
from vlmrl.envs.manipulation import ScriptedPushPolicy, make_push


def push_env():
    return make_push(max_episode_steps=10, width=32, height=32)


@pytest.fixture(scope="module")
def relabeled_file(tmp_path_factory):
    """A tiny push dataset whose 'learned' rewards are the ground truth plus noise (env_reward kept)."""
    root = tmp_path_factory.mktemp("iql")
    mixture = [{"policy": "expert", "noise": 0.1, "fraction": 1}, {"policy": "random", "fraction": 1}]
    raw = collect(push_env, mixture, 4, np.random.default_rng(0), expert_fn=ScriptedPushPolicy, keep_frames=False)
    save_dataset(raw, root / "raw.npz")
    noisy = raw.rewards + np.random.default_rng(1).normal(0, 0.01, len(raw)).astype(np.float32)
    save_dataset(raw.with_rewards(noisy), root / "relabeled.h5")
    return root


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_iql_job_trains_three_variants_evaluates_and_resumes(relabeled_file, tmp_path):
    agent = IQLAgent(
        dataset=str(relabeled_file / "relabeled.h5"),
        steps=20,
        bc_steps=10,
        steps_per_epoch=10,
        batch_size=32,
        eval_episodes=2,
        video_episodes=1,
    )
    result = agent.train(env_fn=push_env, run_dir=tmp_path, rng=np.random.default_rng(0))
    assert set(result["variants"]) == {"iql", "bc", "iql_gt"}
    for name, row in result["variants"].items():
        assert (tmp_path / "checkpoints" / f"{name}.d3").exists()
        assert (tmp_path / "eval" / f"{name}.json").exists()
        assert row["episodes"] == 2.0 and 0.0 <= row["gt_metric_mean"] < 1.0 and -10.0 < row["return_mean"] <= 0
    assert result["variants"]["bc"]["steps"] == 10
    assert isinstance(result["iql_beats_bc"], bool) and "iql_minus_iql_gt" in result
    assert result["iql_minus_bc_se"] > 0
    assert json.loads((tmp_path / "result.json").read_text())["transitions"] == 40
    for name in ("iql", "bc", "iql_gt"):  # one 10-step episode per variant, frames not blank
        video = iio.imread(tmp_path / "videos" / f"{name}.mp4")
        assert video.shape[0] == 10 and video[:, :32].std() > 5 and result["variants"][name]["video"].endswith(".mp4")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("variant") == "iql" and r["event"] == "epoch"] == [10, 20]

    # resume: finished variants are not retrained; a half-trained one continues from its checkpoint
    (tmp_path / "eval" / "iql_gt.json").unlink()
    (tmp_path / "checkpoints" / "iql_gt.json").write_text(json.dumps({"step": 10}))
    again = agent.train(env_fn=push_env, run_dir=tmp_path, rng=np.random.default_rng(0), resume=True)
    assert again["variants"]["iql"] == result["variants"]["iql"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    gt_epochs = [r["step"] for r in rows if r.get("variant") == "iql_gt" and r["event"] == "epoch"]
    assert gt_epochs == [10, 20, 20]  # the resumed run trained only steps 10..20

    # killed after the last checkpoint, before its evaluation: resume evaluates the saved model, same numbers
    (tmp_path / "eval" / "bc.json").unlink()
    third = agent.train(env_fn=push_env, run_dir=tmp_path, rng=np.random.default_rng(0), resume=True)
    assert third["variants"]["bc"]["gt_metric_mean"] == result["variants"]["bc"]["gt_metric_mean"]
    assert third["variants"]["bc"]["train_seconds"] < 1.0  # nothing retrained


def test_iql_gt_needs_ground_truth(relabeled_file, tmp_path):
    from vlmrl.data import load_dataset

    ds = load_dataset(relabeled_file / "relabeled.h5")
    ds.infos.pop("env_reward")
    save_dataset(ds, tmp_path / "no_gt.h5")
    agent = IQLAgent(dataset=str(tmp_path / "no_gt.h5"), steps=5, variants=["iql_gt"], eval_episodes=0)
    with pytest.raises(DatasetError, match="no ground-truth rewards .* agents.variants=\\[iql,bc\\]"):
        agent.train(run_dir=tmp_path / "run", rng=np.random.default_rng(0))


def test_unrelabeled_dataset_trains_iql_gt_on_its_own_rewards(relabeled_file):
    from vlmrl.data import load_dataset

    raw = load_dataset(relabeled_file / "raw.npz")
    agent = IQLAgent(dataset="unused.h5")
    np.testing.assert_array_equal(agent.rewards_for("iql_gt", raw), raw.rewards)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": ""}, "agents.dataset is empty"),
        ({"dataset": "d.h5", "expectile": 0.3}, "expectile=0.3"),
        ({"dataset": "d.h5", "variants": ["ppo"]}, "choose from"),
        ({"dataset": "d.h5", "metric_goal": "up"}, "metric_goal='up'"),
        ({"dataset": "d.h5", "reward_scaler": "log"}, "reward_scaler='log'"),
        ({"dataset": "d.h5", "hidden_units": []}, "hidden_units=\\[\\]"),
    ],
)
def test_bad_settings_fail_fast(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IQLAgent(**kwargs)


def test_missing_dataset_names_the_file(tmp_path):
    agent = IQLAgent(dataset=str(tmp_path / "nope.h5"), steps=5)
    with pytest.raises(DatasetError, match="nope.h5: no such file"):
        agent.train(run_dir=tmp_path / "run", rng=np.random.default_rng(0))


def test_evaluate_policy_reads_the_ground_truth_metric():
    env = push_env()
    expert = ScriptedPushPolicy(env)
    out = evaluate_policy(lambda obs: expert(obs), lambda: env, seeds=[0, 1])
    assert out["episodes"] == 2.0
    assert 0.0 <= out["gt_metric_mean"] < 0.5 and out["success_rate"] in (0.0, 0.5, 1.0)


@pytest.mark.parametrize("variant", ["iql", "bc"])
def test_hidden_units_shape_every_network(relabeled_file, variant):
    from vlmrl.data import load_dataset

    agent = IQLAgent(dataset="unused.h5", hidden_units=[32, 16])
    algo = agent.build(variant)
    algo.build_with_dataset(load_dataset(relabeled_file / "raw.npz").to_d3rlpy())
    policy = algo.impl.modules.imitator if variant == "bc" else algo.impl.modules.policy
    widths = {m.out_features for m in policy.modules() if isinstance(m, torch.nn.Linear)}
    assert {32, 16} <= widths and 256 not in widths
    if variant == "iql":
        value = [m.out_features for m in algo.impl.modules.value_func.modules() if isinstance(m, torch.nn.Linear)]
        assert value == [32, 16, 1]
