"""The HTML run report: one static page per run folder that a reader understands without the logs.

``write_report(run_dir)`` reads the run folder (layout in docs/CONTRACTS.md) and writes
``<run_dir>/report.html`` with: a plain-language summary, the learning curves (ground-truth and model
reward together), the rollout videos, for preference runs the labelling statistics, every other logged
metric, the final result and the resolved config.

Videos are embedded as ``data:`` URIs up to ``embed_video_mb`` in total, so the page alone survives being
copied, mailed or attached to an issue; past the budget they are referenced by a path relative to the page,
which survives copying the whole run folder.

Preference runs write ``<run_dir>/labels/stats.json``; the report reads these keys when present::

    {"labels_spent": int,          # answers paid for (endpoint calls)
     "labels_total": int,          # labels used, paid + served from the cache
     "cache_hits": int, "cache_misses": int,   # or "cache_hit_rate": float
     "cost_usd": float, "budget": int,
     "labelers": {"<name>": {"labels": int, "valid": int, "correct": int, "accuracy": float,
                             "cache_hits": int, "cost_usd": float}}}

``accuracy`` is label accuracy against ground-truth preferences (computed as correct / valid if absent).
Any other keys are shown as they are.
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

CONTRACT_KEYS = (
    "step",
    "time",
    "env_reward_mean",
    "model_reward_mean",
    "ep_env_return_mean",
    "ep_model_return_mean",
    "episodes",
)
LABEL_KEY_PATTERN = re.compile(r"label|acc|cache|cost|quer|budget|pref", re.IGNORECASE)
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


def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """The run folder itself, or the newest run inside ``runs/<name>/`` when given the parent.

    Raises:
        FileNotFoundError: when the folder does not exist or holds no run.
    """
    p = Path(run_dir).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"run folder {p} does not exist; pass run_dir=runs/<name>/<timestamp>")
    markers = ("config.yaml", "metrics.jsonl", "result.json", "videos")
    if any((p / m).exists() for m in markers):
        return p
    children = sorted(c for c in p.iterdir() if c.is_dir() and any((c / m).exists() for m in markers))
    if not children:
        raise FileNotFoundError(
            f"{p} holds no run (no config.yaml or metrics.jsonl in it or its subfolders); "
            "pass run_dir=runs/<name>/<timestamp>"
        )
    return children[-1]


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """Records of a metrics.jsonl and the number of unreadable lines (e.g. one cut by a crash)."""
    records, bad = [], 0
    if not path.exists():
        return records, bad
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return {"unreadable": f"{path.name}: {e}"}
    return data if isinstance(data, dict) else {"value": data}


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
        from vlmrl.report.reward_quality import rank_correlations

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


def _first(d: dict, *keys: str):
    """The first of ``keys`` that ``d`` has with a non-None value."""
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def _labeler_rows(labelers) -> list[dict]:
    """One normalized dict per labeler, whichever of the accepted spellings the stats use."""
    if isinstance(labelers, list):
        labelers = {str(d.get("name", i)): d for i, d in enumerate(labelers) if isinstance(d, dict)}
    rows = []
    for name, d in (labelers or {}).items():
        if not isinstance(d, dict):
            continue
        endpoint = d.get("endpoint") if isinstance(d.get("endpoint"), dict) else {}
        labels = _first(d, "labels", "queries")
        valid, correct = d.get("valid"), d.get("correct")
        acc = _first(d, "accuracy", "label_acc")
        denominator = _first(d, "judged", "valid")
        if acc is None and correct is not None and denominator:
            acc = correct / denominator
        hits = _first(d, "cache_hits", "cached")
        if hits is None:
            hits = endpoint.get("cache_hits")
        paid = _first(d, "paid", "api_calls")
        if paid is None:
            paid = endpoint.get("api_calls")
        rows.append(
            {
                "name": name,
                "labels": labels,
                "valid": valid,
                "correct": correct,
                "accuracy": acc,
                "cache_hits": hits,
                "paid": paid,
                "cost_usd": d.get("cost_usd"),
            }
        )
    return rows


def _sum(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r[key], int | float)]
    return sum(vals) if vals else None


def _label_section(stats: dict, records: list[dict]) -> str:
    """Labels spent, accuracy against the ground truth per labeler, cache hit rate and cost."""
    parts = []
    labelers = _labeler_rows(stats.get("labelers"))
    server = stats.get("server") if isinstance(stats.get("server"), dict) else {}
    total = _first(stats, "labels_total") or _sum(labelers, "labels")
    hits = _first(stats, "cache_hits")
    if hits is None:
        hits = _sum(labelers, "cache_hits")
    spent = _first(stats, "labels_spent")
    if spent is None:
        spent = _sum(labelers, "paid")
    if spent is None and total is not None and hits is not None:
        spent = total - hits
    hit_rate = _first(stats, "cache_hit_rate") or server.get("cache_hit_rate")
    if hit_rate is None and hits is not None:
        lookups = hits + stats["cache_misses"] if "cache_misses" in stats else total
        hit_rate = hits / lookups if lookups else None
    cost = _first(stats, "cost_usd")
    if cost is None:
        cost = _sum(labelers, "cost_usd")
    rows: list[tuple[str, object]] = []
    for label, value in (
        ("labels used", total),
        ("labels spent (not served from the cache)", spent),
        ("budget", stats.get("budget")),
        ("cache hits", hits),
        ("cache hit rate", None if hit_rate is None else float(hit_rate)),
    ):
        if value is not None:
            rows.append((label, value))
    rows.append(("cost (USD)", float(cost) if cost is not None else "not recorded"))
    known = {
        "labels_spent",
        "labels_total",
        "budget",
        "cache_hits",
        "cache_misses",
        "cache_hit_rate",
        "cost_usd",
        "labelers",
        "examples",
        "history",
    }
    for k, v in stats.items():
        if k in known:
            continue
        if k == "time" and isinstance(v, int | float) and v > 1e9:
            rows.append(("written", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))))
        elif isinstance(v, dict):  # one level of nesting, e.g. the annotation server's own counters
            rows += [(f"{k}.{k2}", v2) for k2, v2 in v.items() if not isinstance(v2, dict | list)]
        elif not isinstance(v, list) or len(json.dumps(v)) <= 300:
            rows.append((k, v))
    parts.append(H.key_value_table(rows))

    if labelers:
        parts.append(
            H.table(
                [
                    "labeler",
                    "labels",
                    "valid",
                    "correct",
                    "accuracy vs ground truth",
                    "cache hits",
                    "paid calls",
                    "cost (USD)",
                ],
                [
                    [
                        r["name"],
                        *(
                            "" if r[k] is None else r[k]
                            for k in ("labels", "valid", "correct", "accuracy", "cache_hits", "paid", "cost_usd")
                        ),
                    ]
                    for r in labelers
                ],
            )
        )
    scored = [r for r in labelers if isinstance(r["accuracy"], int | float) and math.isfinite(r["accuracy"])]
    if scored:
        svg = plots.bar_svg(
            [r["name"] for r in scored],
            [float(r["accuracy"]) for r in scored],
            "accuracy",
            "Label accuracy vs ground-truth preferences",
            ylim=(0, 1.15),
        )
        parts.append(
            H.plot(
                svg,
                "Fraction of valid labels (unsure answers dropped) that agree with the preference "
                "the ground-truth return implies. 0.5 is chance.",
            )
        )
    history = (
        [h for h in stats.get("history", []) if isinstance(h, dict)] if isinstance(stats.get("history"), list) else []
    )
    if history:
        keys = [k for k in _numeric_keys(history) if re.search(r"acc|loss|pairs|spearman|cost", k)][:8]
        svg = plots.metric_grid_svg(history, keys, "Per reward-model update (labels/stats.json history)")
        if svg:
            parts.append(H.plot(svg))
    keys = [k for k in _numeric_keys(records) if LABEL_KEY_PATTERN.search(k)]
    svg = plots.metric_grid_svg(records, keys, "Labelling over training (metrics.jsonl)")
    if svg:
        parts.append(H.plot(svg))
    examples = stats.get("examples")
    if isinstance(examples, dict) and examples:
        parts.append(
            "<details><summary>example labels</summary>"
            + H.table(["observation", "label"], list(examples.items())[:30])
            + "</details>"
        )
    return "".join(parts)


def _numeric_keys(records: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in CONTRACT_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def write_report(
    run_dir: str | os.PathLike,
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
    run = resolve_run_dir(run_dir)
    out_path = Path(out) if out is not None else run / "report.html"
    records, bad = read_metrics(run / "metrics.jsonl")
    result = _read_json(run / "result.json")
    stats = _read_json(run / "labels" / "stats.json")

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
        body.append(H.section("labels", "Preference labels", _label_section(stats, records)))
    other = [k for k in _numeric_keys(records) if not (stats is not None and LABEL_KEY_PATTERN.search(k))]
    svg = plots.metric_grid_svg(records, other)
    if svg:
        body.append(H.section("metrics", "Other logged metrics", H.plot(svg)))
    if result:
        body.append(H.section("result", "Final result (result.json)", H.key_value_table(sorted(result.items()))))
    body.append(H.section("config", "Configuration", _config_section(run)))
    return H.write_atomic(out_path, H.page(f"vlmrl run report: {name}", "\n".join(body)))
