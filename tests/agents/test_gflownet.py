import json

import numpy as np
import pytest
import torch

from vlmrl.agents.base import RolloutContext, TrainContext
from vlmrl.agents.gflownet import GFlowNetAgent, Trajectory, random_policy, trajectory_balance_loss
from vlmrl.encoders import HashingEncoder
from vlmrl.envs.text_games import NumberLineEnv
from vlmrl.report.video import RolloutVideos
from vlmrl.rewards.base import RewardModel
from vlmrl.runs import RunFolder, latest_checkpoint


def test_tb_loss_matches_hand_computation():
    log_z = torch.tensor([1.0, 0.5])
    sum_log_pf = torch.tensor([-2.0, -1.0])
    log_reward = torch.tensor([3.0, 0.0])
    # (1 - 2 - 3)^2 = 16, (0.5 - 1 - 0)^2 = 0.25 -> mean 8.125
    assert trajectory_balance_loss(log_z, sum_log_pf, log_reward).item() == pytest.approx(8.125)
    # with log P_B: (-4 + 1)^2 = 9, (-0.5 - 0)^2 = 0.25 -> 4.625
    pb = torch.tensor([-1.0, 0.0])
    assert trajectory_balance_loss(log_z, sum_log_pf, log_reward, pb).item() == pytest.approx(4.625)


def _agent(**kw):
    agent = GFlowNetAgent(encoder=HashingEncoder(dim=64), hidden=16, video=False, **kw)
    agent.build(np.random.default_rng(0))
    return agent


def test_agent_tb_loss_equals_numpy_recomputation():
    agent = _agent(reward_temperature=0.5, prior_scale=3.0)
    traj = Trajectory(
        observations=["Target: 2\nCurrent: 0", "Target: 2\nCurrent: 1"],
        commands=[["increase", "decrease"], ["increase", "decrease", "wait"]],
        actions=[0, 2],
        env_return=1.0,
    )
    agent.score_rewards([traj])
    assert traj.log_reward == pytest.approx(2.0)  # r / T = 1 / 0.5

    sd = {k: v.detach().numpy().astype(np.float64) for k, v in agent.scorer.state_dict().items()}
    enc = agent.encoder

    def logits(obs, cmds):
        s = enc.encode([obs]).numpy().astype(np.float64)[0]
        out = []
        for a in enc.encode(cmds).numpy().astype(np.float64):
            h = np.maximum(0, sd["score.0.weight"] @ np.concatenate([s, a, s * a]) + sd["score.0.bias"])
            out.append(float((sd["score.2.weight"] @ h + sd["score.2.bias"])[0] + sd["relevance"] * (s @ a)))
        return np.array(out)

    sum_log_pf = 0.0
    for obs, cmds, a in zip(traj.observations, traj.commands, traj.actions, strict=True):
        z = logits(obs, cmds)
        sum_log_pf += z[a] - np.log(np.exp(z).sum())
    e0 = enc.encode([traj.observations[0]]).numpy().astype(np.float64)[0]
    log_z = float((sd["log_z.weight"] @ e0 + sd["log_z.bias"])[0])
    expected = (log_z + sum_log_pf - 2.0) ** 2

    loss = trajectory_balance_loss(
        agent.log_z([traj.observations[0]]), agent.sum_log_pf(traj)[None], torch.tensor([traj.log_reward])
    )
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_update_lowers_tb_loss_on_a_fixed_batch():
    agent = _agent()
    env = NumberLineEnv(max_number=3)
    rng = np.random.default_rng(1)
    batch = [agent.play(env, rng) for _ in range(6)]
    agent.score_rewards(batch)
    first = agent.update(batch)["loss"]
    for _ in range(30):
        last = agent.update(batch)["loss"]
    assert last < 0.2 * first


def test_replay_keeps_best_distinct_trajectories():
    agent = _agent(replay_size=2, reward_temperature=1.0)

    def traj(cmds, r):
        return Trajectory(
            observations=["s"] * len(cmds), commands=[["a", "b"]] * len(cmds), actions=cmds, env_return=r, task="t"
        )

    batch = [traj([0], 1.0), traj([0], 1.0), traj([1], 3.0), traj([0, 1], 2.0), traj([1, 1], 0.0)]
    agent.score_rewards(batch)
    agent.remember(batch)
    assert [t.log_reward for t in agent.replay] == [3.0, 2.0]
    assert len({t.key for t in agent.replay}) == 2


class ReachedJudge(RewardModel):
    """Scores a message 2.0 when it says the target was reached."""

    input_key = "message"

    def __init__(self):
        self.calls = 0

    def predict(self, batch):
        self.calls += 1
        return np.array([2.0 if "reached" in m else 0.0 for m in batch], dtype=np.float32)


def test_reward_model_scores_final_step_in_one_batch():
    agent = _agent(env_reward_coef=0.0, model_reward_coef=1.0, reward_temperature=0.5)
    env = NumberLineEnv(max_number=3)
    rng = np.random.default_rng(0)
    judge = ReachedJudge()
    batch = [agent.play(env, rng, input_key="message") for _ in range(8)]
    agent.score_rewards(batch, judge)
    assert judge.calls == 1
    for t in batch:
        assert t.log_reward == pytest.approx((2.0 if t.won else 0.0) / 0.5)


def _train(agent, env_fn, run_dir, seed, resume=False):
    ctx = TrainContext(env_fn, None, RunFolder(run_dir), np.random.default_rng(seed), resume=resume)
    return agent.train(ctx)


def test_train_writes_run_folder_resumes_and_beats_random(tmp_path):
    env_fn = lambda: NumberLineEnv(max_number=3, max_episode_steps=4)  # noqa: E731
    agent = GFlowNetAgent(
        encoder=HashingEncoder(),
        total_episodes=320,
        eval_episodes=100,
        video=False,
        checkpoint_every=10,
        lr=0.01,
        updates_per_iteration=4,
    )
    result = _train(agent, env_fn, tmp_path, seed=0)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert len(rows) == 40 and rows[-1]["episodes"] == 320
    for key in ("step", "time", "env_reward_mean", "ep_env_return_mean", "episodes", "loss", "log_z"):
        assert key in rows[-1]
    assert not (tmp_path / "result.json").exists()  # the train job writes it from the returned summary
    assert latest_checkpoint(tmp_path).name == f"step_{result['steps']}.pt"

    env, rng = env_fn(), np.random.default_rng(5)
    random_rate = np.mean([agent.play(env, rng, policy=random_policy(rng)).won for _ in range(300)])
    assert result["eval_success_rate"] > random_rate + 0.12, (result, random_rate)
    assert result["eval_distinct_successes_per_task"] >= 1.0

    ctx = RolloutContext(
        RunFolder(tmp_path), latest_checkpoint(tmp_path), env_fn, None, RolloutVideos(env_fn), tmp_path / "roll.mp4", 2
    )
    video = GFlowNetAgent(encoder=HashingEncoder()).rollout(ctx)
    assert video.stat().st_size > 1000

    more = GFlowNetAgent(encoder=HashingEncoder(), total_episodes=336, eval_episodes=5, video=False, lr=0.01)
    resumed = _train(more, env_fn, tmp_path, seed=1, resume=True)
    assert resumed["episodes"] == 336  # continued from 320, not from zero
    assert len(open(tmp_path / "metrics.jsonl").readlines()) == 42


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="epsilon"):
        GFlowNetAgent(encoder=HashingEncoder(), epsilon=2.0)
    with pytest.raises(ValueError, match="temperature"):
        GFlowNetAgent(encoder=HashingEncoder(), reward_temperature=0.0)
    agent = _agent()
    with pytest.raises(ValueError, match="no admissible commands"):
        agent.act("s", [], np.random.default_rng(0))


@pytest.mark.slow  # loading sentence-transformers takes 10-40 s on a busy 2-core machine
def test_default_encoder_from_config_is_the_shipped_minilm():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from vlmrl.cli import CONF_DIR

    cfg = OmegaConf.load(CONF_DIR / "agents" / "gflownet.yaml")
    cfg.encoder.device = "cpu"
    encoder = instantiate(cfg.encoder)
    x = encoder.encode(["go to fridge 1", "open the fridge", "Target: 3"]).numpy()
    assert x.shape == (3, 384) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    sims = x @ x.T
    assert sims[0, 1] > 0.5 > sims[0, 2]  # related commands are closer than unrelated text


def test_train_job_then_rollout_of_the_run_folder_writes_an_mp4(tmp_path, capsys):
    import imageio.v2 as imageio

    from vlmrl.cli import main

    run = tmp_path / "run"
    hashing = ["agents.encoder._target_=vlmrl.encoders.HashingEncoder", "~agents.encoder.model_name"]
    small = ["agents.total_episodes=16", "agents.eval_episodes=2", "agents.checkpoint_every=1", "envs.max_number=3"]
    assert main(["train", "numberline_gflownet", f"run_dir={run}", *hashing, "~agents.encoder.device", *small]) == 0
    result = json.loads((run / "result.json").read_text())  # written by the job, not the agent
    assert result["run_dir"] == str(run) and result["episodes"] == 16
    assert (run / "videos" / "final.mp4").exists()
    capsys.readouterr()

    assert main(["rollout", f"checkpoint={run}", "episodes=2", f"out={tmp_path / 'r.mp4'}"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == str(run / "checkpoints" / f"step_{result['steps']}.pt")
    frames = imageio.mimread(tmp_path / "r.mp4")
    assert len(frames) >= 2 * 2  # each episode: its reset screen and at least one step
