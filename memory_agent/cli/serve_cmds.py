"""``memory-agent serve``, ``memory-agent keys`` and ``memory-agent mcp``: the memory service.

Imported only when one of these commands runs: FastAPI, uvicorn and the MCP
SDK are the service's dependencies, not the library's.
"""

from __future__ import annotations

import logging

import click

from memory_agent.cli.options import db_option, embedder_option, emit_json, model_options, open_memory

__all__ = ["serve", "keys", "mcp"]


def _service(db: str, embedder: str, model: str, manager_model: str | None, answer_model: str | None,
             policy: str | None):
    from memory_agent.service import Service

    # db: the folder or the PostgreSQL URL (with its credentials, which the opened store does not keep)
    return Service(open_memory(db, embedder, model, manager_model, answer_model, policy), db)


@click.command()
@db_option
@embedder_option
@model_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Loopback by default; 0.0.0.0 exposes the service to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8420, show_default=True)
@click.option("--no-mcp", is_flag=True, help="Do not mount the MCP server at /mcp.")
@click.option("--log-level", type=click.Choice(["warning", "info", "debug"]), default="info", show_default=True)
def serve(db: str, embedder: str, model: str, manager_model: str | None, answer_model: str | None,
          policy: str | None, host: str, port: int, no_mcp: bool, log_level: str) -> None:
    """Serve a memory folder (or PostgreSQL store) over HTTP: REST under /v1, docs at /docs, a web page at /,
    MCP at /mcp/."""
    import uvicorn

    from memory_agent.service.app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    service = _service(db, embedder, model, manager_model, answer_model, policy)
    if not service.keys.list():
        click.echo(f"note: {db} has no API key yet; create one with: memory-agent keys create --db {db} "
                   "--name NAME", err=True)
    mcp_app = None
    if not no_mcp:
        from memory_agent.service.mcp_server import http_app

        mcp_app = http_app(service)
    app = create_app(service, mcp_app=mcp_app, page=True)
    service.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        service.close()
        service.memory.close()


@click.group()
def keys() -> None:
    """API keys of a served memory folder (each belongs to one tenant)."""


@keys.command("create")
@db_option
@click.option("--name", required=True, help="A label for the key (unique).")
@click.option("--tenant", default=None, help="Give the key to an existing tenant (default: a new tenant).")
def keys_create(db: str, name: str, tenant: str | None) -> None:
    """Create a key and print it once (it is stored hashed)."""
    from memory_agent.service.db import open_service_db
    from memory_agent.service.keys import KeyStore

    key, info = KeyStore(open_service_db(db)).create(name, tenant)
    click.echo(key)
    click.echo(f"key {info.name!r} for tenant {info.tenant!r}; it is shown only this once", err=True)


@keys.command("list")
@db_option
@click.option("--json", "as_json", is_flag=True)
def keys_list(db: str, as_json: bool) -> None:
    """Names, tenants and dates of the keys (never the keys)."""
    from memory_agent.service.db import open_service_db
    from memory_agent.service.keys import KeyStore

    rows = KeyStore(open_service_db(db, create=False)).list()
    if as_json:
        emit_json([vars(r) for r in rows])
        return
    for r in rows:
        click.echo(f"{r.name}\t{r.tenant}\t{r.created_at}\t{'revoked ' + r.revoked_at if r.revoked_at else 'active'}")


@keys.command("revoke")
@db_option
@click.option("--name", required=True)
def keys_revoke(db: str, name: str) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from memory_agent.service.db import open_service_db
    from memory_agent.service.keys import KeyStore

    info = KeyStore(open_service_db(db, create=False)).revoke(name)
    click.echo(f"revoked {info.name!r} (tenant {info.tenant!r})")


@click.command()
@db_option
@embedder_option
@model_options
@click.option("--user", "user_id", required=True, help="Whose memories the tools read and write.")
def mcp(db: str, embedder: str, model: str, manager_model: str | None, answer_model: str | None,
        policy: str | None, user_id: str) -> None:
    """Run the MCP server over stdio for one user of a local memory folder (for agent clients)."""
    from memory_agent.service.mcp_server import run_stdio

    service = _service(db, embedder, model, manager_model, answer_model, policy)
    service.start()
    try:
        run_stdio(service, user_id)
    finally:
        service.close()
        service.memory.close()
