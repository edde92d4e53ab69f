"""What is PostgreSQL-specific about ``PostgresStore`` (its contract runs in test_store, test_keyword, test_filters).

Several processes (standing in for several app servers) writing to one
database at once, two writers on one memory, a writer killed inside its
transaction, bad URLs and unreachable servers, schema versions, HNSW, and
moving a store between SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

from memory_store import (
    Add, AlreadyApplied, EmbeddingDimensionMismatch, HashingEmbedder, SchemaTooNew,
    StoreError, Update,
)

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

ROOT = Path(__file__).resolve().parents[1]

# One writer process: ``python -c WORKER url mode name n``.
WORKER = r"""
import sys, time
from memory_store import Add, Delete, HashingEmbedder, MemoryNotFound, PostgresStore, Update
url, mode, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = PostgresStore(url, HashingEmbedder(dim=64))
print("READY", flush=True)
sys.stdin.readline()  # every writer starts at once
if mode == "ingest":  # n batches for two users of this writer, with receipts, updates and deletes
    for i in range(n):
        for user in (f"{name}-a", f"{name}-b"):
            ops = [Add(text=f"{user} fact {i} {j}", metadata={"i": i}) for j in range(4)]
            applied = store.apply(ops, user, source=f"turn-{i}", receipts=[f"{user}:{i}"])
            store.apply([Update(id=applied[0].id, text=f"{user} fact {i} updated"), Delete(id=applied[1].id)], user)
    try:  # reaching into another writer's memories must fail, whatever their ids
        store.apply([Delete(id=int(sys.argv[5]))], f"{name}-a")
        print("CROSS-USER WRITE SUCCEEDED")
    except MemoryNotFound:
        pass
elif mode == "update":  # n updates of one memory
    mid = int(sys.argv[5])
    for i in range(n):
        store.update(mid, f"{name} wrote {i}", "shared")
elif mode == "hang":  # stop inside the transaction of one batch, until killed
    orig = PostgresStore._write
    def write(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        print("IN-TRANSACTION", flush=True)
        time.sleep(600)
        return out
    PostgresStore._write = write
    store.apply([Update(id=n, text="half written"), Add(text="never committed")], "victim", receipts=["job:1"])
store.close()
print("DONE", flush=True)
"""


def _spawn(url: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, *map(str, args)], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _start(*procs: subprocess.Popen) -> None:
    """Wait until every writer is connected, then let them all go at once."""
    for p in procs:
        line = p.stdout.readline()
        assert line.strip() == "READY", p.stderr.read()[-3000:]
    for p in procs:
        p.stdin.write("GO\n")
        p.stdin.flush()


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.fixture
def pg(pg_database, embedder):
    from memory_store import PostgresStore

    made = []

    def make(name: str = "store", **kwargs):
        made.append(PostgresStore(pg_database(name), embedder=kwargs.pop("embedder", embedder), **kwargs))
        return made[-1]

    make.url = pg_database
    yield make
    for s in made:
        s.close()


# ------------------------------------------------------------------ several writers


@pytest.mark.timeout(300)
def test_two_processes_ingest_at_once(pg):
    store = pg()
    url = pg.url()
    fence = store.add("the other writers may not touch this", "guard")
    n = 25
    procs = [_spawn(url, "ingest", name, n, fence) for name in ("w1", "w2")]
    _start(*procs)
    outs = [_finish(p) for p in procs]
    assert all("CROSS-USER" not in o and "DONE" in o for o in outs)
    users = store.users()
    assert users == {"guard": 1, **{f"{w}-{x}": 3 * n for w in ("w1", "w2") for x in ("a", "b")}}
    for user in users:
        if user == "guard":
            continue
        records = store.list(user)
        assert all(r.user_id == user and r.text.startswith(user) for r in records)  # no cross-user reach
        assert store.receipts(user, [f"{user}:{i}" for i in range(n)]) == {f"{user}:{i}" for i in range(n)}
        for r in records:  # history complete: every surviving memory's events, in order
            events = [h.event for h in store.history(r.id, user)]
            assert events == (["ADD", "UPDATE"] if "updated" in r.text else ["ADD"])
        ids = sorted(r.id for r in records)
        assert len(ids) == len(set(ids))
    assert [h.event for h in store.history(fence, "guard")] == ["ADD"]


@pytest.mark.timeout(300)
def test_two_writers_updating_one_memory_lose_nothing(pg):
    store = pg()
    mid = store.add("start", "shared")
    n = 15
    procs = [_spawn(pg.url(), "update", name, n, mid) for name in ("A", "B")]
    _start(*procs)
    for p in procs:
        _finish(p)
    events = store.history(mid, "shared")
    assert [e.event for e in events] == ["ADD"] + ["UPDATE"] * (2 * n)  # both writers' updates recorded
    for prev, cur in zip(events, events[1:]):
        assert cur.old_text == prev.new_text  # each update saw the one before it: none was lost
    final = store.get(mid, "shared").text
    assert final == events[-1].new_text and final in {f"A wrote {n - 1}", f"B wrote {n - 1}"}


def test_an_update_waits_for_the_row_lock_and_sees_the_committed_text(pg):
    import psycopg

    store = pg()
    mid = store.add("v0", "u1")
    other = psycopg.connect(pg.url())
    try:
        other.execute("SELECT text FROM memories WHERE id = %s FOR UPDATE", [mid])  # another server, mid-batch
        done = threading.Event()
        result = {}

        def write():
            result["rec"] = store.update(mid, "v2 from the second writer", "u1")
            done.set()

        t = threading.Thread(target=write)
        t.start()
        assert not done.wait(1.0)  # blocked on the row lock
        other.execute("UPDATE memories SET text = 'v1 from the first writer' WHERE id = %s", [mid])
        other.execute("INSERT INTO history (memory_id, user_id, event, old_text, new_text, actor, at)"
                      " VALUES (%s, 'u1', 'UPDATE', 'v0', 'v1 from the first writer', 'other', 'now')", [mid])
        other.commit()
        t.join(30)
    finally:
        other.close()
    assert result["rec"].text == "v2 from the second writer"
    assert [(h.old_text, h.new_text) for h in store.history(mid, "u1")][1:] == [
        ("v0", "v1 from the first writer"), ("v1 from the first writer", "v2 from the second writer")]


@pytest.mark.timeout(120)
def test_a_writer_killed_mid_transaction_leaves_nothing(pg):
    store = pg()
    mid = store.add("intact", "victim")
    proc = _spawn(pg.url(), "hang", "x", mid)
    try:
        _start(proc)
        line = proc.stdout.readline()
        assert line.strip() == "IN-TRANSACTION", proc.stderr.read()[-3000:]
        assert store.get(mid, "victim").text == "intact"  # uncommitted: invisible
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    assert store.count() == 1 and store.get(mid, "victim").text == "intact"
    assert [h.event for h in store.history(mid, "victim")] == ["ADD"]
    assert store.receipts("victim", ["job:1"]) == set()
    # The dead writer's row lock went with its connection: the same batch now commits.
    store.apply([Update(id=mid, text="after the crash")], "victim", receipts=["job:1"])
    assert store.get(mid, "victim").text == "after the crash"
    with pytest.raises(AlreadyApplied):
        store.apply([Add(text="again")], "victim", receipts=["job:1"])


# ------------------------------------------------------------------ connecting


@pytest.mark.parametrize("url", [
    "postgresql://alice:s3cretPW@127.0.0.1:1/memories",              # nothing listens there
    "postgresql://alice:s3cretPW@127.0.0.1:notaport/memories",       # not a URL libpq reads
    "postgresql://alice:s3cretPW@[::1/memories",
    "postgres://alice:s3cretPW@127.0.0.1:1/memories?sslmode=bogus",
])
def test_bad_url_or_unreachable_server_is_one_clear_error(url, embedder):
    from memory_store import PostgresStore

    t0 = time.monotonic()
    with pytest.raises(StoreError) as info:
        PostgresStore(url, embedder)
    assert time.monotonic() - t0 < 30
    text = "".join(traceback.format_exception(info.value))
    assert "s3cretPW" not in text and "s3cretPW" not in str(info.value)
    assert "PostgreSQL" in str(info.value) and "127.0.0.1" in str(info.value) or "URL" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_password_from_the_environment_is_never_shown(monkeypatch, embedder):
    from memory_store import PostgresStore

    monkeypatch.setenv("PGPASSWORD", "envSecret42")
    with pytest.raises(StoreError) as info:
        PostgresStore("postgresql://bob@127.0.0.1:1/db", embedder)
    assert "envSecret42" not in "".join(traceback.format_exception(info.value))


def test_repr_and_stats_never_hold_the_password(pg):
    from memory_store.pg_schema import redact, scrub

    store = pg()
    assert ":@" not in repr(store) and "password" not in repr(store)
    assert redact("postgresql://u:pw@h:5/d") == "postgresql://u@h:5/d"
    assert "pw" not in scrub("failed for postgresql://u:pw@h:5/d", "postgresql://u:pw@h:5/d")
    assert store.stats()["backend"] == "postgres"


# ------------------------------------------------------------------ schema and indexes


def test_fresh_database_gets_pgvector_and_reopens(pg_fresh_database, embedder):
    from memory_store import PostgresStore

    url = pg_fresh_database()
    with pytest.raises(StoreError):  # a new store needs a width: nothing is created
        PostgresStore(url)
    with PostgresStore(url, embedder) as s:
        a = s.add("Caroline went hiking", "u1", {"speaker": "Caroline"})
        assert s.stats()["schema_version"] >= 1
    with PostgresStore(url) as s:  # no embedder: the recorded width
        assert s.dim == 64 and s.search("hiking", "u1", mode="keyword")[0].id == a
        assert s.search_vector(embedder.embed(["Caroline went hiking"])[0], "u1", k=1)[0].id == a
    with pytest.raises(EmbeddingDimensionMismatch):
        PostgresStore(url, HashingEmbedder(dim=32))


def test_schema_too_new_is_refused(pg):
    import psycopg

    pg().close()
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(SchemaTooNew):
        pg()


def test_hnsw_index_is_built_used_and_remembered(pg):
    import psycopg

    s = pg(index="hnsw")
    ids = s.add_many([f"item {i} colour {i % 5}" for i in range(300)], "u1")
    s.add_many([f"other {i}" for i in range(50)], "u2")
    hits = s.search("item 7 colour 2", "u1", k=10, mode="vector")
    assert len(hits) == 10 and all(h.user_id == "u1" for h in hits) and hits[0].id == ids[7]
    with psycopg.connect(pg.url()) as conn:
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'memories'")}
    assert "memories_embedding_hnsw" in names
    s.close()
    assert pg().index_kind == "hnsw"  # index=None keeps what the store last used
    assert pg(index="flat").index_kind == "flat"


def test_nul_characters_are_refused_before_any_change(pg):
    from memory_store import InvalidInput

    s = pg()
    s.add("kept", "u1")
    for call in (lambda: s.add("a\x00b", "u1"), lambda: s.add("x", "u1", {"k": "\x00"}),
                 lambda: s.apply([Add(text="fine"), Add(text="bad\x00")], "u1")):
        with pytest.raises(InvalidInput):
            call()
    assert s.count() == 1


# ------------------------------------------------------------------ routing and layering


def test_memory_open_and_open_store_route_urls(pg_database, tmp_path):
    from memory_agent import Memory
    from memory_store import MemoryBackend, MemoryStore, PostgresStore, open_store

    url = pg_database()
    with Memory.open(url, llm="echo", embedder="hashing", policy=None) as mem:
        assert isinstance(mem.store, PostgresStore) and isinstance(mem.store, MemoryBackend)
        mem.store.add("Caroline lives in Paris", "u1")
        assert mem.search("where does Caroline live", user_id="u1")[0].text == "Caroline lives in Paris"
    with open_store(tmp_path / "folder", HashingEmbedder(dim=64)) as s:
        assert isinstance(s, MemoryStore)


def test_import_memory_store_does_not_import_psycopg():
    code = "import sys, memory_store; print('psycopg' in sys.modules, 'psycopg_pool' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ})
    assert out.stdout.strip() == "False False"


def test_cli_reads_a_postgres_store(pg, tmp_path):
    from click.testing import CliRunner

    from memory_agent.cli import cli

    s = pg(embedder=HashingEmbedder(dim=384))  # the CLI's --embedder hashing
    s.add("Melanie paints sunsets", "u1")
    url = pg.url()
    res = CliRunner().invoke(cli, ["search", "sunsets", "--db", url, "--user", "u1", "--embedder", "hashing",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert "Melanie paints sunsets" in res.output
    res = CliRunner().invoke(cli, ["info", "--db", url, "--embedder", "hashing", "--json"])
    assert res.exit_code == 0 and '"backend": "postgres"' in res.output, res.output


# ------------------------------------------------------------------ moving a store


def _everything(store, users):
    return {u: [(r.id, r.text, r.created_at, r.updated_at, r.metadata, r.hash) for r in store.list(u)] for u in users}


def _events(store, mid, user):
    return [(h.event, h.old_text, h.new_text, h.actor, h.source, h.at) for h in store.history(mid, user)]


def test_migrate_sqlite_to_postgres_and_back_keeps_ids_and_history(tmp_path, pg_database, embedder):
    from click.testing import CliRunner

    from memory_agent.cli import cli
    from memory_store import MemoryStore, PostgresStore

    src = MemoryStore(tmp_path / "src", embedder=embedder)
    a = src.add("Alice moved to Paris 🇫🇷", "u1", {"speaker": "Alice", "n": 3}, timestamp="2023-01-01T10:00:00")
    src.update(a, "Alice moved to Lyon", "u1", source="turn-7")
    gone = src.add("temporary", "u1")
    src.delete(gone, "u1")
    b = src.add("Bob likes 寿司", "u2")
    users = ("u1", "u2")
    before = _everything(src, users)
    history = {m: _events(src, m, u) for m, u in ((a, "u1"), (gone, "u1"), (b, "u2"))}
    src.close()

    url = pg_database("migrated")
    res = CliRunner().invoke(cli, ["migrate", "--from", str(tmp_path / "src"), "--to", url, "--json"])
    assert res.exit_code == 0, res.output
    with PostgresStore(url) as pgs:  # no embedder needed: the embeddings came along
        assert _everything(pgs, users) == before
        assert {m: _events(pgs, m, u) for m, u in ((a, "u1"), (gone, "u1"), (b, "u2"))} == history
        assert pgs.search("Lyon", "u1", k=1, mode="keyword")[0].id == a
        assert pgs.search_vector(embedder.embed(["Bob likes 寿司"])[0], "u2", k=1)[0].id == b
    res = CliRunner().invoke(cli, ["migrate", "--from", url, "--to", str(tmp_path / "src")])
    assert res.exit_code != 0  # the target is not empty: refused, nothing written

    res = CliRunner().invoke(cli, ["migrate", "--from", url, "--to", str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    assert "s3cret" not in res.output
    with MemoryStore(tmp_path / "back", embedder=embedder) as back:
        assert _everything(back, users) == before
        assert {m: _events(back, m, u) for m, u in ((a, "u1"), (gone, "u1"), (b, "u2"))} == history
        assert back.search("Lyon", "u1", k=1)[0].id == a
        assert back.add("after the move", "u1") > max(a, b, gone)  # ids never reused, deleted ones included
    with PostgresStore(url, embedder) as pgs:
        assert pgs.add("after the move", "u1") > max(a, b, gone)


def test_postgres_export_import_roundtrip_reembeds(pg, embedder, tmp_path):
    from memory_store import PostgresStore

    src = pg("src")
    ids = src.add_many(["quokka sighting", "wombat burrow"], "u1", metadatas=[{"k": 1}, None])
    src.update(ids[1], "wombat tunnel", "u1")
    dump = tmp_path / "x.jsonl"
    assert src.export_jsonl(dump) == 2 and oct(dump.stat().st_mode & 0o777) == "0o600"
    with PostgresStore.import_jsonl(dump, pg.url("dst"), embedder=embedder) as dst:
        assert _everything(dst, ["u1"]) == _everything(src, ["u1"])
        assert _events(dst, ids[1], "u1") == _events(src, ids[1], "u1")
        assert dst.search("tunnel", "u1", k=1)[0].id == ids[1]
        with pytest.raises(Exception):  # the same ids again: refused whole
            from memory_store.pg_transfer import import_jsonl

            import_jsonl(dst, dump)
        assert dst.count() == 2
