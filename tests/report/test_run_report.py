"""The static run report: sections, numbers, embedded or linked videos, partial and bad run folders."""

import re
import shutil

import pytest
from run_folders import make_run

from vlmrl.report.run_report import write_report
from vlmrl.runs import LabelStats, RunFolder


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
    assert "first and the last fifth of the rollouts it went from 55 to 115 (model 20.5 to 26.5)" in text
    assert "moved together" in text and "Spearman 1.00 over 8 rollouts)" in text
    assert "1 unreadable line(s)" in text
    assert "labelers.model" in text and "vlmrl-tiny" in text
    assert "reward from CLIPReward (vlmrl-tiny) for [&quot;a humanoid robot kneeling&quot;]" in text
    assert "agents.total_timesteps" in text and "agents.gamma" in text


def test_anti_correlated_rewards_are_called_out(tmp_path):
    run = make_run(tmp_path, anti=True)
    text = write_report(run).read_text()
    assert "opposite directions" in text and "Spearman -1.00" in text


def _label_section(text: str) -> str:
    section = text[text.index('<section id="labels">') :]
    return section[: section.index("</section>")]


def _row(name: str, value: str) -> str:
    return f'<tr><th>{name}</th><td class="num">{value}</td></tr>'


def test_preference_run_shows_labels_accuracy_cache_and_cost(preference_run_dir):
    text = write_report(preference_run_dir).read_text()
    assert '<section id="labels">' in text
    section = _label_section(text)
    assert "vlm:gpt-4o" in section
    assert _row("queries", "40") in section and _row("paid (answers not served from the cache)", "30") in section
    assert _row("cache hit rate", "0.25") in section  # 10 of 40 queries
    assert _row("accuracy vs ground truth", "0.9375") in section  # 30 correct of 32 judged
    assert _row("budget", "100") in section
    assert _row("cost_usd", "0.12") in section  # the labeler's extra, as it is
    assert "<summary>history</summary>" in section and "train_loss" in section
    assert "older version" not in section
    # Label numbers logged per rollout are plotted with the other metrics.
    assert "label_accuracy" in text[text.index('<section id="metrics">') :]


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
    assert RunFolder.open(tmp_path / "humanoid_kneel").path == newest
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
    records, bad = RunFolder(run_dir).read_metrics()
    assert len(records) == 8 and bad == 1
    assert records[-1]["step"] == 2048


def test_old_format_stats_are_shown_as_they_are(run_dir):
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
    section = _label_section(write_report(run_dir).read_text())
    assert "older version" in section  # none of the typed counts: say so rather than guess
    assert _row("labels_known", "12") in section
    assert "<summary>server</summary>" in section and "cache_hit_rate" in section
    assert "<summary>examples</summary>" in section and "You find a hidden passage." in section


def test_label_stats_without_ground_truth_or_budget(run_dir):
    stats = LabelStats(labeler="llm:SmolLM2-135M", queries=50, paid=44, cache_hits=6, valid=40, pending=3)
    RunFolder(run_dir).write_label_stats(stats)
    section = _label_section(write_report(run_dir).read_text())
    assert "llm:SmolLM2-135M" in section and _row("pending", "3") in section
    assert "no label could be judged against a ground truth" in section
    assert '<tr><th>budget</th><td class="">none</td></tr>' in section
    assert "detail (extra)" not in section


def test_unreadable_label_stats_do_not_fail_the_report(run_dir):
    (run_dir / "labels").mkdir()
    (run_dir / "labels" / "stats.json").write_text('{"queries": 4, "pai')
    section = _label_section(write_report(run_dir).read_text())
    assert "labels/stats.json is unreadable" in section
