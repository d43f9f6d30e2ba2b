"""`vlmrl evaluate-reward` through the CLI: the tiny random CLIP model scoring humanoid frames."""

import json

import pytest

from vlmrl import cli

pytest.importorskip("open_clip")

TINY_CLIP_HUMANOID = ["experiments=humanoid_kneel", "labelers.model=vlmrl-tiny", "envs.width=64", "envs.height=64"]


def test_evaluate_reward_job_on_humanoid_with_tiny_clip(tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli.main(
        [
            "evaluate-reward",
            *TINY_CLIP_HUMANOID,
            "episodes=2",
            "max_steps=12",
            "top_k=3",
            f"out={out}",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "reward_eval.json").read_text())
    assert printed["transitions"] == saved["transitions"] == 24
    for key in ("spearman", "kendall", "epic"):
        assert -1.0 <= saved[key] <= 1.0
    assert 0.0 <= saved["epic"] <= 1.0 and saved["reward"] == "CLIPReward"
    assert saved["setup"]["labelers.model"] == "vlmrl-tiny"
    assert len(saved["top"]) == len(saved["bottom"]) == 3
    for name in ("reward_eval.html", "extremes.png", "scores.npz", "config.yaml"):
        assert (out / name).exists()


def test_evaluate_reward_without_a_reward_model_names_the_fix(tmp_path, capsys):
    code = cli.main(
        [
            "evaluate-reward",
            "labelers=none",
            "envs.width=64",
            "envs.height=64",
            "episodes=1",
            "max_steps=2",
            f"out={tmp_path}",
        ]
    )
    assert code != 0
    assert "labelers=clip" in capsys.readouterr().err


def test_variants_are_scored_on_the_same_rollouts(tmp_path, capsys):
    import numpy as np

    out = tmp_path / "cmp"
    code = cli.main(
        [
            "evaluate-reward",
            *TINY_CLIP_HUMANOID,
            "episodes=1",
            "max_steps=10",
            "variants=[{alpha:0.0},{alpha:1.0}]",
            f"out={out}",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["variants"]) == {"alpha=0.0", "alpha=1.0"}
    a, b = (np.load(out / f"variant_{i}" / "scores.npz") for i in (0, 1))
    np.testing.assert_array_equal(a["ground_truth"], b["ground_truth"])  # one rollout, two scorings
    assert not np.allclose(a["model_reward"], b["model_reward"])  # the projection changes the reward
    ranking = json.loads((out / "comparison.json").read_text())
    assert list(ranking) == sorted(ranking, key=lambda n: -ranking[n]["spearman"])
    assert (out / "comparison.html").exists() and "variant_0/reward_eval.html" in (out / "comparison.html").read_text()


def test_variant_with_an_unknown_key_names_the_fix(tmp_path, capsys):
    code = cli.main(
        [
            "evaluate-reward",
            "experiments=humanoid_kneel",
            "labelers.model=vlmrl-tiny",
            "episodes=1",
            "max_steps=2",
            "variants=[{alpah:0.0}]",
            f"out={tmp_path}",
        ]
    )
    assert code != 0
    assert "does not fit labelers" in capsys.readouterr().err
