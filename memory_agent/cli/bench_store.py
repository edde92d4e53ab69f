"""``memory-agent bench store``: time the FAISS + SQLite memory store.

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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def store(n: int, index: str, dim: int, queries: int, deletes: int, ef_search: int | None, ef_sweep: str,
          path: str | None, seed: int, no_fts_baseline: bool, as_json: bool) -> None:
    """Add/search/delete throughput and latency of memory_store."""
    from memory_store.bench import run_store_benchmark

    try:
        sweep = [int(x) for x in ef_sweep.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {ef_sweep!r}", param_hint="--ef-sweep")
    if any(x < 1 for x in sweep):
        raise click.BadParameter("efSearch values must be >= 1", param_hint="--ef-sweep")
    if sweep and index != "hnsw":
        raise click.BadParameter("only the hnsw index has an efSearch", param_hint="--ef-sweep")

    result = run_store_benchmark(n, dim=dim, index=index, queries=queries, deletes=deletes, path=path,
                                 ef_search=ef_search, ef_sweep=sweep, seed=seed, fts_baseline=not no_fts_baseline,
                                 progress=lambda msg: click.echo(f"[bench store] {msg}", err=True))
    if as_json:
        click.echo(json.dumps(result))
        return
    width = max(len(key) for key in result)
    click.echo(f"memory_store benchmark ({index}, n={n:,}, dim={dim})")
    for key, value in result.items():
        shown = f"{value:,.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        click.echo(f"  {key:<{width}}  {shown}")
