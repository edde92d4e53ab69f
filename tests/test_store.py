"""Core behaviour of the stores: CRUD, scoping, apply, filters, I/O.

Tests taking ``backend``/``make_backend`` are the store contract and run on
``MemoryStore``, ``InMemoryStore`` and ``PostgresStore``; the others are about SQLite/FAISS itself.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from memory_store import (
    Add, AppliedOp, Delete, EmbeddingDimensionMismatch, HashingEmbedder, HistoryEntry, InvalidInput,
    MemoryNotFound, MemoryRecord, MemoryStore, Noop, SchemaTooNew, SearchHit, Update,
)


def snapshot(store: MemoryStore, user_id: str) -> list[tuple]:
    return [(r.id, r.text, r.updated_at, json.dumps(r.metadata)) for r in store.list(user_id)]


def index_ids(store) -> set[int]:
    if not hasattr(store, "_index"):  # PostgresStore: the vectors are columns of the rows themselves
        return db_ids(store)
    return set(store._index.owner)


def db_ids(store) -> set[int]:
    if isinstance(store, MemoryStore):
        return {r[0] for r in store._db.conn.execute("SELECT id FROM memories")}
    if not hasattr(store, "_records"):  # PostgresStore
        return {r.id for user in store.users() for r in store.list(user)}
    return set(store._records)


def test_crud_roundtrip(backend):
    mid = backend.add("Alice likes green tea", user_id="u1", metadata={"speaker": "Alice"}, timestamp="2023-05-08T13:56:00")
    rec = backend.get(mid, user_id="u1")
    assert isinstance(rec, MemoryRecord)
    assert (rec.id, rec.user_id, rec.text, rec.metadata) == (mid, "u1", "Alice likes green tea", {"speaker": "Alice"})
    assert rec.created_at == rec.updated_at == "2023-05-08T13:56:00"
    assert len(rec.hash) == 64
    upd = backend.update(mid, "Alice likes black coffee", user_id="u1", actor="agent", source="turn-3")
    assert upd.text == "Alice likes black coffee" and upd.created_at == rec.created_at
    hits = backend.search("coffee", user_id="u1", k=3)
    assert [h.id for h in hits] == [mid] and isinstance(hits[0], SearchHit) and hits[0].score > 0
    gone = backend.delete(mid, user_id="u1")
    assert gone.text == "Alice likes black coffee"
    with pytest.raises(MemoryNotFound):
        backend.get(mid, user_id="u1")
    hist = backend.history(mid, user_id="u1")
    assert [h.event for h in hist] == ["ADD", "UPDATE", "DELETE"]
    assert isinstance(hist[0], HistoryEntry)
    assert (hist[1].old_text, hist[1].new_text, hist[1].actor, hist[1].source) == (
        "Alice likes green tea", "Alice likes black coffee", "agent", "turn-3")
    assert hist[2].old_text == "Alice likes black coffee" and hist[2].new_text is None
    assert backend.count() == 0 and backend.search("coffee", user_id="u1") == []


def test_search_order_list_count_stats(backend):
    store = backend
    ids = store.add_many(["the cat sat on the mat", "dogs bark loudly", "a cat and a dog"], user_id="u1",
                         timestamps=["2024-01-03T00:00:00", "2024-01-01T00:00:00", "2024-01-02T00:00:00"])
    store.add("cats everywhere", user_id="u2")
    hits = store.search("cat mat", user_id="u1", k=2)
    assert hits[0].id == ids[0] and len(hits) == 2 and hits[0].score >= hits[1].score
    assert [r.id for r in store.list("u1")] == [ids[1], ids[2], ids[0]]  # oldest first
    assert store.count() == 4 and store.count("u1") == 3 and store.count("nobody") == 0
    st = store.stats()
    assert st["n"] == 4 and st["users"] == 2 and st["index"] == "flat"
    assert store.dim == 64


def test_reopen_and_search_after_restart(tmp_path, embedder):
    with MemoryStore(tmp_path / "s", embedder=embedder) as s:
        ids = s.add_many([f"fact number {i} about topic {i % 7}" for i in range(50)], user_id="u1")
    with MemoryStore(tmp_path / "s", embedder=embedder) as s:
        assert s.count() == 50
        assert s.search("fact number 17 about topic 3", user_id="u1", k=1)[0].id == ids[17]
        s.delete(ids[17], user_id="u1")
    with MemoryStore(tmp_path / "s", embedder=embedder) as s:
        assert ids[17] not in [h.id for h in s.search("fact number 17 about topic 3", user_id="u1", k=5)]
        assert index_ids(s) == db_ids(s)


def test_apply_batch_and_atomicity(backend):
    a = backend.add("one", user_id="u1")
    b = backend.add("two", user_id="u1")
    other = backend.add("theirs", user_id="u2")
    before = snapshot(backend, "u1"), backend.count()
    bad_batches = [
        [Add(text="new"), Update(id=a, text="uno"), Delete(id=999)],            # unknown id
        [Add(text="new"), Update(id=other, text="mine now")],                   # other user's id
        [Delete(id=a), Update(id=a, text="resurrect")],                         # delete then update
        [Delete(id=a), Delete(id=a)],
    ]
    for ops in bad_batches:
        with pytest.raises(MemoryNotFound):
            backend.apply(ops, user_id="u1")
    for ops in ([Add(text="ok"), Update(id=a, text="   ")], [{"op": "ADD", "text": "x", "extra": 1}],
                [{"op": "MERGE", "id": a}], [Add(text="ok"), Add(text="")]):
        with pytest.raises(InvalidInput):
            backend.apply(ops, user_id="u1")
    assert (snapshot(backend, "u1"), backend.count()) == before
    assert backend.get(other, "u2").text == "theirs"
    res = backend.apply([Add(text="three", metadata={"k": 1}), Update(id=a, text="uno"), Update(id=a, text="eins"),
                       Delete(id=b), Noop(), {"op": "NOOP"}], user_id="u1", actor="agent", source="turn-9")
    assert [r.op for r in res] == ["ADD", "UPDATE", "UPDATE", "DELETE", "NOOP", "NOOP"]
    assert isinstance(res[0], AppliedOp) and res[0].new_text == "three"
    assert (res[2].old_text, res[2].new_text) == ("uno", "eins")
    assert backend.get(a, "u1").text == "eins" and backend.get(res[0].id, "u1").metadata == {"k": 1}
    with pytest.raises(MemoryNotFound):
        backend.get(b, "u1")
    assert [h.event for h in backend.history(a, "u1")] == ["ADD", "UPDATE", "UPDATE"]
    assert index_ids(backend) == db_ids(backend)
    hit = backend.search("eins", user_id="u1", k=1)[0]
    assert hit.id == a


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_user_isolation_hostile_mix(make_backend, embedder, kind):
    if kind == "hnsw" and make_backend.kind == "memory":
        pytest.skip("the in-memory store has only the exact index")
    s = make_backend(embedder, index=kind)
    texts = [f"bob note {i} pizza pasta" for i in range(990)]
    s.add_many(texts, user_id="bob")
    mine = s.add_many([f"alice memo {i} tea" for i in range(10)], user_id="alice")
    hits = s.search("pizza pasta note", user_id="alice", k=5)
    assert len(hits) == 5 and all(h.user_id == "alice" for h in hits)
    assert len(s.search("tea", user_id="alice", k=50)) == 10
    bob_id = s.list("bob")[0].id
    before = snapshot(s, "bob")
    for call in (lambda: s.get(bob_id, "alice"), lambda: s.update(bob_id, "hacked", "alice"),
                 lambda: s.delete(bob_id, "alice"), lambda: s.history(bob_id, "alice"),
                 lambda: s.apply([Delete(id=bob_id)], "alice"), lambda: s.get(mine[0], "bob")):
        with pytest.raises(MemoryNotFound):
            call()
    assert snapshot(s, "bob") == before and [h.event for h in s.history(bob_id, "bob")] == ["ADD"]
    s.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_metadata_filter_returns_k(make_backend, embedder, kind):
    if kind == "hnsw" and make_backend.kind == "memory":
        pytest.skip("the in-memory store has only the exact index")
    s = make_backend(embedder, index=kind)
    metas = [{"speaker": "Alice" if i % 10 == 0 else "Bob", "n": i, "flag": i % 2 == 0} for i in range(300)]
    s.add_many([f"holiday plan {i} beach" for i in range(300)], user_id="u1", metadatas=metas)
    hits = s.search("holiday plan beach", user_id="u1", k=8, filters={"speaker": "Alice"})
    assert len(hits) == 8 and all(h.metadata["speaker"] == "Alice" for h in hits)
    assert [h.metadata["n"] for h in s.search("x", "u1", k=3, filters={"n": 42})] == [42]
    flagged = s.search("holiday", "u1", k=300, filters={"flag": True, "speaker": "Alice"})
    assert len(flagged) == 30 and all(h.metadata["flag"] is True for h in flagged)
    assert s.search("holiday", "u1", k=5, filters={"speaker": "Carol"}) == []
    assert s.search("holiday", "u1", k=5, filters={"n": "42"}) == []  # types are not coerced
    with pytest.raises(InvalidInput):
        s.search("holiday", "u1", filters=["speaker"])
    s.close()


def test_hnsw_crud_and_tombstones(tmp_path, embedder):
    s = MemoryStore(tmp_path / "h", embedder=embedder, index="hnsw")
    ids = s.add_many([f"item {i} color {i % 5}" for i in range(200)], user_id="u1")
    for i in ids[:150]:  # crosses the compaction threshold repeatedly
        s.delete(i, user_id="u1")
    s.update(ids[160], "a brand new purple elephant", user_id="u1")
    assert s.search("purple elephant", "u1", k=1)[0].id == ids[160]
    hits = s.search("item color", "u1", k=100)
    assert len(hits) == 50 and set(h.id for h in hits) == set(ids[150:])
    s.close()
    with MemoryStore(tmp_path / "h", embedder=embedder, index="hnsw") as s2:
        assert len(s2.search("item color", "u1", k=100)) == 50 and index_ids(s2) == db_ids(s2)


def test_bad_input_raises_before_change(backend):
    mid = backend.add("keep me", user_id="u1")
    before = snapshot(backend, "u1")
    bad = [
        lambda: backend.add("", user_id="u1"), lambda: backend.add("   \n", user_id="u1"),
        lambda: backend.add(None, user_id="u1"), lambda: backend.add(42, user_id="u1"),
        lambda: backend.add("x", user_id=""), lambda: backend.add("x", user_id=None), lambda: backend.add("x", user_id=3),
        lambda: backend.add("x", user_id="u1", metadata=["a"]), lambda: backend.add("x", "u1", metadata={"a": object()}),
        lambda: backend.add("x", "u1", timestamp="yesterday"), lambda: backend.add_many("abc", user_id="u1"),
        lambda: backend.add_many(["ok", ""], user_id="u1"), lambda: backend.update(mid, "", user_id="u1"),
        lambda: backend.search("x", user_id="u1", k=0), lambda: backend.search("x", user_id="u1", k=-1),
        lambda: backend.search("", user_id="u1"), lambda: backend.get("1", user_id="u1"),
        lambda: backend.add_many(["a", "b"], user_id="u1", metadatas=[{}]),
    ]
    for call in bad:
        with pytest.raises(InvalidInput):
            call()
    with pytest.raises(MemoryNotFound):
        backend.update(12345, "x", user_id="u1")
    with pytest.raises(MemoryNotFound):
        backend.delete(12345, user_id="u1")
    with pytest.raises(EmbeddingDimensionMismatch):
        backend.add_many(["a"], user_id="u1", embeddings=np.ones((1, 7), np.float32))
    with pytest.raises(EmbeddingDimensionMismatch):
        backend.search_vector(np.ones(7, np.float32), user_id="u1")
    assert snapshot(backend, "u1") == before and backend.count() == 1


def test_given_embeddings_and_search_vector(backend):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 64)).astype(np.float32)
    ids = backend.add_many([f"t{i}" for i in range(20)], user_id="u1", embeddings=vecs)
    hit = backend.search_vector(vecs[7] * 3.0, user_id="u1", k=1)[0]  # re-normalised
    assert hit.id == ids[7] and hit.score == pytest.approx(1.0, abs=1e-5)


def test_unicode_and_large_texts(backend):
    texts = ["I ❤️ pizza 🍕🍕", "我喜欢吃饺子和面条", "אני אוהב פלאפל", "مرحبا بالعالم", "x" * 100_000,
             "mixed: Ünïcödé ñ 日本語 🎉 עברית"]
    ids = backend.add_many(texts, user_id="用户-🙂")
    for mid, text in zip(ids, texts):
        assert backend.get(mid, "用户-🙂").text == text
    assert backend.search("我喜欢吃饺子和面条", "用户-🙂", k=1)[0].id == ids[1]
    assert backend.search("אני אוהב פלאפל", "用户-🙂", k=1)[0].id == ids[2]
    assert backend.search("🍕🍕", "用户-🙂", k=1)[0].id == ids[0]
    big = backend.update(ids[4], "y" * 100_000, "用户-🙂")
    assert len(big.text) == 100_000


def test_export_import_roundtrip(tmp_path, embedder):
    src = MemoryStore(tmp_path / "src", embedder=embedder)
    a = src.add("Alice moved to Paris 🇫🇷", "u1", {"speaker": "Alice", "turn": 3}, timestamp="2023-01-01T10:00:00")
    src.update(a, "Alice moved to Lyon", "u1", source="turn-7")
    b = src.add("Bob likes 寿司", "u2")
    gone = src.add("temp", "u1")
    src.delete(gone, "u1")
    out = tmp_path / "dump.jsonl"
    assert src.export_jsonl(out) == 2
    for emb in (False, True):
        dump = tmp_path / f"dump{emb}.jsonl"
        src.export_jsonl(dump, include_embeddings=emb)
        dst = MemoryStore.import_jsonl(dump, tmp_path / f"dst{emb}", embedder=embedder)
        for uid in ("u1", "u2"):
            assert snapshot(dst, uid) == snapshot(src, uid)
            assert [r.created_at for r in dst.list(uid)] == [r.created_at for r in src.list(uid)]
        assert [(h.event, h.old_text, h.new_text, h.source) for h in dst.history(a, "u1")] == [
            (h.event, h.old_text, h.new_text, h.source) for h in src.history(a, "u1")]
        assert dst.search("Lyon", "u1", k=1)[0].id == a and dst.get(b, "u2").text == "Bob likes 寿司"
        # The deleted memory's events came along, and its id is never handed out again.
        assert [h.event for h in dst.history(gone, "u1")] == ["ADD", "DELETE"]
        with pytest.raises(MemoryNotFound):
            dst.history(gone, "u2")
        nxt = dst.add("after import", "u1")
        assert nxt > gone > b  # ids keep growing after the imported ones, deleted ones included
        with pytest.raises(InvalidInput):  # importing again collides on ids: nothing changes
            dst.import_jsonl(dump, tmp_path / f"dst{emb}", embedder=embedder)
        assert dst.count() == 3
        dst.close()
    src.close()


def test_schema_too_new(tmp_path, embedder):
    MemoryStore(tmp_path / "s", embedder=embedder).close()
    conn = sqlite3.connect(tmp_path / "s" / "memories.db")
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew):
        MemoryStore(tmp_path / "s", embedder=embedder)


def test_dimension_mismatch_on_reopen(tmp_path, embedder):
    with MemoryStore(tmp_path / "s", embedder=embedder) as s:
        s.add("hello", "u1")
    with pytest.raises(EmbeddingDimensionMismatch):
        MemoryStore(tmp_path / "s", embedder=HashingEmbedder(dim=32))
    with MemoryStore(tmp_path / "s", embedder=embedder) as s:  # unchanged, still usable
        assert s.count() == 1
    with MemoryStore(tmp_path / "s") as s:  # vector-only: dim comes from the folder
        assert s.dim == 64 and len(s.search_vector(np.ones(64), "u1")) == 1


def test_closed_store_and_context_manager(tmp_path, embedder):
    from memory_store import StoreError

    with MemoryStore(tmp_path / "s", embedder=embedder) as s:
        s.add("x", "u1")
    s.close()  # idempotent
    with pytest.raises(StoreError):
        s.add("y", "u1")
    with pytest.raises(InvalidInput):
        MemoryStore(tmp_path / "t", embedder=embedder, index="ivf")
    with pytest.raises(StoreError):  # a new store needs a width; nothing is created
        MemoryStore(tmp_path / "u")
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_sub_index_remove_matches_brute_force(kind):
    from memory_store.index import VectorIndex

    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(600, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx = VectorIndex(16, kind)
    idx.add("u", np.arange(1, 601), vecs)
    alive = set(range(1, 601))
    for step in range(3):  # < 20% per round for hnsw: exercises tombstones before compaction
        gone = rng.choice(sorted(alive), size=40, replace=False).tolist()
        idx.remove(gone)
        alive -= set(gone)
        for probe in gone[:10] + sorted(alive)[:10]:
            q = vecs[probe - 1]
            ids, scores = idx.search("u", q, 10)
            live = np.array(sorted(alive))
            exact = live[np.argsort(-(vecs[live - 1] @ q))[:10]]
            assert len(ids) == 10 and not set(ids.tolist()) - alive
            if kind == "flat":
                assert ids.tolist() == exact.tolist()
            else:
                assert len(set(ids.tolist()) & set(exact.tolist())) >= 8
    assert set(idx.owner) == alive and len(idx) == len(alive)


def test_user_id_is_required_everywhere(backend):
    """No method falls back to a default user: forgetting user_id is a TypeError, not a write to someone's memory."""
    mid = backend.add("Alice lives in Paris", "alice")
    for call in (lambda: backend.add("x"), lambda: backend.get(mid), lambda: backend.search("Paris"),
                 lambda: backend.delete(mid), lambda: backend.history(mid), lambda: backend.list()):
        with pytest.raises(TypeError):
            call()
    assert backend.count() == 1


def test_receipts_make_a_retried_batch_exactly_once(backend):
    from memory_store import AlreadyApplied

    a = backend.apply([Add(text="one")], "u1", receipts=["job:0"])[0].id
    assert backend.receipts("u1", ["job:0", "job:1"]) == {"job:0"} and backend.receipts("u2", ["job:0"]) == set()
    with pytest.raises(AlreadyApplied) as info:
        backend.apply([Add(text="two")], "u1", receipts=["job:1", "job:0"])
    assert info.value.keys == ["job:0"] and backend.count("u1") == 1
    assert backend.receipts("u1", ["job:1"]) == set()  # nothing of the refused batch was recorded
    backend.delete(a, "u1")
    with pytest.raises(AlreadyApplied):  # a retry is recognised before its ids are checked
        backend.apply([Update(id=a, text="uno")], "u1", receipts=["job:0"])
    assert backend.apply([], "u1", receipts=["job:2"]) == [] and backend.receipts("u1", ["job:2"]) == {"job:2"}
    backend.apply([Add(text="theirs")], "u2", receipts=["job:0"])  # receipts are per user
    with pytest.raises(InvalidInput):
        backend.apply([], "u1", receipts=["dup", "dup"])


def test_in_memory_fork_is_copy_on_write(embedder):
    from memory_store import InMemoryStore

    base = InMemoryStore(embedder)
    a = base.add("Alice lives in Paris", "u1", {"speaker": "Alice"}, timestamp="2023-01-01T00:00:00")
    child = base.fork()
    assert child._records is base._records  # shared until a write
    applied = child.apply([Update(id=a, text="Alice lives in Berlin"), Add(text="Alice has a cat")], "u1")
    assert [x.op for x in applied] == ["UPDATE", "ADD"]
    assert [r.text for r in base.list("u1")] == ["Alice lives in Paris"]  # the parent is untouched
    assert base.search("Berlin", "u1", k=5)[0].text == "Alice lives in Paris"
    assert [h.event for h in base.history(a, "u1")] == ["ADD"]
    assert [r.text for r in child.list("u1")] == ["Alice lives in Berlin", "Alice has a cat"]
    grandchild = child.fork()
    base.delete(a, "u1")  # a write to the parent after its fork leaves the fork alone
    assert child.get(a, "u1").text == "Alice lives in Berlin"
    assert grandchild.count("u1") == 2 and base.count("u1") == 0
    # each fork continues the id sequence from the fork point, independently
    assert base.add("new", "u1") == applied[1].id and child.add("other", "u1") == applied[1].id + 1
    with pytest.raises(MemoryNotFound):
        child.apply([Delete(id=a), Add(text="half")], "u2")  # other user's id: nothing applied
    assert child.count() == 3
