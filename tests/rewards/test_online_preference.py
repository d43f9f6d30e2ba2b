import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from scipy.stats import spearmanr

from vlmrl.cli import compose
from vlmrl.labelers.teacher import SimulatedTeacher
from vlmrl.labelers.vlm import VLMPreferenceLabeler
from vlmrl.rewards.online_preference import OnlinePreferenceReward
from vlmrl.testing.stub_vlm import StubVLMServer, render_toy_cloth

SIZE = 40


def toy_rollout(rng, n_steps=24, n_envs=2):
    """A PPO-shaped rollout of toy cloth frames: the fold level random-walks and is the env reward."""
    folds = np.clip(rng.uniform(0, 1, n_envs) + np.cumsum(rng.normal(0, 0.15, (n_steps, n_envs)), 0), 0, 1)
    frames = [render_toy_cloth(folds[t, e], SIZE, rng) for t in range(n_steps) for e in range(n_envs)]
    dones = np.zeros((n_steps, n_envs), bool)
    dones[n_steps // 2] = True
    return frames, folds.astype(np.float32), dones


def held_out(seed=7, n=150):
    rng = np.random.default_rng(seed)
    folds = rng.uniform(0, 1, n)
    return np.stack([render_toy_cloth(f, SIZE, rng) for f in folds]), folds


def small_reward(labeler, tmp_path, **kw):
    kw = {
        "ensemble_size": 3,
        "image_size": 32,
        "lr": 3e-3,
        "batch_size": 32,
        "label_every": 96,
        "queries_per_update": 40,
        "max_labels": 200,
        "max_epochs": 15,
        **kw,
    }
    return OnlinePreferenceReward(labeler, run_dir=tmp_path, rng=np.random.default_rng(0), **kw)


def test_teacher_loop_learns_the_ground_truth_ranking(tmp_path):
    reward = small_reward(SimulatedTeacher(beta="inf"), tmp_path)
    rng = np.random.default_rng(1)
    step = 0
    for _ in range(6):
        frames, rewards, dones = toy_rollout(rng)
        step += len(frames)
        reward.observe_rollout(frames, rewards, dones, step)
        assert reward.predict(np.stack(frames)).shape == (len(frames),)
    # updates at steps 48, 144, 240 (every 96 steps, the first at the first rollout)
    assert reward.updates == 3 and reward.label_stats.queries == 120
    m = reward.metrics()
    assert m["pref_label_acc"] == 1.0 and m["pref_labels"] == 120.0

    frames, folds = held_out()
    rho = spearmanr(reward.predict(frames), folds).statistic
    assert rho >= 0.8, rho

    stats = json.loads((tmp_path / "labels" / "stats.json").read_text())
    assert stats["labeler"] == "teacher" and stats["accuracy"] == 1.0
    assert stats["queries"] == 120 and len(stats["extra"]["history"]) == 3
    with np.load(tmp_path / "labels" / "pairs.npz") as pairs:
        assert pairs["first"].shape == (len(reward.trainer), 1, 32, 32, 3)


def test_budget_caps_queries_and_state_round_trips(tmp_path):
    reward = small_reward(SimulatedTeacher(beta="inf"), tmp_path, max_labels=50, max_epochs=2)
    rng = np.random.default_rng(2)
    for k in range(3):
        frames, rewards, dones = toy_rollout(rng)
        reward.observe_rollout(frames, rewards, dones, (k + 1) * 96)
    assert reward.label_stats.queries == 50 and reward.budget_left == 0
    reward.save_state(tmp_path / "ckpt")

    restored = small_reward(SimulatedTeacher(beta="inf"), tmp_path / "other", max_labels=50, seed=5)
    restored.load_state(tmp_path / "ckpt")
    probe = np.stack(toy_rollout(rng)[0][:8])
    assert np.allclose(restored.predict(probe), reward.predict(probe))
    assert restored.label_stats == reward.label_stats and restored.next_update == reward.next_update
    assert len(restored.trainer) == len(reward.trainer)


def test_normalize_standardises_the_reward_over_the_labelled_frames_and_survives_a_resume(tmp_path):
    reward = small_reward(SimulatedTeacher(beta="inf"), tmp_path, output="linear", normalize=True)
    rng = np.random.default_rng(3)
    for k in range(3):
        frames, rewards, dones = toy_rollout(rng)
        reward.observe_rollout(frames, rewards, dones, (k + 1) * 96)
    labelled = np.concatenate([reward.trainer.first, reward.trainer.second])[:, 0]
    scored = reward.predict(labelled)
    assert abs(scored.mean()) < 1e-3 and scored.std() == pytest.approx(1.0, abs=1e-3)
    raw = reward.model.predict(labelled)
    assert raw.std() != pytest.approx(1.0, abs=0.05)  # the net's own scale is something else
    assert spearmanr(scored, raw).statistic == pytest.approx(1.0)  # the ranking is the net's
    reward.save_state(tmp_path / "ckpt")
    restored = small_reward(SimulatedTeacher(beta="inf"), tmp_path / "other", output="linear", normalize=True)
    restored.load_state(tmp_path / "ckpt")
    assert np.allclose(restored.predict(labelled), scored, atol=1e-5)
    plain = small_reward(SimulatedTeacher(beta="inf"), tmp_path / "plain", output="linear")
    plain.model.load_state(tmp_path / "ckpt")
    assert np.allclose(plain.predict(labelled), raw)  # normalize off (the default): the raw ensemble mean


def test_noisy_teacher_accuracy_is_logged(tmp_path):
    reward = small_reward(
        SimulatedTeacher(eps=0.3, rng=np.random.default_rng(0)),
        tmp_path,
        max_epochs=1,
        queries_per_update=200,
        max_labels=200,
    )
    frames, rewards, dones = toy_rollout(np.random.default_rng(3))
    reward.observe_rollout(frames, rewards, dones, 48)
    assert 0.6 < reward.label_accuracy() < 0.8  # 30 % mistakes


def test_vlm_labeler_through_the_stub_endpoint(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with StubVLMServer() as server:

        def factory(rng):
            return VLMPreferenceLabeler(model="stub", base_url=server.base_url, rng=rng)

        reward = small_reward(factory, tmp_path, queries_per_update=30, max_epochs=3, label_cache=cache)
        frames, rewards, dones = toy_rollout(np.random.default_rng(4))
        reward.observe_rollout(frames, rewards, dones, 48)
        assert server.counts["stage1"] == reward.label_stats.queries - reward.label_stats.cache_hits
        assert reward.label_stats.valid >= 20 and reward.label_accuracy() >= 0.9
        reward.close()
        stats = json.loads((tmp_path / "labels" / "stats.json").read_text())
        assert stats["labeler"] == "vlm:stub"
        assert stats["extra"]["endpoint"]["api_calls"] >= 2 * server.counts["stage1"]


@pytest.mark.parametrize("name", ["teacher", "rlvlmf"])
def test_group_configs_instantiate(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("VLMRL_LABEL_CACHE", str(tmp_path / "c.sqlite"))
    cfg = compose("train", [f"labelers={name}", "device=cpu"]).labelers  # the group with its shared base
    reward = instantiate(cfg, run_dir=tmp_path, rng=np.random.default_rng(0))
    assert isinstance(reward, OnlinePreferenceReward) and reward.input_key == "frame"
    assert (tmp_path / "labels").is_dir()
    reward.close()
    if name == "rlvlmf":
        assert (tmp_path / "c.sqlite").exists() and reward.labeler.labeler.max_queries == 500


def test_bad_configuration_is_refused(tmp_path):
    with pytest.raises(ValueError, match="use one of"):
        OnlinePreferenceReward(SimulatedTeacher(), sampling="k-center")
    with pytest.raises(ValueError, match="label_every"):
        OnlinePreferenceReward(SimulatedTeacher(), label_every=0)
    reward = OnlinePreferenceReward(SimulatedTeacher(), image_size=16)
    with pytest.raises(ValueError, match="rollout of 4 steps"):
        reward.observe_rollout([np.zeros((8, 8, 3), np.uint8)] * 3, np.zeros((4, 1)), np.zeros((4, 1)), 4)


@pytest.mark.slow
def test_train_job_with_the_teacher_on_cloth_fold_writes_labels_and_resumes(tmp_path, capsys):
    from vlmrl.cli import main

    common = [
        "cloth_fold_teacher",
        "envs.width=32",
        "envs.height=32",
        "envs.max_episode_steps=16",
        "agents.n_envs=2",
        "agents.n_steps=32",
        "agents.batch_size=64",
        "agents.n_epochs=1",
        "agents.checkpoint_every=64",
        "agents.progress_bar=false",
        "labelers.image_size=32",
        "labelers.label_every=64",
        "labelers.queries_per_update=20",
        "labelers.max_epochs=2",
        f"run_dir={tmp_path / 'run'}",
    ]
    assert main(["train", *common, "agents.total_timesteps=128"]) == 0
    run = Path(json.loads(capsys.readouterr().out)["run_dir"])
    stats = json.loads((run / "labels" / "stats.json").read_text())
    assert stats["queries"] == 40 and stats["extra"]["updates"] == 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["pref_labels"] for r in rows] == [20.0, 40.0]  # one update per 64-step rollout
    assert (run / "checkpoints" / "step_128" / "reward_model.pt").exists()

    assert main(["train", *common, "agents.total_timesteps=192", "resume=true"]) == 0
    stats = json.loads((run / "labels" / "stats.json").read_text())
    assert stats["queries"] == 60 and stats["extra"]["updates"] == 3  # counters carried over


@pytest.mark.slow
def test_train_job_with_the_vlm_labeler_pays_each_label_once(tmp_path, capsys, monkeypatch):
    """cloth_fold_rlvlmf against the local stub endpoint; the same run repeated makes zero endpoint calls."""
    from vlmrl.cli import main

    monkeypatch.setenv("VLMRL_LABEL_CACHE", str(tmp_path / "labels.sqlite"))
    with StubVLMServer() as server:
        common = [
            "cloth_fold_rlvlmf",
            f"labelers.labeler.base_url={server.base_url}",
            "envs.width=64",
            "envs.height=64",
            "envs.max_episode_steps=16",
            "agents.total_timesteps=128",
            "agents.n_envs=2",
            "agents.n_steps=32",
            "agents.batch_size=64",
            "agents.n_epochs=1",
            "agents.checkpoint_every=128",
            "agents.progress_bar=false",
            "labelers.image_size=32",
            "labelers.label_every=64",
            "labelers.queries_per_update=10",
            "labelers.max_epochs=2",
        ]
        assert main(["train", *common, f"run_dir={tmp_path / 'a'}"]) == 0
        first_calls = server.counts["stage1"]
        vlm = json.loads((tmp_path / "a" / "labels" / "stats.json").read_text())
        assert vlm["labeler"] == "vlm:gpt-4o"
        assert (
            vlm["queries"] == 20 and 0 < first_calls <= 20 and vlm["extra"]["endpoint"]["api_calls"] >= 2 * first_calls
        )
        assert main(["train", *common, f"run_dir={tmp_path / 'b'}"]) == 0
        assert server.counts["stage1"] == first_calls  # same seed, same frames: every label from the cache
        again = json.loads((tmp_path / "b" / "labels" / "stats.json").read_text())
        assert again["queries"] == 20 and again["extra"]["endpoint"].get("api_calls", 0) == 0
    capsys.readouterr()


def stub_vlm(server, **kw):
    kw = {"max_workers": 4, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0, **kw}
    return VLMPreferenceLabeler(model="stub-vlm", base_url=server.base_url, **kw)


def test_a_resumed_run_pays_at_most_the_budget(tmp_path):
    """`vlmrl train ... max_queries=50` killed after a checkpoint and resumed used to pay up to 100 pairs."""
    cache = tmp_path / "labels.sqlite"
    rng = np.random.default_rng(0)
    with StubVLMServer() as server:

        def online():
            return small_reward(
                lambda rng: stub_vlm(server, max_queries=50, rng=rng),
                tmp_path / "run",
                label_every=48,
                queries_per_update=30,
                max_epochs=2,
                label_cache=cache,
            )

        reward = online()
        reward.observe_rollout(*toy_rollout(rng), 48)
        reward.save_state(tmp_path / "ckpt")  # the checkpoint: 30 pairs paid
        reward.observe_rollout(*toy_rollout(rng), 96)  # 20 more, then the budget is used up; killed here
        assert server.counts["stage1"] == 50

        resumed = online()
        resumed.load_state(tmp_path / "ckpt")
        for step in (96, 144, 192):
            resumed.observe_rollout(*toy_rollout(rng), step)
        assert server.counts["stage1"] == 50  # nothing paid after the resume: the budget was spent before it
        resumed.close()
        stats = json.loads((tmp_path / "run" / "labels" / "stats.json").read_text())
        assert stats["spend_total"]["queries"] == 50 and stats["spend_total"]["max_queries"] == 50


def test_an_endpoint_that_answers_only_garbage_stops_the_run(tmp_path):
    """Unparseable answers are failures, not labels: no valid label to train on is one clear error."""
    with StubVLMServer(failures={"malformed": 1.0}) as server:
        reward = small_reward(
            lambda rng: stub_vlm(server, rng=rng, parse_retries=0),
            tmp_path,
            queries_per_update=12,
            label_cache=tmp_path / "c.sqlite",
        )
        with pytest.raises(ValueError, match="valid labels") as err:
            reward.observe_rollout(*toy_rollout(np.random.default_rng(0)), 48)
        assert "on_few_labels=warn" in str(err.value) and "\n" not in str(err.value)
        assert len(reward.labeler.cache) == 0  # nothing cached: a later run asks again
        reward.close()


def test_too_few_labels_continue_with_a_warning_when_configured(tmp_path, caplog):
    with StubVLMServer(failures={"malformed": 1.0}) as server:
        reward = small_reward(
            lambda rng: stub_vlm(server, rng=rng, parse_retries=0),
            tmp_path,
            queries_per_update=12,
            on_few_labels="warn",
        )
        assert not reward.observe_rollout(*toy_rollout(np.random.default_rng(0)), 48)  # nothing to retrain on
        reward.close()
    stats = json.loads((tmp_path / "labels" / "stats.json").read_text())
    assert stats["failures"] == 12 and stats["valid"] == 0 and stats["paid"] == 12
    assert len(stats["warnings"]) == 1 and "valid labels" in stats["warnings"][0]
    assert any("valid labels" in r.message for r in caplog.records if r.levelname == "WARNING")
    from vlmrl.report.run_report import write_report
    from vlmrl.runs import RunFolder

    RunFolder(tmp_path).log_metrics(48, 0.0, 0.0, 0)
    assert "too few valid labels" in write_report(tmp_path).read_text()  # and in the run report
    with pytest.raises(ValueError, match="on_few_labels"):
        OnlinePreferenceReward(SimulatedTeacher(), on_few_labels="ignore")


def test_rlvlmf_config_carries_the_spend_and_swap_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("VLMRL_LABEL_CACHE", str(tmp_path / "c.sqlite"))
    overrides = [
        "labelers.labeler.swap_consistency=true",
        "labelers.labeler.max_spend=5",
        "labelers.on_few_labels=warn",
    ]
    cfg = compose("train", ["labelers=rlvlmf", "device=cpu", *overrides]).labelers
    reward = instantiate(cfg, run_dir=tmp_path, rng=np.random.default_rng(0))
    vlm = reward.labeler.labeler
    assert vlm.swap_consistency and vlm.max_spend == 5.0 and vlm.prices["gpt-4o"] == (2.5, 10.0)
    assert reward.labeler.budget_key == "vlm:gpt-4o" and reward.trainer.on_few_labels == "warn"
    assert reward.stats().spend_total["durable"] and not reward.labeler.exhausted
    reward.close()
