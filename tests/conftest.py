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
