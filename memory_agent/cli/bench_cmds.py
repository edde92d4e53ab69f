"""``memory-agent bench ...``: benchmark commands that print JSON.

Speed and memory targets are measured here, never in timed tests. Each
benchmark lives in its own module and is imported only when run.
"""

from __future__ import annotations

import click

from memory_agent.cli import LazyGroup

__all__ = ["bench"]

BENCHMARKS: dict[str, str] = {
    "store": "memory_agent.cli.bench_store:store",
    "ingest": "memory_agent.cli.bench_ingest:ingest",
    "rlm": "memory_agent.cli.bench_rlm:rlm_bench",
    "train-step": "memory_agent.cli.bench_train:train_step",
    "serve": "memory_agent.cli.bench_serve:serve_bench",
}


class _BenchGroup(LazyGroup):
    commands_map = BENCHMARKS


@click.group(cls=_BenchGroup)
def bench() -> None:
    """Benchmarks (store, ingest, rlm, train-step, serve); each prints one JSON object with --json."""
