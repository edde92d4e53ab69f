"""``memory-agent bench serve``: a short run is clean (no errors, every acknowledged turn applied exactly once).

Timing is not asserted here: the numbers are the benchmark's output (docs/service.md).
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from memory_agent.cli import cli
from memory_agent.service.bench import percentile


def test_a_short_serve_bench_loses_and_duplicates_nothing():
    result = CliRunner().invoke(cli, ["bench", "serve", "--json", "--clients", "4", "--seconds", "3",
                                      "--users", "3", "--seed-memories", "5"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["errors"] == 0 and report["errors_by_kind"] == {}
    turns = report["turns"]
    assert turns["acknowledged"] > 0 and turns["acknowledged"] % 2 == 0  # two turns per enqueue
    assert turns["applied"] == turns["acknowledged"]
    assert turns["lost"] == turns["duplicated"] == turns["unexpected_memories"] == 0
    assert report["drained"] and report["jobs"] == {"done": report["enqueue"]["n"] + 3}  # + one seed job per user
    assert report["search"]["n"] > 0 and report["search"]["p99_ms"] >= report["search"]["p50_ms"] > 0
    assert report["search_hits_per_request"] > 0
    assert report["machine"]["cpu_count"] >= 1 and report["ok"] is True


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0 and percentile([], 50) is None
