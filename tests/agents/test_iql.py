import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from vlmrl.agents.base import TrainContext
from vlmrl.agents.iql import IQLAgent, load_variant
from vlmrl.data import DatasetError, load_dataset, save_dataset
from vlmrl.data.collect import collect
from vlmrl.envs.experts import ScriptedPushPolicy
from vlmrl.envs.push import make_push
from vlmrl.report.video import RolloutVideos
from vlmrl.rollouts import evaluate_policy
from vlmrl.runs import RunFolder


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


def train(agent, run_dir, resume=False, env_fn=push_env, run_folder=RunFolder):
    """``agent.train`` the way the train job calls it (seed 0, videos of the env's own reward)."""
    videos = RolloutVideos(env_fn) if env_fn is not None else None
    rng = np.random.default_rng(0)
    return agent.train(TrainContext(env_fn, None, run_folder(run_dir), rng, resume=resume, videos=videos))


SMALL = dict(steps=20, bc_steps=10, steps_per_epoch=10, batch_size=32, eval_episodes=2)


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
    result = train(agent, tmp_path)
    assert set(result["variants"]) == {"iql", "bc", "iql_gt"}
    for name, row in result["variants"].items():
        assert (tmp_path / "checkpoints" / f"{name}.d3").exists()
        assert (tmp_path / "eval" / f"{name}.json").exists()
        assert row["episodes"] == 2.0 and 0.0 <= row["gt_metric_mean"] < 1.0 and -10.0 < row["return_mean"] <= 0
    assert result["variants"]["bc"]["steps"] == 10
    assert isinstance(result["iql_beats_bc"], bool) and "iql_minus_iql_gt" in result
    assert result["iql_minus_bc_se"] > 0
    assert result["transitions"] == 40 and not (tmp_path / "result.json").exists()  # the train job writes it
    for name in ("iql", "bc", "iql_gt"):  # one 10-step episode per variant, frames not blank
        video = iio.imread(tmp_path / "videos" / f"{name}.mp4")
        assert video.shape[0] == 10 and video[:, :32].std() > 5 and result["variants"][name]["video"].endswith(".mp4")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("variant") == "iql" and r["event"] == "epoch"] == [10, 20]

    # resume: finished variants are not retrained; a half-trained one continues from its checkpoint
    (tmp_path / "eval" / "iql_gt.json").unlink()
    (tmp_path / "checkpoints" / "iql_gt.json").write_text(json.dumps({"step": 10}))
    again = train(agent, tmp_path, resume=True)
    assert again["variants"]["iql"] == result["variants"]["iql"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    gt_epochs = [r["step"] for r in rows if r.get("variant") == "iql_gt" and r["event"] == "epoch"]
    assert gt_epochs == [10, 20, 20]  # the resumed run trained only steps 10..20

    # killed after the last checkpoint, before its evaluation: resume evaluates the saved model, same numbers
    (tmp_path / "eval" / "bc.json").unlink()
    third = train(agent, tmp_path, resume=True)
    assert third["variants"]["bc"]["gt_metric_mean"] == result["variants"]["bc"]["gt_metric_mean"]
    assert third["variants"]["bc"]["train_seconds"] < 1.0  # nothing retrained


class Killed(Exception):
    """Stands for the job being killed."""


class KilledAfterFirstIQLEpoch(RunFolder):
    """A run folder whose job dies right after the ``iql`` variant's first checkpoint."""

    def log_metrics(self, step, *args, **extra):
        if extra.get("event") == "epoch" and extra.get("variant") == "iql" and step == 10:
            raise Killed
        return super().log_metrics(step, *args, **extra)


def test_killed_job_resumes_to_the_same_policies_as_an_uninterrupted_one(relabeled_file, tmp_path):
    agent = IQLAgent(dataset=str(relabeled_file / "relabeled.h5"), variants=["iql", "bc"], video_episodes=0, **SMALL)
    whole = train(agent, tmp_path / "whole")
    with pytest.raises(Killed):
        train(agent, tmp_path / "killed", run_folder=KilledAfterFirstIQLEpoch)
    assert json.loads((tmp_path / "killed" / "checkpoints" / "iql.json").read_text())["step"] == 10
    resumed = train(agent, tmp_path / "killed", resume=True)
    obs = load_dataset(relabeled_file / "relabeled.h5").observations
    for variant in ("iql", "bc"):
        actions = [
            load_variant(run / "checkpoints" / f"{variant}.d3").predict(obs)
            for run in (tmp_path / "whole", tmp_path / "killed")
        ]
        np.testing.assert_array_equal(*actions)  # the minibatch stream went on where it stopped
        assert resumed["variants"][variant]["gt_metric_mean"] == whole["variants"][variant]["gt_metric_mean"]


def test_find_checkpoint_prefers_the_learned_reward_policy(tmp_path):
    agent, run = IQLAgent(dataset="unused.h5"), RunFolder(tmp_path)
    assert agent.find_checkpoint(run) is None
    run.checkpoints.mkdir()
    for variant in ("iql_gt", "bc"):
        (run.checkpoints / f"{variant}.d3").write_bytes(b"")
    assert agent.find_checkpoint(run) == run.checkpoints / "bc.d3"
    (run.checkpoints / "iql.d3").write_bytes(b"")
    assert agent.find_checkpoint(run) == run.checkpoints / "iql.d3"


def test_weights_only_checkpoint_names_the_fix(tmp_path):
    torch.save({"policy": {}}, tmp_path / "iql.d3")
    with pytest.raises(ValueError, match="weights only.*eval/iql.json"):
        load_variant(tmp_path / "iql.d3")


def test_rollout_of_an_iql_run_folder_writes_an_mp4_without_the_dataset(relabeled_file, tmp_path, capsys):
    from vlmrl.cli import main

    data, run = tmp_path / "relabeled.h5", tmp_path / "run"
    data.write_bytes((relabeled_file / "relabeled.h5").read_bytes())
    small = ["agents.steps=20", "agents.bc_steps=10", "agents.steps_per_epoch=10", "agents.eval_episodes=1"]
    env = ["envs.max_episode_steps=10", "envs.width=32", "envs.height=32"]
    train_args = ["experiments=push_offline", f"agents.dataset={data}", f"run_dir={run}", "agents.video_episodes=0"]
    assert main(["train", *train_args, "agents.hidden_units=[16,16]", *small, *env]) == 0
    data.unlink()  # a rollout needs the checkpoint only
    capsys.readouterr()

    assert main(["rollout", f"checkpoint={run}", "episodes=1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"] == str(run / "checkpoints" / "iql.d3")  # the learned-reward policy by default
    video = iio.imread(out["video"])
    assert video.shape[0] == 10 and video[:, :32].std() > 5
    assert main(["rollout", f"checkpoint={run / 'checkpoints' / 'bc.d3'}", "episodes=1"]) == 0
    assert json.loads(capsys.readouterr().out)["video"] == str(run / "videos" / "rollout_bc.mp4")


def test_iql_gt_needs_ground_truth(relabeled_file, tmp_path):
    from vlmrl.data import load_dataset

    ds = load_dataset(relabeled_file / "relabeled.h5")
    ds.infos.pop("env_reward")
    save_dataset(ds, tmp_path / "no_gt.h5")
    agent = IQLAgent(dataset=str(tmp_path / "no_gt.h5"), steps=5, variants=["iql_gt"], eval_episodes=0)
    with pytest.raises(DatasetError, match="no ground-truth rewards .* agents.variants=\\[iql,bc\\]"):
        train(agent, tmp_path / "run", env_fn=None)


def test_unrelabeled_dataset_trains_iql_gt_on_its_own_rewards(relabeled_file):
    from vlmrl.data import load_dataset

    raw = load_dataset(relabeled_file / "raw.npz")
    agent = IQLAgent(dataset="unused.h5")
    np.testing.assert_array_equal(agent.rewards_for("iql_gt", raw), raw.rewards)


def test_return_range_scaling_is_the_iql_papers(relabeled_file, tmp_path):
    """``reward_scaler=return_range``: r * 1000 / (max - min episode return), from each variant's own rewards."""
    data = load_dataset(relabeled_file / "relabeled.h5")
    agent = IQLAgent(dataset=str(relabeled_file / "relabeled.h5"), reward_scaler="return_range",
                     variants=["iql", "iql_gt"], **SMALL)  # fmt: skip
    train(agent, tmp_path, env_fn=None)
    for variant, rewards in (("iql", data.rewards), ("iql_gt", data.ground_truth_rewards())):
        scaler = load_variant(tmp_path / "checkpoints" / f"{variant}.d3").reward_scaler
        returns = data.episode_returns(rewards)
        assert (scaler.return_min, scaler.return_max) == pytest.approx((returns.min(), returns.max()))
        expected = rewards * 1000.0 / (returns.max() - returns.min())
        np.testing.assert_allclose(scaler.transform_numpy(rewards), expected, rtol=1e-5)
    assert scaler.transform_numpy(np.zeros(1, np.float32))[0] == 0  # a pure scale: no shift, unlike standard
    flat = data.with_rewards(np.zeros(len(data), np.float32))
    save_dataset(flat, tmp_path / "flat.h5")
    with pytest.raises(ValueError, match="return range is 0"):
        train(IQLAgent(dataset=str(tmp_path / "flat.h5"), reward_scaler="return_range", variants=["iql"], **SMALL),
              tmp_path / "flat_run", env_fn=None)  # fmt: skip


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
        train(agent, tmp_path / "run", env_fn=None)


def test_evaluate_policy_reads_the_ground_truth_metric():
    env = push_env()
    expert = ScriptedPushPolicy(env)
    out = evaluate_policy(lambda obs, info: expert(obs), lambda: env, seeds=[0, 1])
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
