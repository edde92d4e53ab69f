"""``memory-agent migrate``: move a store between a folder (SQLite + FAISS) and PostgreSQL, either way."""

from __future__ import annotations

import click

from memory_agent.cli.options import emit_json, json_option

__all__ = ["migrate"]


@click.command()
@click.option("--from", "source", required=True, metavar="DIR|URL",
              help="The store to copy: a folder or postgresql:// URL.")
@click.option("--to", "target", required=True, metavar="DIR|URL",
              help="A new or empty store: a folder or postgresql:// URL "
              "(password from the URL, $PGPASSWORD or ~/.pgpass).")
@click.option("--index", type=click.Choice(["flat", "hnsw"]), default=None,
              help="Vector index of the target (default: flat, exact).")
@json_option
def migrate(source: str, target: str, index: str | None, as_json: bool) -> None:
    """Copy every memory with its id, times, metadata, embedding and history into another store."""
    from memory_agent.cli.options import require_store
    from memory_store.migrate import migrate_store

    require_store(source)
    summary = migrate_store(source, target, index=index)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"moved {summary['memories']} memories of {summary['users']} users with their history "
               f"from {summary['from']} to {summary['to']}")
