"""Several threads and several processes writing one store folder at once.

SQLite (WAL + busy timeout + BEGIN IMMEDIATE) serialises the writers; each
process's in-memory index must follow the others' commits via the change
counter, and every row must land exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from memory_store import Delete, MemoryStore, Update

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, sys, threading
    from memory_store import HashingEmbedder, MemoryStore, Delete, Update
    path, tag, n_threads, n_batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = MemoryStore(path, embedder=HashingEmbedder(dim=64))
    errors = []
    def work(t):
        try:
            user = f"{tag}-t{t}"
            for b in range(n_batches):
                ids = store.add_many([f"{user} batch {b} item {j}" for j in range(5)], user_id=user)
                store.apply([Update(id=ids[0], text=f"{user} batch {b} updated"), Delete(id=ids[1])], user_id=user)
                store.add(f"shared note from {user} {b}", user_id="shared")
                store.search("shared note", user_id="shared", k=3)
        except Exception as exc:  # reported to the parent test, which fails on it
            errors.append(repr(exc))
    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    store.search("anything", user_id="shared", k=1)  # forces a catch-up with the other process
    own = dict(store._index.owner)
    db = {r[0]: r[1] for r in store._db.conn.execute("SELECT id, user_id FROM memories")}
    store.close()
    print(json.dumps({"errors": errors, "index_matches_db_at_end": own == db or None}))
    """
)


def consistent(store: MemoryStore) -> bool:
    db = {r[0]: r[1] for r in store._db.conn.execute("SELECT id, user_id FROM memories")}
    return dict(store._index.owner) == db


def test_two_processes_and_threads(tmp_path, embedder):
    path = tmp_path / "s"
    MemoryStore(path, embedder=embedder).close()  # create the schema once, up front
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    n_threads, n_batches = 3, 12
    procs = [subprocess.Popen([sys.executable, str(script), str(path), tag, str(n_threads), str(n_batches)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("p0", "p1")]
    # ...and threads of this process writing at the same time through a third store object.
    local = MemoryStore(path, embedder=embedder)
    local_errors: list[str] = []

    def work(t: int) -> None:
        user = f"main-t{t}"
        for b in range(n_batches):
            ids = local.add_many([f"{user} {b} {j}" for j in range(5)], user_id=user)
            local.apply([Update(id=ids[0], text=f"{user} {b} updated"), Delete(id=ids[1])], user_id=user)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["errors"] == [] for r in results), results
    local.search("x", user_id="shared", k=1)
    assert consistent(local)  # this process followed the children's commits
    local.close()
    with MemoryStore(path, embedder=embedder) as s:
        per_thread = n_batches * 4  # 5 added, 1 deleted per batch
        for tag in ("p0", "p1"):
            for t in range(n_threads):
                assert s.count(f"{tag}-t{t}") == per_thread
        for t in range(2):
            assert s.count(f"main-t{t}") == per_thread
        assert s.count("shared") == 2 * n_threads * n_batches
        assert s.count() == (2 * n_threads + 2) * per_thread + 2 * n_threads * n_batches
        assert consistent(s)
        assert len(s.search("shared note", "shared", k=1000)) == s.count("shared")


def test_second_store_object_sees_updates_and_deletes(tmp_path, embedder):
    a = MemoryStore(tmp_path / "s", embedder=embedder)
    b = MemoryStore(tmp_path / "s", embedder=embedder)
    ids = a.add_many(["red apple", "green pear", "yellow banana"], user_id="u1")
    assert b.search("green pear", "u1", k=1)[0].id == ids[1]
    a.apply([Update(id=ids[1], text="purple plum"), Delete(id=ids[2])], user_id="u1")
    hits = b.search("purple plum", "u1", k=5)
    assert hits[0].id == ids[1] and hits[0].text == "purple plum" and ids[2] not in {h.id for h in hits}
    c = b.add("blue berry", "u1")
    assert a.search("blue berry", "u1", k=1)[0].id == c
    assert consistent(a) and consistent(b)
    a.close()
    b.close()


def test_threads_share_one_store(store):
    def work(t: int) -> None:
        for b in range(20):
            store.add_many([f"thread {t} batch {b} {j}" for j in range(3)], user_id=f"t{t}")
            store.search(f"thread {t}", user_id=f"t{t}", k=2)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 4 * 20 * 3 and consistent(store)
    assert all(store.count(f"t{t}") == 60 for t in range(4))


def test_busy_writer_gives_typed_error_and_changes_nothing(tmp_path, embedder, monkeypatch):
    import sqlite3

    import memory_store.schema as schema
    from memory_store import StoreError

    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 100)
    s = MemoryStore(tmp_path / "s", embedder=embedder)
    s.add("before", "u1")
    other = sqlite3.connect(tmp_path / "s" / "memories.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        with pytest.raises(StoreError):
            s.add("blocked", "u1")
        assert [h.text for h in s.search("before", "u1", k=5)] == ["before"]  # reads still work
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert s.count() == 1 and consistent(s)
    s.add("after", "u1")
    assert s.count() == 2
    s.close()
