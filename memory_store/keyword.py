"""Keyword search: an SQLite FTS5 index inside the truth, and rank fusion with the vectors.

Why FTS5 in the same database: a keyword index that lives elsewhere drifts
from the memories. Here ``memories_fts`` (an external-content index: it
reads the text from ``memories``, no copy) is kept in step by triggers on the
``memories`` table, so every write path (``apply``, ``add_many``, imports, a
process killed mid-batch) changes both in the same transaction or neither.
On open, :func:`fts_problem` finds a missing table or trigger, an older
layout or a row count that disagrees with ``memories``, and :func:`repair_fts`
rebuilds the index from the truth.

Names, dates, numbers and rare words ("Caroline", "LGBTQ", "2022") are
where a small embedder misses and BM25 does not. The tokenizer is Porter
stemming over unicode61 with diacritics folded ("paintings" finds "painting",
"café" finds "cafe").

Scoping: each row also carries ``ukey``, a token derived from its user id,
and every query is ``ukey:<token> AND (...)``. FTS intersects the posting
lists, so a search costs what the *user's* matching rows cost even when
another user owns 99% of the table, and the SQL join re-checks ``user_id``
against the truth. (BM25's document frequencies are table-wide: another
user's rows shift weights, never which rows are returned.)

Queries are never passed to FTS5 as syntax: :func:`fts_query` keeps word
characters only, drops a short list of function words and quotes every
term, so quotes, colons, ``NEAR``, ``*`` or ``-`` in a question are text.

:func:`rrf` fuses ranked lists (reciprocal rank fusion: Cormack, Clarke and
Buettcher, SIGIR 2009), the way Zep and Graphiti merge keyword and vector
results; it needs no score calibration between BM25 and cosine.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "SEARCH_MODES",
    "RRF_K",
    "FTS_TABLE",
    "FTS_DDL",
    "FTS_TRIGGERS",
    "user_key",
    "fts_query",
    "query_terms",
    "fts_problem",
    "repair_fts",
    "ranked_search",
    "keyword_ranked",
    "rrf",
    "HYBRID_DEPTH",
]

#: The modes of ``store.search``.
SEARCH_MODES = ("hybrid", "vector", "keyword")
#: RRF's damping constant. The paper's 60 was set for fusing many ranked runs; with two
#: lists it flattens ranks so much that middling hits found by both outrank the best
#: hit of either. 1 was picked on the train conversation and confirmed on val (never
#: dev); the sweep is in docs/retrieval.md.
RRF_K = 1
FTS_TABLE = "memories_fts"
_MAX_TERMS = 64  # a pasted document is not a query: keep the first terms only
_MAX_LIMIT = 2**31 - 1  # SQLite's LIMIT is a 64-bit int; a huge k means "all", not an overflow

# Function words that match nearly every memory; BM25 would weigh them near zero
# anyway, but each one still costs a posting-list scan.
_STOP = frozenset("""
a an and are as at be been being but by can could did do does doing done for from had has have having he her
hers him his how i if in into is it its me my of on or our she so than that the their them then there these
they this those to was we were what when where which who whom whose why will with would you your yours
""".split())
_WORD = re.compile(r"\w+", re.UNICODE)

# External content: the index reads text from ``memories`` (no second copy of every
# memory); ``ukey`` is a virtual generated column of ``memories``, computed, not stored.
UKEY_COLUMN = "ALTER TABLE memories ADD COLUMN ukey TEXT GENERATED ALWAYS AS ('u' || lower(hex(user_id))) VIRTUAL"
FTS_DDL = f"""
CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(
    text, ukey, content = 'memories', content_rowid = 'id', tokenize = 'porter unicode61 remove_diacritics 2');
CREATE TRIGGER memories_fts_ai AFTER INSERT ON memories BEGIN
    INSERT INTO {FTS_TABLE}(rowid, text, ukey) VALUES (new.id, new.text, new.ukey);
END;
CREATE TRIGGER memories_fts_ad AFTER DELETE ON memories BEGIN
    INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text, ukey) VALUES ('delete', old.id, old.text, old.ukey);
END;
CREATE TRIGGER memories_fts_au AFTER UPDATE OF text, user_id ON memories BEGIN
    INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text, ukey) VALUES ('delete', old.id, old.text, old.ukey);
    INSERT INTO {FTS_TABLE}(rowid, text, ukey) VALUES (new.id, new.text, new.ukey);
END;
"""
FTS_TRIGGERS = ("memories_fts_ai", "memories_fts_ad", "memories_fts_au")
_SIGNATURE = "content = 'memories'"  # an index created otherwise (an older layout) is rebuilt


def user_key(user_id: str) -> str:
    """The FTS token of a user: the same bytes SQLite's ``'u' || lower(hex(user_id))`` gives."""
    return "u" + user_id.encode("utf-8").hex()


def fts_query(text: str) -> str | None:
    """A safe FTS5 expression matching any of the text's content words; None if it has none.

    Every term is a quoted string, so nothing in ``text`` is read as FTS5
    syntax (operators, column filters, prefix stars, quotes).
    """
    terms = query_terms(text)
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def query_terms(text: str) -> list[str]:
    """The distinct content words of a query (casefolded, function words dropped, at most 64).

    Both keyword indexes search for these (SQLite's FTS5 here, PostgreSQL's
    tsvector in :mod:`memory_store.postgres`), each as plain text.
    """
    words = [w.casefold() for w in _WORD.findall(text)]
    terms = list(dict.fromkeys(w for w in words if w not in _STOP))
    if not terms:
        terms = list(dict.fromkeys(words))  # a question made only of function words still searches
    return terms[:_MAX_TERMS]


def fts_problem(conn: sqlite3.Connection) -> str | None:
    """Why the keyword index cannot be trusted (missing table or trigger, rows off), or None."""
    have = {r[0]: r[1] for r in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE name = ? OR (type = 'trigger' AND tbl_name = 'memories')",
        [FTS_TABLE])}
    if FTS_TABLE not in have:
        return "the keyword index is missing"
    if _SIGNATURE not in (have[FTS_TABLE] or ""):
        return "the keyword index has an older layout"
    if not set(FTS_TRIGGERS) <= set(have):
        return "a keyword index trigger is missing"
    # docsize holds one row per indexed memory (count(*) on the index itself would read memories)
    n_mem = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    n_fts = conn.execute(f"SELECT count(*) FROM {FTS_TABLE}_docsize").fetchone()[0]
    if n_mem != n_fts:
        return f"the keyword index has {n_fts} rows for {n_mem} memories"
    return None


def repair_fts(conn: sqlite3.Connection) -> None:
    """Recreate the keyword index and its triggers from ``memories`` (caller holds a write transaction)."""
    for name in FTS_TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    conn.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    columns = {r[1] for r in conn.execute("PRAGMA table_xinfo(memories)")}
    if "ukey" not in columns:
        conn.execute(UKEY_COLUMN)
    for stmt in _statements(FTS_DDL):
        conn.execute(stmt)
    conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")


def _statements(script: str) -> list[str]:
    """Split the DDL into statements (``executescript`` would COMMIT the caller's transaction)."""
    out, buf = [], ""
    for line in script.strip().splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):  # SQLite's own reading: a trigger body ends at END;
            out.append(buf.strip())
            buf = ""
    return out


def keyword_ranked(conn: sqlite3.Connection, query: str, user_id: str, n: int,
                   where: str = "1", params: Sequence[Any] = ()) -> list[tuple[int, float]]:
    """The user's ``n`` best BM25 matches as ``(id, score)``, higher score better.

    ``where``/``params`` is an extra condition over ``memories m`` (a compiled
    filter); it is applied before the limit, so a filter never starves the result.
    """
    expr = fts_query(query)
    if expr is None:
        return []
    # The column filter keeps the terms out of the ukey column: half the posting lists to read.
    match = f'ukey : "{user_key(user_id)}" AND text : ({expr})'
    rows = conn.execute(
        f"SELECT m.id, bm25({FTS_TABLE}, 1.0, 0.0) AS s FROM {FTS_TABLE} JOIN memories m ON m.id = {FTS_TABLE}.rowid"
        f" WHERE {FTS_TABLE} MATCH ? AND m.user_id = ? AND {where} ORDER BY s, m.id LIMIT ?",
        [match, user_id, *params, min(n, _MAX_LIMIT)]).fetchall()
    # FTS5's bm25() is "lower is better"; flip it so every mode's score grows with relevance.
    return [(int(i), -float(s)) for i, s in rows]


def rrf(rankings: Iterable[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of best-first id lists -> ``(id, score)`` best first.

    ``score(id) = sum over lists of 1 / (k + rank)``, rank from 1. Ties go to the
    id ranked best in any list, then to the earlier list, then the smaller id.
    Duplicates inside one list count once (their best rank).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    scores: dict[int, float] = {}
    first: dict[int, tuple[int, int]] = {}
    for li, ranking in enumerate(rankings):
        seen: set[int] = set()
        for rank, mid in enumerate(ranking, start=1):
            if mid in seen:
                continue
            seen.add(mid)
            scores[mid] = scores.get(mid, 0.0) + 1.0 / (k + rank)
            if mid not in first or (rank, li) < first[mid]:
                first[mid] = (rank, li)
    return sorted(scores.items(), key=lambda kv: (-kv[1], first[kv[0]], kv[0]))


#: Hybrid search fuses this many candidates from each list per result wanted.
HYBRID_DEPTH = 2


def ranked_search(mode: str, k: int, vector: Any, keyword: Any) -> list[tuple[int, float]]:
    """Dispatch one search mode over a store's two ranked lists -> ``(id, score)`` best first.

    ``vector(n)`` and ``keyword(n)`` return a store's n best ``(id, score)``
    (filter and user already applied). Hybrid takes ``HYBRID_DEPTH * k`` from
    each and fuses them with :func:`rrf`; its score is the RRF score.
    """
    if mode == "vector":
        return vector(k)
    if mode == "keyword":
        return keyword(k)
    if mode != "hybrid":
        raise ValueError(f"unknown search mode {mode!r}")
    n = min(HYBRID_DEPTH * k, _MAX_LIMIT)
    return rrf([[i for i, _ in vector(n)], [i for i, _ in keyword(n)]])[:k]
