import math

import pytest

from vlmrl.labelers.llm import GOALS, MISSING_LOGPROB, LLMJudge, load_prompt, parse_label, yes_no_margin
from vlmrl.testing.stub_llm import CONTENT_FREE_MARGIN, StubEndpoint


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("<analysis>kill</analysis><label>yes</label>", 1),
        ("<label> NO </label>", 0),
        ("<label>True</label>", 1),
        ("first <label>yes</label> then <label>no</label>", 0),  # the last label wins
        ("Yes, clearly progress.", -1),
        ("", -1),
    ],
)
def test_parse_label(answer, value):
    assert parse_label(answer) == value


def test_yes_no_margin():
    assert yes_no_margin({" yes": -0.5, " no": -1.5, " the": -0.1}) == pytest.approx(1.0)
    both = {" Yes": math.log(0.2), " yes": math.log(0.2), " no": math.log(0.4)}
    assert yes_no_margin(both) == pytest.approx(0.0, abs=1e-9)  # case variants are summed
    assert yes_no_margin({" no": -0.1}) == pytest.approx(MISSING_LOGPROB + 0.1)


def test_prompt_variants_differ_and_keep_the_message_slot():
    prompts = {g: load_prompt("logprob", g) for g in GOALS}
    assert len(set(prompts.values())) == len(GOALS)
    assert all(p.rstrip().endswith("Message: {message}\nProgress:") for p in prompts.values())
    assert "<label>yes</label>" in load_prompt("text", "gold") and "gold" in load_prompt("text", "gold")


@pytest.mark.parametrize("batch_prompts", [False, True])
def test_calibrated_logprob_labels(batch_prompts):
    with StubEndpoint() as stub:
        judge = LLMJudge(base_url=stub.base_url, batch_prompts=batch_prompts)
        assert judge.model == "stub"  # asked from /models
        labels = judge(["You kill the newt!", "It's a wall.", "You see here 3 gold pieces."])
        judge.close()
    assert judge.threshold == pytest.approx(CONTENT_FREE_MARGIN)
    assert [lab.value for lab in labels] == [1, 0, 1]
    assert labels[0].source == "llm:stub" and "margin=2.0000" in labels[0].raw
    # a fixed threshold skips calibration; with model given, connecting makes no request
    assert LLMJudge(base_url=stub.base_url, model="stub", threshold=3.0).threshold == 3.0


def test_failed_requests_raise_with_their_kind_and_try_label_returns_none():
    with StubEndpoint(faults=("429",)) as stub:
        judge = LLMJudge(base_url=stub.base_url, threshold=0.0, timeout=1.0)
        assert judge.try_label(["a", "b"]) == [None, None]
        with pytest.raises(RuntimeError, match="rate_limited"):
            judge(["a"])
        judge.close()


def test_no_endpoint_is_a_clear_error():
    with pytest.raises(RuntimeError, match="connect"):
        LLMJudge().try_label(["x"])
