"""Crash safety and index recovery of memory_store.MemoryStore.

SQLite is the truth; the index file is a cache that must be rebuilt or
caught up whenever it is missing, damaged, foreign or stale, and a process
killed mid-batch must leave every returned add durable and no partial batch.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from memory_store import MemoryStore
from memory_store.store import INDEX_FILE

REPO = Path(__file__).resolve().parents[1]


def consistent(store: MemoryStore) -> bool:
    db = {r[0]: r[1] for r in store._db.conn.execute("SELECT id, user_id FROM memories")}
    return dict(store._index.owner) == db


def build(path: Path, embedder, n: int = 40) -> list[int]:
    with MemoryStore(path, embedder=embedder) as s:
        return s.add_many([f"memory {i} about subject {i % 5}" for i in range(n)], user_id="u1")


def check_search(path: Path, embedder, ids: list[int]) -> None:
    with MemoryStore(path, embedder=embedder) as s:
        assert consistent(s)
        assert s.search("memory 12 about subject 2", "u1", k=1)[0].id == ids[12]


def test_index_file_written_at_close(tmp_path, embedder):
    build(tmp_path / "s", embedder)
    assert (tmp_path / "s" / INDEX_FILE).stat().st_size > 0


def test_missing_index_rebuilt(tmp_path, embedder):
    ids = build(tmp_path / "s", embedder)
    (tmp_path / "s" / INDEX_FILE).unlink()
    check_search(tmp_path / "s", embedder, ids)
    assert (tmp_path / "s" / INDEX_FILE).exists()  # re-saved at close


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "header"])
def test_damaged_index_rebuilt(tmp_path, embedder, damage):
    ids = build(tmp_path / "s", embedder)
    f = tmp_path / "s" / INDEX_FILE
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-100] ^= 0xFF  # inside the vectors: only the checksum notices
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    elif damage == "empty":
        data = bytearray()
    else:
        data[20:40] = b"\x00" * 20
    f.write_bytes(bytes(data))
    check_search(tmp_path / "s", embedder, ids)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_stale_index_caught_up(tmp_path, embedder, index):
    path = tmp_path / "s"
    with MemoryStore(path, embedder=embedder, index=index) as s:
        ids = s.add_many([f"memory {i} about subject {i % 5}" for i in range(40)], user_id="u1")
    old = (path / INDEX_FILE).read_bytes()  # marker = the state after the first batch
    with MemoryStore(path, embedder=embedder, index=index) as s:
        s.delete(ids[12], "u1")
        s.update(ids[3], "a totally different sentence about whales", "u1")
        new = s.add("memory 12 about subject 2", "u1")
    (path / INDEX_FILE).write_bytes(old)  # marker now behind SQLite
    with MemoryStore(path, embedder=embedder, index=index) as s:
        assert consistent(s)
        assert s.search("memory 12 about subject 2", "u1", k=1)[0].id == new
        assert s.search("whales", "u1", k=1)[0].id == ids[3]
        assert ids[12] not in {h.id for h in s.search("memory 12 about subject 2", "u1", k=40)}


def test_foreign_index_rebuilt(tmp_path, embedder):
    ids = build(tmp_path / "a", embedder)
    build(tmp_path / "b", embedder, n=5)
    shutil.copy(tmp_path / "b" / INDEX_FILE, tmp_path / "a" / INDEX_FILE)
    check_search(tmp_path / "a", embedder, ids)


def test_index_of_other_kind_rebuilt_and_kind_remembered(tmp_path, embedder):
    ids = build(tmp_path / "s", embedder)  # flat file on disk
    with MemoryStore(tmp_path / "s", embedder=embedder, index="hnsw") as s:
        assert consistent(s) and s.search("memory 12 about subject 2", "u1", k=1)[0].id == ids[12]
    with MemoryStore(tmp_path / "s") as s:  # no kind given: the folder's last kind, not flat
        assert s.index_kind == "hnsw" and s.stats()["index"] == "hnsw" and consistent(s)


CHILD = textwrap.dedent(
    """
    import sys, time
    import memory_store.schema as schema
    from memory_store import HashingEmbedder, MemoryStore
    store = MemoryStore(sys.argv[1], embedder=HashingEmbedder(dim=64))
    out = open(sys.argv[2], "a", buffering=1)
    batch, stall = int(sys.argv[3]), sys.argv[4] == "stall"
    if stall:
        # Freeze inside the 4th batch's transaction, after its rows are written but
        # before COMMIT (current_seq is read twice per write: catch-up, then new seq).
        real, calls = schema.current_seq, [0]
        def current_seq(db):
            calls[0] += 1
            if calls[0] == 8:
                out.write("INSIDE\\n")
                time.sleep(60)
            return real(db)
        schema.current_seq = current_seq
    i = 0
    while True:
        ids = store.add_many([f"child memory m{i}x{j} " + "pad " * 50 for j in range(batch)], user_id="kid")
        out.write(" ".join(map(str, ids)) + "\\n")
        i += 1
    """
)


@pytest.mark.parametrize(("saved_first", "stall"), [(False, "run"), (True, "run"), (True, "stall")])
def test_sigkill_mid_batch_loses_nothing_committed(tmp_path, embedder, saved_first, stall):
    path, log = tmp_path / "s", tmp_path / "ids.txt"
    base = 0
    if saved_first:  # an index file with an older marker exists: exercises replay
        base = len(build(path, embedder, n=30))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    batch = 200
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(log), str(batch), stall], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = log.read_text().splitlines() if log.exists() else []
            if (stall == "stall" and "INSIDE" in lines) or (stall == "run" and len(lines) >= 3):
                break
            if proc.poll() is not None:
                pytest.fail(f"child died: {proc.stderr.read().decode()}")
            time.sleep(0.02)
        time.sleep(0.013)  # land somewhere inside a later batch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    returned = [int(x) for line in log.read_text().splitlines() if line.strip() and line != "INSIDE"
                for x in line.split()]
    assert len(returned) >= 3 * batch
    with MemoryStore(path, embedder=embedder) as s:
        assert consistent(s)
        kid = {r.id for r in s.list("kid")}
        assert set(returned) <= kid  # every add that returned survived
        assert len(kid) % batch == 0  # batches are all-or-nothing
        assert s.count() == base + len(kid)
        if stall == "stall":  # killed between the inserts and COMMIT: that batch is gone
            assert len(kid) == 3 * batch and set(returned) == kid
        probe = s.get(returned[207], "kid")
        hit = s.search(probe.text, "kid", k=1, mode="vector")[0]
        assert hit.id == probe.id and hit.score == pytest.approx(1.0, abs=1e-5)
        # The keyword index was written in the same transactions: every acknowledged
        # memory is found by its own words, none of a torn batch is.
        from memory_store.keyword import fts_problem

        assert fts_problem(s._db.conn) is None
        for mid in returned:
            text = s.get(mid, "kid").text
            assert [h.id for h in s.search(text.split()[2], "kid", k=2, mode="keyword")] == [mid]


def test_uncommitted_batch_leaves_no_index_entry(tmp_path, embedder, monkeypatch):
    s = MemoryStore(tmp_path / "s", embedder=embedder)
    s.add("kept", "u1")
    import memory_store.schema as schema

    real = schema.current_seq
    calls = {"n": 0}

    def boom(db):  # fails inside the write transaction, after the inserts
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash before commit")
        return real(db)

    monkeypatch.setattr(schema, "current_seq", boom)
    with pytest.raises(OSError):
        s.add_many(["lost 1", "lost 2"], "u1")
    monkeypatch.setattr(schema, "current_seq", real)
    assert s.count() == 1 and consistent(s) and [h.text for h in s.search("lost", "u1", k=5)] == ["kept"]
    s.close()


def test_index_ahead_of_database_rebuilt(tmp_path, embedder):
    ids = build(tmp_path / "s", embedder)
    shutil.copytree(tmp_path / "s", tmp_path / "old")  # database + index at the first state
    with MemoryStore(tmp_path / "s", embedder=embedder) as s:
        s.add_many(["only in the newer database"] * 3, "u1")
    shutil.copy(tmp_path / "s" / INDEX_FILE, tmp_path / "old" / INDEX_FILE)  # marker ahead of old db
    check_search(tmp_path / "old", embedder, ids)
    with MemoryStore(tmp_path / "old", embedder=embedder) as s:
        assert s.count() == 40 and s.search("only in the newer database", "u1", k=1)[0].text != "only in the newer database"


def test_stale_index_not_overwritten_by_older_process(tmp_path, embedder):
    build(tmp_path / "s", embedder)
    a = MemoryStore(tmp_path / "s", embedder=embedder)
    b = MemoryStore(tmp_path / "s", embedder=embedder)
    b.add("newer", "u1")
    b.close()  # b saves its newer state; a never searched after b's write
    from memory_store.index import VectorIndex

    before = VectorIndex.peek(tmp_path / "s" / INDEX_FILE)["seq"]
    a.close()  # catches up first, so it writes the same or newer state, never older
    assert VectorIndex.peek(tmp_path / "s" / INDEX_FILE)["seq"] >= before


def test_old_temp_index_files_cleaned(tmp_path, embedder):
    build(tmp_path / "s", embedder, n=3)
    old = tmp_path / "s" / f"{INDEX_FILE}.123.456.tmp"
    fresh = tmp_path / "s" / f"{INDEX_FILE}.789.1.tmp"
    old.write_bytes(b"half written")
    fresh.write_bytes(b"being written right now")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    with MemoryStore(tmp_path / "s", embedder=embedder) as s:
        assert consistent(s)
    assert not old.exists() and fresh.exists()
