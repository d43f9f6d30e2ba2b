"""The static run report: sections, numbers, embedded or linked videos, partial and bad run folders."""

import re
import shutil

import pytest
from run_folders import make_run

from vlmrl.report.run_report import read_metrics, resolve_run_dir, write_report


def test_report_is_one_self_contained_page(run_dir):
    page = write_report(run_dir)
    assert page == run_dir / "report.html"
    text = page.read_text()
    for sid in ("summary", "curves", "videos", "metrics", "result", "config"):
        assert f'<section id="{sid}">' in text
    assert 'id="labels"' not in text  # no labels/stats.json: not a preference run
    # Plots are inline SVG: the learning curves and the "other metrics" grid.
    assert text.count("<svg") >= 2
    # Three videos, final first, all embedded; nothing loaded from outside the page.
    srcs = re.findall(r'<video[^>]*src="([^"]*)"', text)
    assert len(srcs) == 3 and all(s.startswith("data:video/mp4;base64,") for s in srcs)
    assert text.index("final policy") < text.index("after 1,024 steps") < text.index("after 2,048 steps")
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<metadata>" not in text
    # The summary says what happened, with the numbers from metrics.jsonl (the cut last line is skipped).
    assert "Trained for 2,048 environment steps in 8 logged rollouts" in text
    assert "50 in the first rollout, 120 in the last" in text and "change +70" in text
    assert "moved together" in text and "Spearman 1.00 over 8 rollouts)" in text
    assert "1 unreadable line(s)" in text
    assert "labelers.model" in text and "vlmrl-tiny" in text
    assert "reward from CLIPReward (vlmrl-tiny) for [&quot;a humanoid robot kneeling&quot;]" in text
    assert "agents.total_timesteps" in text and "agents.gamma" in text


def test_anti_correlated_rewards_are_called_out(tmp_path):
    run = make_run(tmp_path, anti=True)
    text = write_report(run).read_text()
    assert "opposite directions" in text and "Spearman -1.00" in text


def test_preference_run_shows_labels_accuracy_cache_and_cost(preference_run_dir):
    text = write_report(preference_run_dir).read_text()
    assert '<section id="labels">' in text
    section = text[text.index('<section id="labels">') :]
    section = section[: section.index("</section>")]
    assert "cache hit rate" in section and ">0.25<" in section  # 10 / (10 + 30)
    assert ">0.12<" in section  # cost
    assert ">0.85<" in section  # vlm accuracy = 17 correct of 20 valid
    assert "Label accuracy vs ground-truth preferences" not in section or "<svg" in section
    assert section.count("<svg") >= 2  # accuracy bars + labelling over training (label_accuracy, labels_total)


def test_large_videos_are_linked_relative_and_survive_copying_the_folder(run_dir, tmp_path):
    write_report(run_dir, embed_video_mb=0)
    copy = tmp_path / "copied"
    shutil.copytree(run_dir, copy)
    text = (copy / "report.html").read_text()
    srcs = re.findall(r'<video[^>]*src="([^"]*)"', text)
    assert srcs[0] == "videos/final.mp4"
    assert all((copy / s).exists() for s in srcs)


def test_max_videos_keeps_final_and_spreads_the_rest(tmp_path):
    run = make_run(tmp_path)
    text = write_report(run, max_videos=2).read_text()
    assert text.count("<video") == 2 and "final.mp4" in text


def test_parent_folder_resolves_to_newest_run(tmp_path):
    make_run(tmp_path, stamp="20261130-010000")
    newest = make_run(tmp_path, stamp="20261130-020000")
    assert resolve_run_dir(tmp_path / "humanoid_kneel") == newest
    assert write_report(tmp_path / "humanoid_kneel") == newest / "report.html"


def test_partial_run_still_gets_a_report(tmp_path):
    run = tmp_path / "runs" / "x" / "20261130-000000"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\n")
    text = write_report(run).read_text()
    assert "No training metrics in this folder" in text and "No rollout videos" in text


def test_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass run_dir=runs/<name>/<timestamp>"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no run"):
        write_report(tmp_path / "empty")


def test_read_metrics_counts_cut_lines(run_dir):
    records, bad = read_metrics(run_dir / "metrics.jsonl")
    assert len(records) == 8 and bad == 1
    assert records[-1]["step"] == 2048


def test_annotation_server_stats_are_flattened_and_examples_listed(run_dir):
    import json

    (run_dir / "labels").mkdir()
    (run_dir / "labels" / "stats.json").write_text(
        json.dumps(
            {
                "time": 1.8e9,
                "labels_known": 12,
                "server": {"cache_hit_rate": 0.4, "queue": 3},
                "examples": {"You find a hidden passage.": 1, "It's a wall.": 0},
            }
        )
    )
    text = write_report(run_dir).read_text()
    section = text[text.index('<section id="labels">') :]
    section = section[: section.index("</section>")]
    assert "cache hit rate" in section and ">0.4<" in section and "server.queue" in section
    assert "labels_known" in section and "You find a hidden passage." in section


def test_online_preference_stats_schema(run_dir):
    import json

    (run_dir / "labels").mkdir()
    (run_dir / "labels" / "stats.json").write_text(
        json.dumps(
            {
                "labelers": {
                    "vlm:stub": {
                        "queries": 40,
                        "valid": 36,
                        "correct": 30,
                        "judged": 32,
                        "cached": 8,
                        "label_acc": None,
                        "endpoint": {"api_calls": 25, "cache_hits": 8},
                    }
                },
                "dataset_pairs": 36,
                "updates": 2,
                "history": [
                    {"step": 512, "update": 1, "label_acc": 0.8, "train_loss": 0.6},
                    {"step": 1024, "update": 2, "label_acc": 0.9, "train_loss": 0.4},
                ],
            }
        )
    )
    text = write_report(run_dir).read_text()
    section = text[text.index('<section id="labels">') :]
    section = section[: section.index("</section>")]
    assert ">0.9375<" in section  # accuracy = 30 correct of 32 judged
    assert ">0.2<" in section  # cache hit rate = 8 of 40 labels
    assert 'labels spent (not served from the cache)</th><td class="num">25<' in section
    assert "not recorded" in section  # no cost in these stats
    assert "Per reward-model update" in section and section.count("<svg") >= 2
    assert "dataset_pairs" in section and '"history"' not in section
