"""Embedders: shape, dtype, normalisation, determinism; no torch on import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory_store import Embedder, HashingEmbedder, InvalidInput, MemoryStore

REPO = Path(__file__).resolve().parents[1]


def test_import_does_not_load_torch_and_hashing_is_stable_across_processes():
    # One subprocess for both checks (interpreter start-up dominates on a loaded box).
    code = ("import memory_store, sys; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(memory_store.HashingEmbedder(dim=16).embed(['abc def'])[0].tolist())")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "123"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert np.allclose(json.loads(res.stdout), HashingEmbedder(dim=16).embed(["abc def"])[0])


def test_hashing_embedder_contract():
    emb = HashingEmbedder(dim=64)
    assert isinstance(emb, Embedder)
    texts = ["Hello world", "hello   WORLD", "world hello", "🍕", "你好", "שלום", "!!", "?"]
    v = emb.embed(texts)
    assert v.shape == (len(texts), 64) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(v[0], v[1])  # case and whitespace do not matter
    assert not np.allclose(v[0], v[2])  # order does (through bigrams)
    assert len({row.tobytes() for row in v[1:]}) == len(texts) - 1  # distinct texts, distinct vectors
    assert emb.embed([]).shape == (0, 64)
    assert np.array_equal(HashingEmbedder(dim=64).embed(["stable across instances"]),
                          emb.embed(["stable across instances"]))
    assert float(emb.embed(["green tea"])[0] @ emb.embed(["I like green tea"])[0]) > 0.3


def test_hashing_embedder_bad_input():
    with pytest.raises(InvalidInput):
        HashingEmbedder(dim=0)
    with pytest.raises(InvalidInput):
        HashingEmbedder(dim=8).embed("a string")
    with pytest.raises(InvalidInput):
        HashingEmbedder(dim=8).embed([1, 2])


@pytest.mark.slow
def test_minilm_embedder(minilm, tmp_path):
    assert minilm.dim == 384
    v = minilm.embed(["I adopted a puppy", "We got a new dog", "Tax forms are due in April"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]
    assert minilm.embed([]).shape == (0, 384)
    with MemoryStore(tmp_path / "s", embedder=minilm) as s:
        ids = s.add_many(["I adopted a puppy last week", "Tax forms are due in April", "I love hiking"], "u1")
        assert s.search("new dog", "u1", k=1)[0].id == ids[0]
