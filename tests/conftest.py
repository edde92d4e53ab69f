"""Shared fixtures: a hashing embedder, a temporary store, a scripted LLM double.

Fixtures that load the real embedded models are session-scoped so the slow
tests pay for loading once.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def embedder():
    from memory_store import HashingEmbedder

    return HashingEmbedder(dim=64)


@pytest.fixture
def store(tmp_path, embedder):
    from memory_store import MemoryStore

    s = MemoryStore(tmp_path / "store", embedder=embedder)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "memory"])
def make_backend(request, tmp_path):
    """Factory of stores under the shared contract: ``MemoryStore`` and ``InMemoryStore``.

    Contract tests take this fixture, so every one of them runs on both.
    """
    from memory_store import InMemoryStore, MemoryStore

    made = []

    def make(embedder, name="store", index="flat"):
        if request.param == "memory":
            s = InMemoryStore(embedder)
        else:
            s = MemoryStore(tmp_path / name, embedder=embedder, index=index)
        made.append(s)
        return s

    make.kind = request.param
    yield make
    for s in made:
        s.close()


@pytest.fixture
def backend(make_backend, embedder):
    """One store of each kind under the shared contract."""
    return make_backend(embedder)


@pytest.fixture
def scripted():
    """Factory: ``scripted(["reply 1", "reply 2"])`` -> a ScriptedLLM."""
    from memory_agent.llms import ScriptedLLM

    def make(replies=(), **kwargs):
        return ScriptedLLM(list(replies), **kwargs)

    return make


@pytest.fixture(scope="session")
def smollm():
    """The real embedded SmolLM2-135M-Instruct (slow: loads once per session)."""
    from memory_agent.llms import TransformersLLM

    return TransformersLLM.default()


@pytest.fixture(scope="session")
def minilm():
    """The real embedded all-MiniLM-L6-v2 embedder."""
    from memory_store import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()
