"""``memory-agent bench serve``: a loopback load test of the memory service (``memory_agent.service.bench``).

Searches and turn enqueues from concurrent clients for a bounded time, then a
check that every acknowledged turn was applied exactly once. Prints one JSON
object with ``--json``; exits 1 when there were errors, lost or duplicated turns.
"""

from __future__ import annotations

import click

from memory_agent.cli.options import emit_json, json_option

__all__ = ["serve_bench"]


@click.command("serve")
@click.option("--clients", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Concurrent clients, each in a closed loop (one request at a time, no pause).")
@click.option("--seconds", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True,
              help="How long the clients send requests (the queue is drained afterwards).")
@click.option("--turn-ratio", type=click.FloatRange(0.0, 1.0), default=0.2, show_default=True,
              help="Share of requests that enqueue turns; the rest are searches.")
@click.option("--users", type=click.IntRange(1, 10_000), default=8, show_default=True,
              help="Users the requests are spread over.")
@click.option("--seed-memories", type=click.IntRange(0, 10_000), default=50, show_default=True,
              help="Memories each user has before the clock starts.")
@json_option
def serve_bench(clients: int, seconds: float, turn_ratio: float, users: int, seed_memories: int,
                as_json: bool) -> None:
    """Load-test the service on loopback (echo model, hashing embedder) and check exactly-once ingestion."""
    from memory_agent.service.bench import run_serve_bench

    report = run_serve_bench(clients, seconds, turn_ratio, users=users, seed_memories=seed_memories)
    if as_json:
        emit_json(report)
    else:
        for k, v in report.items():
            click.echo(f"{k:>24}: {v}")
    if not report["ok"]:
        raise SystemExit(1)
