"""Matplotlib figures for the reports, returned as inline SVG text or PNG bytes (no files, no display).

Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot, so no GUI backend is touched and
nothing global is left behind between figures.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

GROUND_TRUTH_COLOR = "#1f77b4"
MODEL_COLOR = "#d62728"


def figure_to_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element for inlining in HTML (text drawn as paths: no font needed)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg") :], flags=re.DOTALL)


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _series(records: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` over the records that carry a finite number for it."""
    xs, ys = [], []
    for i, rec in enumerate(records):
        v = rec.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            continue
        step = rec.get("step", i)
        xs.append(step if isinstance(step, int | float) else i)
        ys.append(float(v))
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _twin_panel(ax, records, truth_key, model_key, truth_label, model_label, title) -> bool:
    xt, yt = _series(records, truth_key)
    xm, ym = _series(records, model_key)
    if xt.size == 0 and xm.size == 0:
        return False
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("environment steps")
    if xt.size:
        ax.plot(xt, yt, color=GROUND_TRUTH_COLOR, marker="o", ms=3, lw=1.8, label=truth_label)
    ax.set_ylabel(truth_label, color=GROUND_TRUTH_COLOR)
    ax.tick_params(axis="y", colors=GROUND_TRUTH_COLOR)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
    if xm.size:
        ax2 = ax.twinx()
        ax2.plot(xm, ym, color=MODEL_COLOR, marker="s", ms=3, lw=1.8, ls="--", label=model_label)
        ax2.set_ylabel(model_label, color=MODEL_COLOR)
        ax2.tick_params(axis="y", colors=MODEL_COLOR)
        ax2.ticklabel_format(axis="y", useOffset=False)  # tiny changes read as values, not "+7.09e1"
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8, framealpha=0.8)
    return True


def learning_curves_svg(records: Sequence[dict]) -> str | None:
    """Ground-truth and model reward over training, on twin y-axes (their scales differ by design).

    Left panel: mean episode returns; right panel: mean per-step reward of each rollout. ``None`` when
    the records carry none of the four contract keys.
    """
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 2)
    ok1 = _twin_panel(
        axes[0],
        records,
        "ep_env_return_mean",
        "ep_model_return_mean",
        "ground-truth episode return",
        "model episode return",
        "Episode return",
    )
    ok2 = _twin_panel(
        axes[1],
        records,
        "env_reward_mean",
        "model_reward_mean",
        "ground-truth reward / step",
        "model reward / step",
        "Per-step reward (rollout mean)",
    )
    if not (ok1 or ok2):
        return None
    for ax, ok in zip(axes, (ok1, ok2), strict=True):
        if not ok:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return figure_to_svg(fig)


def metric_grid_svg(records: Sequence[dict], keys: Sequence[str], title: str = "") -> str | None:
    """Small multiples, one line plot per metric key over environment steps; ``None`` if no key has data."""
    data = [(k, *_series(records, k)) for k in keys]
    data = [(k, x, y) for k, x, y in data if y.size]
    if not data:
        return None
    cols = min(4, len(data))
    rows = math.ceil(len(data) / cols)
    fig = Figure(figsize=(2.9 * cols, 2.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax, (k, x, y) in zip(axes, data, strict=False):
        ax.plot(x, y, color="#444444", marker="o", ms=2.5, lw=1.3)
        ax.set_title(k, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(data) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return figure_to_svg(fig)


def scatter_svg(model: np.ndarray, truth: np.ndarray, episode_ids: np.ndarray | None = None) -> str:
    """Model reward against ground-truth reward, one dot per transition, coloured by episode."""
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.subplots()
    c = None if episode_ids is None else np.unique(np.asarray(episode_ids), return_inverse=True)[1]
    ax.scatter(truth, model, c=c, s=9, alpha=0.6, cmap="viridis" if c is not None else None)
    ax.set_xlabel("ground-truth reward")
    ax.set_ylabel("model reward")
    ax.set_title("Every scored transition", fontsize=11)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_svg(fig)


def bar_svg(names: Sequence[str], values: Sequence[float], ylabel: str, title: str, ylim=None) -> str:
    """One bar per name (used for label accuracy per labeler)."""
    fig = Figure(figsize=(max(3.5, 1.2 * len(names) + 1.5), 3.0))
    ax = fig.subplots()
    ax.bar(range(len(names)), values, color="#6a8caf")
    ax.set_xticks(range(len(names)), [str(n) for n in names], rotation=15, fontsize=8)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_to_svg(fig)


def extremes_png(
    items: Sequence[np.ndarray | str],
    top: Sequence[int],
    bottom: Sequence[int],
    model: np.ndarray,
    truth: np.ndarray,
    title: str = "",
    where: Sequence[str] | None = None,
) -> bytes:
    """Highest- and lowest-scored observations side by side, each captioned with both rewards.

    Args:
        items: per transition, a ``uint8 (H, W, 3)`` frame or a text message.
        top: indices of the highest model scores (shown in the top row, best first).
        bottom: indices of the lowest model scores (bottom row, worst first).
        model: model reward per transition.
        truth: ground-truth reward per transition.
        title: figure title.
        where: optional per-transition provenance shown under each caption (e.g. "ep 1, t 7").
    """
    k = max(len(top), len(bottom), 1)
    is_text = isinstance(items[0], str)
    fig = Figure(figsize=(2.3 * k, 6.4 if not is_text else 4.6))
    axes = np.atleast_2d(fig.subplots(2, k, squeeze=False))
    for row, (idx, label) in enumerate(((top, "highest model reward"), (bottom, "lowest model reward"))):
        for col in range(k):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(idx):
                ax.set_axis_off()
                continue
            i = int(idx[col])
            if is_text:
                ax.text(0.03, 0.95, _wrap(items[i], 24), va="top", ha="left", fontsize=7, transform=ax.transAxes)
            else:
                ax.imshow(items[i])
            loc = f"\n{where[i]}" if where is not None else ""
            ax.set_title(f"model {model[i]:.4g}\ntrue {truth[i]:.4g}{loc}", fontsize=8)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(h_pad=2.0)
    return figure_to_png(fig)


def _wrap(text: str, width: int, max_lines: int = 9) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + ["..."]
    return "\n".join(lines)
