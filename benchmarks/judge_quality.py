"""ONI judge quality: balanced accuracy of SmolLM2-135M's yes/no margin on hand-labelled real NetHack messages.

The labelled set (``assets/nethack_messages/labelled.jsonl``) holds messages collected from NLE games by
``scripts/collect_nethack_messages.py`` and labelled by hand with ONI's default criterion (1: the player's
own progress, such as items found or picked up, kills, doors or passages found, levels gained; 0: the
rest). Two configurations run on the same messages (few-shot examples of either prompt are left out):
the original few-shot prompt with contextual calibration, and the packaged prompt with the threshold of
``conf/labelers/oni.yaml`` (chosen on the dev split). On ``--split dev`` the best threshold of each prompt
is also reported; prompts and thresholds are chosen on dev and the test split is read once.

    .venv/bin/python benchmarks/judge_quality.py --split dev|test [--limit N]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from vlmrl.annotation.core import AnnotationCore
from vlmrl.labelers.llm import PROMPT_DIR, LLMJudge

ASSET = PROMPT_DIR.parent.parent / "nethack_messages" / "labelled.jsonl"
ONI_CONFIG = Path(__file__).resolve().parent.parent / "vlmrl" / "conf" / "labelers" / "oni.yaml"
ORIGINAL_SCORE = """Does each NetHack message show progress? {goal}

Message: You kill the goblin!
Progress: yes
Message: There is a wall in the way.
Progress: no
Message: You see here a gold piece.
Progress: yes
Message: Unknown command.
Progress: no
Message: Welcome to experience level 3.
Progress: yes
Message: You stop. Your dog is in the way.
Progress: no
Message: You find a trap door.
Progress: yes
Message: It's solid rock.
Progress: no
Message: {message}
Progress:
"""  # the few-shot prompt before the labelled set existed: the baseline
ORIGINAL_GOAL = (
    "Goal: make as much progress in the game as possible: explore, fight, collect items and gold, and go deeper."
)
MARGIN = re.compile(r"margin=(-?[\d.]+)")


def load_split(split: str, path: Path = ASSET) -> tuple[list[str], np.ndarray]:
    """Messages and hand labels of one split of the labelled set."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["split"] == split]
    return [r["message"] for r in rows], np.array([r["label"] for r in rows], dtype=int)


def few_shot_messages(score_text: str) -> set[str]:
    """The example messages of a few-shot prompt (its ``Message:`` lines, the query slot excluded)."""
    found = {line.removeprefix("Message:").strip() for line in score_text.splitlines() if line.startswith("Message:")}
    return found - {"{message}"}


def rates(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Balanced accuracy, true-positive and true-negative rates, accuracy and ``n`` of 0/1 predictions."""
    tpr = float((pred[y == 1] == 1).mean()) if (y == 1).any() else float("nan")
    tnr = float((pred[y == 0] == 0).mean()) if (y == 0).any() else float("nan")
    return {"bal_acc": (tpr + tnr) / 2, "tpr": tpr, "tnr": tnr, "acc": float((pred == y).mean()), "n": len(y)}


def best_threshold(margins: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The margin threshold (midpoint between neighbouring margins) with the highest balanced accuracy."""
    values = np.unique(margins)
    candidates = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2, [values[-1] + 1.0]])
    scores = [rates((margins > t).astype(int), y)["bal_acc"] for t in candidates]
    i = int(np.argmax(scores))
    return float(candidates[i]), float(scores[i])


def judge_margins(prompt_dir: Path | None, messages: list[str], n_threads: int) -> tuple[np.ndarray, float]:
    """Yes/no margins of every message and the content-free calibration threshold, from the embedded LLM."""
    judge = LLMJudge(prompt_dir=str(prompt_dir) if prompt_dir else None, concurrency=1)
    with AnnotationCore(judge, embedded={"n_threads": n_threads, "n_ctx": 2048}):
        labels = judge.attempt(messages)  # calibrates first (threshold None)
    missing = [m for m, lab in zip(messages, labels, strict=True) if getattr(lab, "raw", None) is None]
    if missing:
        raise RuntimeError(f"the judge answered no margin for {len(missing)} messages, e.g. {missing[0]!r}")
    return np.array([float(MARGIN.search(lab.raw).group(1)) for lab in labels]), float(judge.threshold)


def original_prompt_dir(root: Path) -> Path:
    """A prompt folder holding the baseline few-shot prompt and goal text."""
    (root / "goals").mkdir(parents=True, exist_ok=True)
    (root / "score.txt").write_text(ORIGINAL_SCORE)
    (root / "goals" / "default.txt").write_text(ORIGINAL_GOAL + "\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N messages (smoke runs)")
    parser.add_argument("--n-threads", type=int, default=1)
    args = parser.parse_args()
    messages, y = load_split(args.split)
    shots = few_shot_messages(ORIGINAL_SCORE) | few_shot_messages((PROMPT_DIR / "score.txt").read_text())
    keep = [i for i, m in enumerate(messages) if m not in shots]
    if args.limit:
        keep = keep[: args.limit]
    messages, y = [messages[i] for i in keep], y[keep]
    chosen = OmegaConf.load(ONI_CONFIG).labeler.threshold
    rows, extra = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, prompt_dir, fixed in (("original+calibration", original_prompt_dir(Path(tmp)), None),
                                        ("packaged+config", None, chosen)):  # fmt: skip
            t0 = time.perf_counter()
            margins, calibrated = judge_margins(prompt_dir, messages, args.n_threads)
            threshold = calibrated if fixed is None else float(fixed)
            rows.append((name, threshold, rates((margins > threshold).astype(int), y), time.perf_counter() - t0))
            key = name.split("+")[0]
            extra[f"{key}_calibration_threshold"] = calibrated
            if args.split == "dev":
                t, score = best_threshold(margins, y)
                extra[f"{key}_best_dev_threshold"], extra[f"{key}_best_dev_bal_acc"] = t, score
    print(f"split={args.split}  positives={int(y.sum())}/{len(y)}")
    print(f"{'config':<24}{'threshold':>10}{'bal_acc':>9}{'TPR':>7}{'TNR':>7}{'acc':>7}{'n':>5}{'s':>7}")
    for name, t, r, dt in rows:
        print(
            f"{name:<24}{t:>10.3f}{r['bal_acc']:>9.3f}{r['tpr']:>7.3f}{r['tnr']:>7.3f}{r['acc']:>7.3f}{r['n']:>5}{dt:>7.1f}"
        )
    for name, t, r, _ in rows:
        key = name.split("+")[0]
        print(f"{key}_threshold={t:.4f}")
        for k, v in r.items():
            print(f"{key}_{k}={v:.4f}" if k != "n" else f"{key}_n={v}")
    for k, v in extra.items():
        print(f"{k}={v:.4f}")
    print(f"split={args.split}")
    print(f"ratio={rows[1][2]['bal_acc'] / rows[0][2]['bal_acc']:.4f}")


if __name__ == "__main__":
    main()
