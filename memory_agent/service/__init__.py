"""The memory service: REST API, API keys and tenants, durable ingestion jobs, MCP tools, a web page.

``memory-agent serve`` runs it (``docs/service.md``). The service's modules
pull in FastAPI; ``import memory_agent`` never does (the CLI imports it on use).
``Service`` is imported lazily, so ``memory_agent.service.models`` (the request
and response bodies, pydantic only) can be imported alone: the HTTP client
(:mod:`memory_agent.client`) uses them without loading the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Service"]

if TYPE_CHECKING:  # pragma: no cover
    from memory_agent.service.core import Service


def __getattr__(name: str) -> Any:
    if name == "Service":
        from memory_agent.service.core import Service

        globals()["Service"] = Service
        return Service
    raise AttributeError(f"module 'memory_agent.service' has no attribute {name!r}")
