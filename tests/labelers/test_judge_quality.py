"""The hand-labelled NetHack message set that measures the ONI judge, and its separation from the prompt."""

import json
from collections import Counter

import numpy as np
import pytest

from vlmrl.labelers.llm import GOALS, PROMPT_DIR, LLMJudge, load_prompt

ASSET = PROMPT_DIR.parent.parent / "nethack_messages" / "labelled.jsonl"


@pytest.fixture(scope="module")
def rows():
    return [json.loads(line) for line in ASSET.read_text().splitlines() if line.strip()]


def few_shot_examples(goal: str = "default") -> set[str]:
    """The example messages of the log-prob prompt (its ``Message:`` lines without the query slot)."""
    lines = load_prompt("logprob", goal).splitlines()
    return {line.removeprefix("Message: ") for line in lines if line.startswith("Message: ")} - {"{message}"}


def test_labelled_set_is_large_balanced_and_split_cleanly(rows):
    assert len(rows) >= 150
    assert all(set(r) == {"message", "label", "split"} and r["label"] in (0, 1) for r in rows)
    messages = [r["message"] for r in rows]
    assert len(set(messages)) == len(messages), "duplicate messages"
    by = Counter((r["split"], r["label"]) for r in rows)
    assert set(by) == {("dev", 0), ("dev", 1), ("test", 0), ("test", 1)}
    assert sum(r["label"] for r in rows) / len(rows) >= 0.35
    dev = {r["message"] for r in rows if r["split"] == "dev"}
    test = {r["message"] for r in rows if r["split"] == "test"}
    assert not dev & test and len(dev) + len(test) == len(rows)
    assert 0.4 <= len(test) / len(rows) <= 0.6


def test_no_few_shot_example_is_a_test_message(rows):
    test = {r["message"] for r in rows if r["split"] == "test"}
    shots = few_shot_examples()
    assert len(shots) >= 8
    assert not shots & test, f"few-shot examples from the test split: {sorted(shots & test)}"
    labels = {r["message"]: r["label"] for r in rows}
    prompt = load_prompt("logprob")
    for m in shots & set(labels):  # examples taken from dev carry their hand label in the prompt
        assert f"Message: {m}\nProgress: {'yes' if labels[m] else 'no'}" in prompt
    assert all(few_shot_examples(g) == shots for g in GOALS)


@pytest.mark.slow
def test_embedded_judge_beats_chance_on_a_sample_of_dev_messages(rows):
    """The packaged prompt and the configured threshold, through the embedded LLM, on 10 + 10 dev messages."""
    from omegaconf import OmegaConf

    from vlmrl.annotation.core import AnnotationCore

    threshold = OmegaConf.load(PROMPT_DIR.parents[2] / "conf" / "labelers" / "oni.yaml").labeler.threshold
    dev = [r for r in rows if r["split"] == "dev" and r["message"] not in few_shot_examples()]
    rng = np.random.default_rng(0)
    picked = [r for value in (1, 0) for r in rng.permutation([r for r in dev if r["label"] == value])[:10]]
    judge = LLMJudge(threshold=threshold)
    with AnnotationCore(judge, embedded={"n_threads": 1}):
        labels = judge([r["message"] for r in picked])
    hits = [lab.value == r["label"] for lab, r in zip(labels, picked, strict=True)]
    balanced = (np.mean(hits[:10]) + np.mean(hits[10:])) / 2
    assert balanced >= 0.65, [(r["message"], lab.raw) for lab, r in zip(labels, picked, strict=True)]
