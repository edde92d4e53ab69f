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


class Served:
    """A memory service on a real uvicorn server on a loopback port (see the ``served`` fixture)."""

    def __init__(self, folder, url, service, server, thread):
        self.folder, self.url, self.service, self.server, self.thread = folder, url, service, server, thread
        self.keys: dict[str, str] = {}

    def key(self, name: str, tenant: str | None = None) -> str:
        """An API key named ``name`` (created once; ``tenant`` shares another key's tenant)."""
        if name not in self.keys:
            self.keys[name] = self.service.keys.create(name, tenant)[0]
        return self.keys[name]

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(name)}"}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.service.close()
        self.service.memory.close()


def start_service(folder, *, llm="echo", mcp=False, page=False, embedder=None, start_worker=True) -> Served:
    """Open a Memory in ``folder`` (echo model, hashing embedder by default) and serve it on a free port."""
    import socket
    import threading
    import time

    import uvicorn

    from memory_agent import Memory
    from memory_agent.service import Service
    from memory_agent.service.app import create_app
    from memory_store import HashingEmbedder

    memory = Memory.open(folder, llm=llm, embedder=embedder or HashingEmbedder(dim=64), policy=None)
    service = Service(memory)
    mcp_app = None
    if mcp:
        from memory_agent.service.mcp_server import http_app

        mcp_app = http_app(service)
    app = create_app(service, mcp_app=mcp_app, page=page)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    if start_worker:
        service.start()
    return Served(folder, f"http://127.0.0.1:{port}", service, server, thread)


@pytest.fixture
def served(tmp_path):
    """A real memory service (echo model, hashing embedder) on a loopback port; ``.url``, ``.key(name)``."""
    s = start_service(tmp_path / "served")
    yield s
    s.stop()
