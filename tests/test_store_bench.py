"""The store benchmark function and its CLI wrapper, on a tiny store (no timing asserts)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memory_store.bench import run_store_benchmark

KEYS = {"n", "dim", "index", "add_per_s", "search_p50_ms", "search_p99_ms", "numpy_scan_p50_ms",
        "delete_p50_ms", "recall_at_10"}


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_benchmark_function(tmp_path, index):
    res = run_store_benchmark(400, dim=32, index=index, queries=5, deletes=5, path=tmp_path / "b", chunk=150)
    assert KEYS <= res.keys() and res["n"] == 400 and res["index"] == index
    assert res["count_after"] == 395 and res["recall_at_10"] >= (1.0 if index == "flat" else 0.5)


def test_benchmark_cli_json_and_table():
    from memory_agent.cli.bench_store import store

    runner = CliRunner()
    res = runner.invoke(store, ["--n", "200", "--dim", "16", "--queries", "3", "--deletes", "3", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert KEYS <= data.keys() and data["n"] == 200
    res = runner.invoke(store, ["--n", "100", "--dim", "16", "--queries", "3", "--deletes", "3", "--index", "hnsw"])
    assert res.exit_code == 0 and "search_p50_ms" in res.stdout
