"""Keyword (FTS5) and hybrid search: in step with the truth, scoped per user, safe queries, RRF."""

from __future__ import annotations

import json
import sqlite3

import pytest

from memory_store import InMemoryStore, InvalidInput, MemoryStore, rrf
from memory_store.keyword import FTS_TABLE, fts_problem, fts_query, ranked_search


def ids(hits):
    return [h.id for h in hits]


# ------------------------------------------------------------------ RRF


@pytest.mark.parametrize(("rankings", "k", "expected"), [
    ([], 60, []),
    ([[1, 2, 3]], 60, [1, 2, 3]),
    ([[1, 2], [2, 1]], 60, [1, 2]),          # equal sums: 1 was ranked first in the earlier list
    ([[1, 2, 3], [3, 2]], 60, [3, 2, 1]),    # in both lists beats first in one (1/63+1/61 > 2/62)
    ([[1, 2, 3], [3]], 0, [3, 1, 2]),        # k=0: 3 gets 1/3 + 1/1, 1 gets 1/1
    ([[5, 5, 6]], 60, [5, 6]),               # a duplicate counts once, at its best rank
    ([[7], [8]], 60, [7, 8]),                # same score, same best rank: the earlier list wins
    ([[9, 8], [8, 9]], 60, [9, 8]),
])
def test_rrf_table(rankings, k, expected):
    assert [i for i, _ in rrf(rankings, k=k)] == expected


def test_rrf_scores_are_the_reciprocal_rank_sums():
    fused = dict(rrf([[1, 2], [2]], k=60))
    assert fused[1] == pytest.approx(1 / 61) and fused[2] == pytest.approx(1 / 62 + 1 / 61)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "60"])
def test_rrf_refuses_a_bad_k(bad):
    with pytest.raises(ValueError):
        rrf([[1]], k=bad)


def test_ranked_search_dispatch():
    vec = lambda n: [(1, 0.9), (2, 0.8), (3, 0.7)][:n]  # noqa: E731
    kw = lambda n: [(3, 5.0), (4, 4.0)][:n]  # noqa: E731
    assert [i for i, _ in ranked_search("vector", 2, vec, kw)] == [1, 2]
    assert [i for i, _ in ranked_search("keyword", 2, vec, kw)] == [3, 4]
    assert [i for i, _ in ranked_search("hybrid", 2, vec, kw)] == [3, 1]
    with pytest.raises(ValueError):
        ranked_search("bm25", 2, vec, kw)


# ------------------------------------------------------------------ query sanitising


@pytest.mark.parametrize(("text", "expected"), [
    ("Where does Caroline live?", '"caroline" OR "live"'),
    ('say "hi" NEAR(a b) x:y', '"say" OR "hi" OR "near" OR "b" OR "x" OR "y"'),
    ("what is it?", '"what" OR "is" OR "it"'),  # only function words: still a query
    ("?!:*^()", None),
    ("", None),
    ("LGBTQ 2022 café", '"lgbtq" OR "2022" OR "café"'),
])
def test_fts_query_quotes_every_term(text, expected):
    assert fts_query(text) == expected


HOSTILE_QUERIES = ['"', '""', "'", "a:b", "text:foo", "ukey:u00", "NEAR(a b, 2)", "a AND", "OR OR", "NOT x",
                   "x*", "^start", "-minus", "(unbalanced", "{col}: x", "a + b", "\\", "\x00nul", "caroline\" OR \"x",
                   "SELECT * FROM memories; --", "🙂 emoji", "\u202eRTL"]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_fts_syntax_in_queries_is_text(make_backend, embedder, query):
    s = make_backend(embedder)
    s.add_many(["Caroline went to the LGBTQ support group", "a plain memory about text and columns"], "u1")
    s.add("ukey text of another user", "u2")
    for mode in ("keyword", "hybrid"):
        hits = s.search(query, "u1", k=5, mode=mode)  # never an FTS syntax error
        assert all(h.user_id == "u1" for h in hits)


def test_keyword_finds_rare_words_the_vector_misses(make_backend, embedder):
    s = make_backend(embedder)
    texts = [f"filler memory number {i} about the weather" for i in range(50)] + ["Caroline joined the LGBTQ group"]
    got = s.add_many(texts, "u1")
    assert ids(s.search("lgbtq", "u1", k=1, mode="keyword")) == [got[-1]]
    assert got[-1] in ids(s.search("lgbtq", "u1", k=3, mode="hybrid"))
    hit = s.search("LGBTQ group", "u1", k=1, mode="keyword")[0]
    assert hit.score > 0  # flipped BM25: higher is better in every mode


def test_keyword_stemming_and_diacritics(make_backend, embedder):
    s = make_backend(embedder)
    a = s.add("She loves painting sunsets at the cafe", "u1")
    assert ids(s.search("paintings", "u1", mode="keyword")) == [a]
    assert ids(s.search("café", "u1", mode="keyword")) == [a]


def test_modes_are_validated(backend):
    backend.add("x", "u1")
    for bad in ("bm25", None, "", ["hybrid"]):
        with pytest.raises(InvalidInput):
            backend.search("x", "u1", mode=bad)


def test_keyword_mode_needs_no_embedding(tmp_path, embedder):
    MemoryStore(tmp_path / "s", embedder=embedder).close()
    with MemoryStore(tmp_path / "s") as s:  # opened without an embedder
        s.add_many(["alpha beta"], "u1", embeddings=embedder.embed(["alpha beta"]))
        assert len(s.search("alpha", "u1", mode="keyword")) == 1


# ------------------------------------------------------------------ in step with the truth


def keyword_ids(s, word, user="u1"):
    return sorted(ids(s.search(word, user, k=100, mode="keyword")))


def test_fts_follows_add_update_delete_apply(make_backend, embedder):
    s = make_backend(embedder)
    a = s.add("apple orchard visit", "u1")
    b, c = s.add_many(["banana bread recipe", "cherry pie"], "u1")
    assert keyword_ids(s, "apple") == [a] and keyword_ids(s, "banana") == [b]
    s.update(a, "durian market", "u1")
    assert keyword_ids(s, "apple") == [] and keyword_ids(s, "durian") == [a]
    s.delete(b, "u1")
    assert keyword_ids(s, "banana") == []
    applied = s.apply([{"op": "ADD", "text": "elderberry wine"}, {"op": "UPDATE", "id": c, "text": "fig jam"},
                       {"op": "DELETE", "id": a}], "u1")
    assert keyword_ids(s, "elderberry") == [applied[0].id]
    assert keyword_ids(s, "cherry") == [] and keyword_ids(s, "fig") == [c] and keyword_ids(s, "durian") == []


def test_failed_batch_leaves_fts_untouched(make_backend, embedder):
    s = make_backend(embedder)
    a = s.add("apple", "u1")
    with pytest.raises(Exception):
        s.apply([{"op": "ADD", "text": "kiwi"}, {"op": "UPDATE", "id": a + 99, "text": "lime"}], "u1")
    assert keyword_ids(s, "kiwi") == [] and keyword_ids(s, "apple") == [a]


def test_fts_follows_import(tmp_path, embedder):
    with MemoryStore(tmp_path / "a", embedder=embedder) as s:
        s.add_many(["quokka sighting", "wombat burrow"], "u1")
        s.export_jsonl(tmp_path / "x.jsonl")
    with MemoryStore.import_jsonl(tmp_path / "x.jsonl", tmp_path / "b", embedder=embedder) as t:
        assert len(keyword_ids(t, "quokka")) == 1 and len(keyword_ids(t, "wombat")) == 1


@pytest.mark.parametrize("damage", ["drop table", "drop trigger", "stale rows"])
def test_missing_or_stale_fts_is_rebuilt_on_open(tmp_path, embedder, damage):
    path = tmp_path / "s"
    with MemoryStore(path, embedder=embedder) as s:
        a, b = s.add_many(["narwhal tusk", "okapi forest"], "u1")
    conn = sqlite3.connect(path / "memories.db")
    if damage == "drop table":
        conn.execute(f"DROP TABLE {FTS_TABLE}")
    elif damage == "drop trigger":
        conn.execute("DROP TRIGGER memories_fts_ai")
    else:  # the index forgets one memory
        conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text, ukey) VALUES ('delete', ?, 'okapi forest', "
                     "(SELECT ukey FROM memories WHERE id = ?))", [b, b])
    conn.commit()
    conn.close()
    with MemoryStore(path, embedder=embedder) as s:
        assert fts_problem(s._db.conn) is None
        assert keyword_ids(s, "narwhal") == [a] and keyword_ids(s, "okapi") == [b]
        c = s.add("pangolin scales", "u1")  # the triggers are back too
        assert keyword_ids(s, "pangolin") == [c]


def test_v1_store_gains_a_keyword_index(tmp_path, embedder):
    path = tmp_path / "s"
    with MemoryStore(path, embedder=embedder) as s:
        a = s.add("axolotl pond", "u1")
    conn = sqlite3.connect(path / "memories.db")  # make it look like a store written before FTS
    for t in ("memories_fts_ai", "memories_fts_ad", "memories_fts_au"):
        conn.execute(f"DROP TRIGGER {t}")
    conn.execute(f"DROP TABLE {FTS_TABLE}")
    conn.execute("DROP TABLE receipts")  # schema 3
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with MemoryStore(path, embedder=embedder) as s:
        assert keyword_ids(s, "axolotl") == [a]


# ------------------------------------------------------------------ isolation


@pytest.mark.parametrize("mode", ["keyword", "hybrid", "vector"])
def test_isolation_when_another_user_owns_99_percent(make_backend, embedder, mode):
    s = make_backend(embedder)
    secret = "the launch code is zebra falcon 7781"
    s.add_many([secret + f" copy {i}" for i in range(990)], "hostile")
    mine = s.add_many([f"my note {i} about zebra falcon" for i in range(10)], "me")
    for query in ("zebra falcon 7781 launch code", secret, "copy", "ukey", "hostile"):
        hits = s.search(query, "me", k=50, mode=mode)
        assert {h.user_id for h in hits} <= {"me"} and set(ids(hits)) <= set(mine)
        if "zebra" in query:
            assert len(hits) == 10
    assert s.search("copy 5", "nobody", k=5, mode=mode) == []


def test_user_ids_that_look_alike_stay_apart(make_backend, embedder):
    s = make_backend(embedder)
    a = s.add("ibis note", "u1")
    s.add("ibis note", "u1 ")  # another user whose id differs only by a space
    s.add("ibis note", "U1")
    assert keyword_ids(s, "ibis", "u1") == [a]


def test_in_memory_keyword_matches_the_durable_store(tmp_path, embedder):
    texts = [f"{w} memory {i}" for i, w in enumerate(["heron", "egret", "heron egret", "stork", "heron"] * 4)]
    durable, mem = MemoryStore(tmp_path / "s", embedder=embedder), InMemoryStore(embedder)
    try:
        for s in (durable, mem):
            s.add_many(texts, "u1", metadatas=[{"n": i} for i in range(len(texts))])
        for mode in ("keyword", "hybrid"):
            for q in ("heron", "egret stork", "memory 3"):
                a, b = durable.search(q, "u1", k=7, mode=mode), mem.search(q, "u1", k=7, mode=mode)
                assert ids(a) == ids(b) and [h.score for h in a] == pytest.approx([h.score for h in b])
    finally:
        durable.close()


def test_fork_keeps_keyword_index_private(embedder):
    parent = InMemoryStore(embedder)
    a = parent.add("gecko", "u1")
    child = parent.fork()
    child.add("gecko two", "u1")
    child.delete(a, "u1")
    assert keyword_ids(parent, "gecko") == [a]
    assert len(keyword_ids(child, "gecko")) == 1 and keyword_ids(child, "gecko") != [a]
    parent.update(a, "iguana", "u1")
    assert keyword_ids(child, "iguana") == []


def test_metadata_json_survives_in_memory_mirror(embedder):
    s = InMemoryStore(embedder)
    s.add("x", "u1", {"nested": {"a": [1, 2]}, "ü": "ö"})
    row = s._sql.execute("SELECT metadata FROM memories").fetchone()[0]
    assert json.loads(row) == {"nested": {"a": [1, 2]}, "ü": "ö"}


@pytest.mark.parametrize("call", [
    lambda s: s.add("beta caroline", "u", {"k\ud800": 1}),
    lambda s: s.add("beta \ud800 caroline", "u"),
    lambda s: s.add_many(["beta", "gam\ud800ma"], "u"),
    lambda s: s.add("beta", "u\ud800"),
])
def test_unencodable_text_is_refused_and_changes_nothing(make_backend, embedder, call):
    s = make_backend(embedder)
    s.add("alpha", "u")
    with pytest.raises(InvalidInput):
        call(s)
    assert s.count() == 1 and [h.text for h in s.search("alpha", "u", mode="keyword")] == ["alpha"]
    with pytest.raises(InvalidInput):
        s.search("beta", "u\ud800", mode="keyword")
