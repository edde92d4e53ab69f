"""The MCP server: five memory tools over :class:`~memory_agent.service.core.Service`, on the official ``mcp`` SDK 2.x.

Tools: ``add_memory``, ``search_memories``, ``answer_from_memory``,
``list_memories``, ``delete_memory``. Each is a thin call into ``Service`` (the
same one the REST routes use), so scoping, limits and errors are the REST API's.

Whose memories a tool reads and writes is decided by the connection, never by
the model: no tool takes a user or tenant argument.

* stdio (``memory-agent mcp --db DIR --user U``, :func:`run_stdio`): the local
  owner (``tenant=None``) and the user fixed by ``--user``.
* streamable HTTP (:func:`http_app`, mounted at ``/mcp/`` by ``memory-agent
  serve``): every HTTP request needs ``Authorization: Bearer <key>`` (the key
  decides the tenant; without a valid one the answer is 401 before any MCP
  message is read) and ``X-Memory-User: <user>`` (the tenant's user the tools
  act for; 400 without it). The server is stateless: each request is
  authenticated on its own, and each tool call resolves tenant and user again
  from the headers of the request that carries it.

A typed library error (``MemoryAgentError``: an unknown memory id, a bad
timestamp, a model backend down) comes back as a tool error (``isError``) with
its message; arguments that fail validation do too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse

from memory_agent.errors import InvalidInput, MemoryAgentError, Unauthorized
from memory_agent.service.core import Service, check_user_name
from memory_agent.service.models import (
    MAX_BODY_BYTES, MAX_TEXT_CHARS, MAX_TURNS, WAIT_MAX_TURNS, AnswerIn, AnswerOut, HitOut, JobOut, MemoryOut,
    SearchIn, TurnIn, TurnsIn,
)

__all__ = ["USER_HEADER", "build_server", "http_app", "run_stdio"]

USER_HEADER = "X-Memory-User"

# (tenant, user) for the tool call in progress; ``None`` tenant = the local owner.
Identify = Callable[[Context], tuple[str | None, str]]

_INSTRUCTIONS = (
    "Long-lived memory of one user. Call add_memory with what the user tells you that is worth keeping "
    "(facts, preferences, plans; include a timestamp when you know when it was said), search_memories or "
    "answer_from_memory before answering a question that may depend on earlier conversations, list_memories "
    "to review everything, and delete_memory when the user asks to forget something."
)


_ADD_DOC = (
    "Remember what was said: the memory manager extracts facts and adds, updates or deletes memories. "
    "Returns the ingestion job: `applied` lists the memory operations made (ADD/UPDATE/DELETE with memory ids), "
    "`skipped` what could not be used, `counts` a summary. Up to {n} turns are processed before this returns "
    "(status \"done\"); more are queued (status \"queued\") and processed in order in the background."
).format(n=WAIT_MAX_TURNS)


def _version() -> str:
    try:
        return metadata.version("memory-agent")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "0"


def _tool_error(exc: Exception) -> ToolError:
    if isinstance(exc, ValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors())
        return ToolError(f"invalid arguments: {where}")
    return ToolError(f"{type(exc).__name__}: {exc}")


def _call(fn: Callable[[], Any]) -> Any:
    """Run one ``Service`` call; a typed error becomes the tool error the model reads."""
    try:
        return fn()
    except (MemoryAgentError, ValidationError) as exc:
        raise _tool_error(exc) from exc


def build_server(service: Service, identify: Identify, *, name: str = "memory-agent") -> MCPServer:
    """The MCP server with its five tools; ``identify`` gives each call its ``(tenant, user)``."""
    server = MCPServer(name, instructions=_INSTRUCTIONS, version=_version(), log_level="WARNING")

    def who(ctx: Context) -> tuple[str | None, str]:
        try:
            return identify(ctx)
        except MemoryAgentError as exc:
            raise _tool_error(exc) from exc

    @server.tool(structured_output=True, description=_ADD_DOC)
    def add_memory(
        ctx: Context,
        text: Annotated[str | None, Field(
            description="What the user said, as one turn (use this or turns).", max_length=MAX_TEXT_CHARS)] = None,
        turns: Annotated[list[TurnIn] | None, Field(
            description="Several dialogue turns in order, each {speaker, text} (use this or text).",
            max_length=MAX_TURNS)] = None,
        timestamp: Annotated[str | None, Field(
            description="When this was said, ISO-8601 like 2024-05-08T13:56 (optional).", max_length=100)] = None,
        speaker: Annotated[str | None, Field(
            description="Who said text (default: the user).", max_length=200)] = None,
    ) -> JobOut:
        tenant, user = who(ctx)
        if (text is None) == (turns is None):
            raise ToolError("give either text or turns (not both)")
        if text is not None:
            if speaker is not None and not speaker.strip():
                raise ToolError("speaker must not be empty")
            turns = [_call(lambda: TurnIn(speaker=speaker or user, text=text))]
        elif speaker is not None:
            raise ToolError("speaker goes with text; each of turns names its own speaker")
        body = _call(lambda: TurnsIn(turns=turns, timestamp=timestamp))
        job, _ = _call(lambda: service.add_turns(tenant, user, body, wait=body.n_turns() <= WAIT_MAX_TURNS))
        if job.status == "failed":
            raise ToolError(f"ingestion job {job.job_id} failed: {job.error}")
        return job

    @server.tool(structured_output=True)
    def search_memories(
        ctx: Context,
        query: Annotated[str, Field(description="What to look for.", min_length=1, max_length=MAX_TEXT_CHARS)],
        k: Annotated[int, Field(description="How many memories to return.", ge=1, le=100)] = 5,
        mode: Annotated[Literal["hybrid", "vector", "keyword"] | None, Field(
            description="hybrid (default): keyword and vector results fused; vector; keyword (BM25).")] = None,
    ) -> list[HitOut]:
        """Find the user's memories most relevant to a query, best first, each with its id and score."""
        tenant, user = who(ctx)
        body = _call(lambda: SearchIn(query=query, k=k, mode=mode))
        return _call(lambda: service.search(tenant, user, body))

    @server.tool(structured_output=True)
    def answer_from_memory(
        question: Annotated[str, Field(description="The question to answer.", min_length=1,
                                       max_length=MAX_TEXT_CHARS)],
        ctx: Context,
    ) -> AnswerOut:
        """Answer a question from the user's memories (the answer agent retrieves and reasons over them).

        Returns the answer and the memories it was given; ``valid`` is false when the model's reply could not be
        read as an answer.
        """
        tenant, user = who(ctx)
        body = _call(lambda: AnswerIn(question=question))
        return _call(lambda: service.answer(tenant, user, body))

    @server.tool(structured_output=True)
    def list_memories(ctx: Context) -> list[MemoryOut]:
        """All of the user's current memories, with ids, texts and dates."""
        tenant, user = who(ctx)
        return _call(lambda: service.memories(tenant, user))

    @server.tool(structured_output=True)
    def delete_memory(
        memory_id: Annotated[int, Field(description="The id of the memory to forget (from search or list).",
                                        ge=0)],
        ctx: Context,
    ) -> MemoryOut:
        """Forget one of the user's memories by id; returns the memory as it was. Its history is kept."""
        tenant, user = who(ctx)
        return _call(lambda: service.delete(tenant, user, memory_id))

    return server


# ---------------------------------------------------------------- stdio


def run_stdio(service: Service, user_id: str) -> None:
    """Serve the tools over stdin/stdout for ``user_id`` of the local store (the owner: no tenant)."""
    user = check_user_name(user_id)
    build_server(service, lambda ctx: (None, user)).run("stdio")


# ---------------------------------------------------------------- streamable HTTP


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def bearer_key(authorization: str | None) -> str | None:
    """The key of ``Authorization: Bearer <key>`` (the scheme case-insensitive, as FastAPI reads it)."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def http_identity(service: Service, headers: Mapping[str, str] | None) -> tuple[str, str]:
    """``(tenant, user)`` from a request's headers; ``Unauthorized`` or ``InvalidInput`` otherwise."""
    tenant = service.tenant(bearer_key(_header(headers, "Authorization")))
    user = _header(headers, USER_HEADER)
    if user is None:
        raise InvalidInput(f"the {USER_HEADER} header (the user whose memories the tools use) is required")
    try:  # ASGI servers decode header bytes as latin-1; the name is UTF-8, as in a /v1 path
        user = user.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise InvalidInput(f"the {USER_HEADER} header is not UTF-8") from None
    return tenant, check_user_name(user)


class _Gate:
    """Pure ASGI middleware: 401 without a valid key and 400 without a valid user header, before the SDK runs."""

    def __init__(self, app: Any, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            try:  # in a thread: the key lookup shares the service database's lock with the job worker
                await anyio.to_thread.run_sync(http_identity, self.service, headers)
            except Unauthorized as exc:
                await JSONResponse({"detail": str(exc), "error": "Unauthorized"}, 401,
                                   headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
            except InvalidInput as exc:
                await JSONResponse({"detail": str(exc), "error": "InvalidInput"}, 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(service: Service) -> Starlette:
    """The streamable-HTTP MCP app (a Starlette app; its endpoint is its root, so mounted at ``/mcp`` it is ``/mcp/``).

    Its lifespan runs the SDK's session manager: an app that mounts it must enter
    ``app.router.lifespan_context(app)`` in its own lifespan (``create_app`` does),
    since a mounted app gets no lifespan events of its own.
    """
    server = build_server(service, lambda ctx: http_identity(service, ctx.headers))
    app = server.streamable_http_app(
        streamable_http_path="/",
        stateless_http=True,
        max_request_body_size=MAX_BODY_BYTES,
        # Every request needs an API key, which a DNS-rebinding page cannot have; and the Host check
        # would refuse the service's own name when it is served beyond loopback.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    app.add_middleware(_Gate, service=service)
    return app
