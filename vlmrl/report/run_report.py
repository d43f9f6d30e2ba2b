"""The HTML run report: one static page per run folder that a reader understands without the logs.

``write_report(run_dir)`` reads the run folder through :class:`~vlmrl.runs.RunFolder` (layout in
docs/CONTRACTS.md) and writes ``<run_dir>/report.html`` with: a plain-language summary, the learning curves
(ground-truth and model reward together), the rollout videos, for labelled runs the label statistics, every
other logged metric, the final result and the resolved config.

Videos are embedded as ``data:`` URIs up to ``embed_video_mb`` in total, so the page alone survives being
copied, mailed or attached to an issue; past the budget they are referenced by a path relative to the page,
which survives copying the whole run folder.

Labelled runs write ``<run_dir>/labels/stats.json``, a :class:`~vlmrl.runs.LabelStats` record: its typed
counts (queries, paid, cache hits, valid, judged, correct, accuracy, failures, budget, pending) are shown in a
table and its ``extra`` as it is.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from vlmrl.report import html as H
from vlmrl.report import plots
from vlmrl.runs import CONTRACT_KEYS, LabelStats, RunFolder, write_text

AGENT_KEYS = (
    "_target_",
    "total_timesteps",
    "n_envs",
    "n_steps",
    "gamma",
    "learning_rate",
    "env_reward_coef",
    "model_reward_coef",
    "episodes_per_iteration",
)
_STEP_VIDEO = re.compile(r"step_(\d+)\.mp4$")


def _read_result(run: RunFolder) -> dict | None:
    """``result.json``; a file that does not parse is reported, not raised."""
    try:
        result = run.read_result()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return {"unreadable": f"result.json: {e}"}
    return result if isinstance(result, dict) or result is None else {"value": result}


def _read_label_stats(run: RunFolder) -> LabelStats | str | None:
    """The run's label statistics, None without a ``labels/stats.json``, or why the file is unreadable."""
    try:
        return run.read_label_stats()
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError) as e:
        return f"labels/stats.json is unreadable ({e})"


def _num(rec: dict, key: str) -> float | None:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _values(records: list[dict], key: str) -> list[float]:
    return [v for v in (_num(r, key) for r in records) if v is not None]


def _task_sentence(cfg: dict | None) -> str:
    """'Task: ..., reward from ...' read from the run's config, so the page says what was optimized."""
    if not isinstance(cfg, dict):
        return ""
    parts = []
    lab = cfg.get("labelers") if isinstance(cfg.get("labelers"), dict) else {}
    env = cfg.get("envs") if isinstance(cfg.get("envs"), dict) else {}
    if env.get("_target_"):
        parts.append(f"Environment {str(env['_target_']).rsplit('.', 1)[-1]}")
    if lab.get("_target_"):
        what = str(lab["_target_"]).rsplit(".", 1)[-1]
        if lab.get("model"):
            what += f" ({lab['model']})"
        goal = lab.get("goal_prompts") or lab.get("goal") or lab.get("task")
        if goal:
            what += f" for {json.dumps(goal)}"
        if lab.get("baseline_prompts"):
            what += f" against baseline {json.dumps(lab['baseline_prompts'])}"
        if "alpha" in lab:
            what += f", alpha {lab['alpha']}"
        parts.append(f"reward from {what}")
    else:
        parts.append("trained on the environment's own reward")
    return "; ".join(parts) + ". " if parts else ""


def _load_config(run_dir: Path) -> dict | None:
    path = run_dir / "config.yaml"
    if not path.exists():
        return None
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.create(path.read_text(encoding="utf-8")), resolve=False)
    except Exception:  # noqa: BLE001 - an unparseable config is reported in the config section
        return None
    return cfg if isinstance(cfg, dict) else None


def _summary(records: list[dict], result: dict | None, bad_lines: int, cfg: dict | None = None) -> str:
    """A few sentences saying what happened in the run, with the numbers a reader asks first."""
    task = _task_sentence(cfg)
    if not records:
        text = (
            "No training metrics in this folder (metrics.jsonl is missing or empty): a run that has not finished "
            "its first rollout, or a job that does not train, such as relabel."
        )
        if result:
            text += " Its final result is shown below."
        return f'<div class="summary"><p>{H.esc(task + text)}</p></div>'
    sentences = [task.strip()] if task else []
    steps = _num(records[-1], "step")
    times = _values(records, "time")
    if steps is not None:
        dur = ""
        if times:
            seconds = times[-1] - times[0] if times[0] > 1e9 else times[-1]
            dur = f" over {seconds / 60:.1f} minutes of logged time" if seconds > 0 else ""
        sentences.append(f"Trained for {int(steps):,} environment steps in {len(records)} logged rollouts{dur}.")
    gt, mo = _values(records, "ep_env_return_mean"), _values(records, "ep_model_return_mean")
    if not gt:
        gt, mo = _values(records, "env_reward_mean"), _values(records, "model_reward_mean")
        what = "per-step reward"
    else:
        what = "episode return"
    if gt:
        sentences.append(
            f"Ground-truth {what}: {gt[0]:.4g} in the first rollout, {gt[-1]:.4g} in the last "
            f"(best {max(gt):.4g}, change {gt[-1] - gt[0]:+.4g})."
        )
    if len(gt) >= 5:  # one rollout's mean is noisy where returns vary a lot (NetHack): compare fifths too
        k = round(len(gt) / 5)  # >= 1
        sentences.append(
            f"Averaged over the first and the last fifth of the rollouts it went from {np.mean(gt[:k]):.4g} "
            f"to {np.mean(gt[-k:]):.4g}"
            + (f" (model {np.mean(mo[:k]):.4g} to {np.mean(mo[-k:]):.4g})." if len(mo) == len(gt) else ".")
        )
    if mo:
        change = mo[-1] - mo[0]
        flat = " -- it barely moved (under 1%)" if abs(change) < 0.01 * max(abs(mo[0]), 1e-12) else ""
        sentences.append(f"Model {what}: {mo[0]:.4g} first, {mo[-1]:.4g} last (change {change:+.4g}){flat}.")
    paired = [
        (a, b)
        for a, b in ((_num(r, "ep_env_return_mean"), _num(r, "ep_model_return_mean")) for r in records)
        if a is not None and b is not None
    ] or [
        (a, b)
        for a, b in ((_num(r, "env_reward_mean"), _num(r, "model_reward_mean")) for r in records)
        if a is not None and b is not None
    ]
    if len(paired) >= 3:
        from vlmrl.rewards.quality import rank_correlations

        rho = rank_correlations(*np.asarray(paired).T[::-1])["spearman"]
        if math.isfinite(rho):
            if rho >= 0.5:
                verdict = "moved together"
            elif rho <= -0.5:
                verdict = (
                    "moved in opposite directions: the policy may be exploiting the model reward (check the videos)"
                )
            else:
                verdict = "were largely unrelated over training"
            weak = "; with this few rollouts that is weak evidence" if len(paired) < 6 else ""
            sentences.append(
                f"Across rollouts the model and ground-truth rewards {verdict} "
                f"(Spearman {rho:.2f} over {len(paired)} rollouts{weak})."
            )
    if bad_lines:
        sentences.append(f"{bad_lines} unreadable line(s) in metrics.jsonl were skipped (a crash mid-write?).")
    rows = [("rollouts logged", len(records))]
    if steps is not None:
        rows.append(("environment steps", int(steps)))
    for key in ("ep_env_return_mean", "ep_model_return_mean", "env_reward_mean", "model_reward_mean"):
        v = _num(records[-1], key)
        if v is not None:
            rows.append((f"last {key}", v))
    return f'<div class="summary"><p>{H.esc(" ".join(sentences))}</p></div>{H.key_value_table(rows)}'


def _config_section(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    if not path.exists():
        return '<p class="warn">No config.yaml in this run folder.</p>'
    text = path.read_text(encoding="utf-8", errors="replace")
    setup = ""
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except Exception as e:  # a config that does not parse is still shown as text
        cfg = None
        setup = f'<p class="warn">config.yaml does not parse ({H.esc(e)}); shown as text.</p>'
    if isinstance(cfg, dict):
        rows = [(k, cfg[k]) for k in ("name", "seed", "device") if k in cfg and not isinstance(cfg[k], dict)]
        for group in ("envs", "agents", "labelers"):
            sub = cfg.get(group)
            if isinstance(sub, dict):
                for k, v in sub.items():
                    if group == "agents" and k not in AGENT_KEYS:
                        continue  # the rest is in the full config below
                    short = isinstance(v, str | int | float | bool) or (
                        isinstance(v, list) and len(json.dumps(v)) <= 300
                    )
                    if short and v is not None:
                        rows.append((f"{group}.{k}", v))
        setup = H.key_value_table(rows)
    return f"{setup}<details><summary>full config.yaml</summary><pre>{H.esc(text)}</pre></details>"


def _list_videos(run_dir: Path, max_videos: int) -> list[Path]:
    """final.mp4 first, then up to ``max_videos - 1`` step videos spread over training, then others."""
    vdir = run_dir / "videos"
    if not vdir.is_dir():
        return []
    all_mp4 = sorted(vdir.glob("*.mp4"))
    final = [p for p in all_mp4 if p.name == "final.mp4"]
    steps = sorted((p for p in all_mp4 if _STEP_VIDEO.search(p.name)), key=lambda p: int(_STEP_VIDEO.search(p.name)[1]))
    others = [p for p in all_mp4 if p not in final and p not in steps]
    room = max(0, max_videos - len(final))
    if len(steps) > room:
        pick = np.unique(np.linspace(0, len(steps) - 1, room).round().astype(int)) if room else []
        steps = [steps[i] for i in pick]
    chosen = final + steps
    return chosen + others[: max(0, max_videos - len(chosen))]


def _videos_section(run_dir: Path, out_dir: Path, max_videos: int, embed_video_mb: float) -> str:
    vids = _list_videos(run_dir, max_videos)
    if not vids:
        return (
            '<p class="warn">No rollout videos in videos/ (text envs have none; image runs write them at the end).</p>'
        )
    budget = embed_video_mb * 2**20
    parts = []
    for p in vids:
        size = p.stat().st_size
        m = _STEP_VIDEO.search(p.name)
        label = "final policy" if p.name == "final.mp4" else (f"after {int(m[1]):,} steps" if m else p.stem)
        if size <= budget:
            budget -= size
            src, how = H.data_uri(p.read_bytes(), "video/mp4"), "embedded"
        else:
            src, how = Path(os.path.relpath(p, out_dir)).as_posix(), "linked"
        parts.append(H.video(src, f"{label} ({p.name}, {size / 1024:.0f} KiB, {how})"))
    cap = (
        "Rollouts of the policy; the curve under the frames is the per-step reward. "
        "Embedded videos play from this file alone; linked ones need the run folder next to it."
    )
    return f'<div class="videos">{"".join(parts)}</div><p class="caption">{H.esc(cap)}</p>'


def _label_section(stats: LabelStats | str) -> str:
    """The typed label counts (what was paid, what the cache saved, agreement with the ground truth), then
    the labeler's own ``extra`` detail as it is.
    """  # noqa: D205
    if isinstance(stats, str):
        return f'<p class="warn">{H.esc(stats)}</p>'
    parts = []
    if stats == LabelStats(extra=stats.extra):
        parts.append(
            '<p class="warn">labels/stats.json holds none of the label counts (written by an older version?); '
            "its contents are shown as they are.</p>"
        )
    judged = stats.judged if isinstance(stats.judged, int | float) else 0
    accuracy = stats.accuracy if judged else "no label could be judged against a ground truth"
    rows: list[tuple[str, object]] = [
        ("labeler", stats.labeler or "not recorded"),
        ("queries", stats.queries),
        ("paid (answers not served from the cache)", stats.paid),
        ("cache hits", stats.cache_hits),
    ]
    if isinstance(stats.queries, int | float) and stats.queries and isinstance(stats.cache_hits, int | float):
        rows.append(("cache hit rate", stats.cache_hits / stats.queries))
    rows += [
        ("valid", stats.valid),
        ("ties (equally good: trained as 0.5)", stats.ties),
        ("judged", stats.judged),
        ("correct", stats.correct),
        ("accuracy vs ground truth", accuracy),
        ("failures", stats.failures),
        ("budget", "none" if stats.budget is None else stats.budget),
        ("pending", stats.pending),
    ]
    if stats.inconsistent:
        rows.append(("inconsistent under swapped order (dropped)", stats.inconsistent))
    if isinstance(stats.cost_usd, int | float) and (stats.prompt_tokens or stats.completion_tokens or stats.cost_usd):
        rows += [
            ("prompt / completion tokens (this run)", f"{stats.prompt_tokens} / {stats.completion_tokens}"),
            ("spend, USD (this run)", round(float(stats.cost_usd), 6)),
        ]
    if isinstance(stats.spend_total, dict) and stats.spend_total:
        total = stats.spend_total
        rows.append(
            (
                f"recorded under budget key {total.get('budget_key')} (all runs on the cache)",
                f"{total.get('queries')} queries of max {total.get('max_queries')},"
                f" {total.get('cost_usd', 0.0):.6f} USD of max {total.get('max_spend')}",
            )
        )
    parts += [f'<p class="warn">{H.esc(str(w))}</p>' for w in stats.warnings if isinstance(stats.warnings, list)]
    parts.append(H.key_value_table(rows))
    if stats.extra:
        flat = [(k, v) for k, v in stats.extra.items() if not isinstance(v, dict | list)]
        nested = [(k, v) for k, v in stats.extra.items() if isinstance(v, dict | list)]
        parts.append(f"<h3>{H.esc(stats.labeler or 'labeler')} detail (extra)</h3>")
        if flat:
            parts.append(H.key_value_table(flat))
        parts += [
            f"<details><summary>{H.esc(k)}</summary><pre>{H.esc(json.dumps(v, indent=1, default=str))}</pre></details>"
            for k, v in nested
        ]
    return "".join(parts)


def _numeric_keys(records: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in CONTRACT_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def write_report(
    run_dir: str | os.PathLike | RunFolder,
    out: str | os.PathLike | None = None,
    max_videos: int = 6,
    embed_video_mb: float = 50.0,
) -> Path:
    """Write the static HTML report of a run folder.

    Args:
        run_dir: the run folder (``runs/<name>/<timestamp>``), or ``runs/<name>`` for its newest run.
        out: where to write the page; default ``<run_dir>/report.html``.
        max_videos: most videos to show (final.mp4 plus step videos spread over training).
        embed_video_mb: total video size embedded in the page; larger videos are linked by relative path.

    Returns:
        Path of the written page.
    """
    folder = RunFolder.open(run_dir)
    run = folder.path
    out_path = Path(out) if out is not None else run / "report.html"
    records, bad = folder.read_metrics()
    result = _read_result(folder)
    stats = _read_label_stats(folder)

    name = run.parent.name if re.fullmatch(r"\d{8}-\d{6}", run.name) else run.name
    body = [
        f"<h1>Run report: {H.esc(name)}</h1>",
        f'<p class="meta">run folder <code>{H.esc(run.resolve())}</code> &middot; report written '
        f"{H.esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>",
        H.section("summary", "Summary", _summary(records, result, bad, _load_config(run))),
    ]
    curves = plots.learning_curves_svg(records) if records else None
    body.append(
        H.section(
            "curves",
            "Learning curves",
            H.plot(
                curves,
                "Blue (solid, left axis): the environment's own reward, logged as ground truth (for tasks given only "
                "by a prompt, such as humanoid poses, it is the env's default reward, not a score of the pose). "
                "Red (dashed, right axis): the learned or zero-shot reward the agent optimized. "
                "The axes differ "
                "in scale on purpose; what matters is whether the two rise together.",
            )
            if curves
            else '<p class="warn">No learning curves: metrics.jsonl has no reward columns yet.</p>',
        )
    )
    body.append(
        H.section("videos", "Rollout videos", _videos_section(run, out_path.parent, max_videos, embed_video_mb))
    )
    if stats is not None:
        body.append(H.section("labels", "Labels (labels/stats.json)", _label_section(stats)))
    svg = plots.metric_grid_svg(records, _numeric_keys(records))
    if svg:
        body.append(H.section("metrics", "Other logged metrics", H.plot(svg)))
    if result:
        body.append(H.section("result", "Final result (result.json)", H.key_value_table(sorted(result.items()))))
    body.append(H.section("config", "Configuration", _config_section(run)))
    return write_text(out_path, H.page(f"vlmrl run report: {name}", "\n".join(body)))
