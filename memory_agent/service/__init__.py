"""The memory service: REST API, API keys and tenants, durable ingestion jobs, MCP tools, a web page.

``memory-agent serve`` runs it (``docs/service.md``). Importing this package
pulls in FastAPI; ``import memory_agent`` never does (the CLI imports it on use).
"""

from __future__ import annotations

from memory_agent.service.core import Service

__all__ = ["Service"]
