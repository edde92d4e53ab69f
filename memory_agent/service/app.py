"""The REST API: FastAPI routes under ``/v1`` over :class:`~memory_agent.service.core.Service`.

Every ``/v1`` route needs ``Authorization: Bearer <key>``; the key decides the
tenant. Errors have one shape, ``{"detail": ...}``: 401 for a missing or
unknown key, 404 for an id that is not the tenant's (or does not exist: the
two are indistinguishable), 409 for a reused idempotency key, 413 for a body
over the limit, 422 for a bad body (FastAPI names the field) or a value the
library refuses. Routes are plain ``def`` functions, so FastAPI runs them in its
thread pool and a model call never blocks the event loop. Each request is
logged as one JSON line without memory text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from memory_agent.errors import (
    AlreadyApplied, ConfigError, IdempotencyConflict, InvalidInput, JobNotFound, MemoryAgentError, MemoryNotFound,
    ModelNotFound,
    Unauthorized,
)
from memory_agent.service.core import Service
from memory_agent.service.models import (
    MAX_BODY_BYTES, AnswerIn, AnswerOut, HistoryOut, HitOut, JobAccepted, JobOut, MemoryOut, SearchIn, StatsOut,
    TurnsIn, UpdateIn, UserOut,
)

__all__ = ["create_app"]

log = logging.getLogger("memory_agent.service")
_bearer = HTTPBearer(auto_error=False)

_STATUS: list[tuple[type[Exception], int]] = [
    (Unauthorized, 401), (MemoryNotFound, 404), (JobNotFound, 404), (IdempotencyConflict, 409),
    (AlreadyApplied, 409), (InvalidInput, 422), (ModelNotFound, 503), (ConfigError, 422),
]


def _status(exc: MemoryAgentError) -> int:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 503  # a backend or the store failed: the request may be retried


class _Edge:
    """Pure ASGI middleware: a body over ``limit`` bytes is a 413 before any route reads it,
    and every request is logged as one JSON line (method, route, status, ms; never a body)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        replay = await self._read_body(scope, receive)
        if replay is None:
            await JSONResponse({"detail": f"request body over {self.limit:,} bytes"}, 413)(scope, receive, sending)
            self._log(scope, 413, started)
            return

        async def receiving() -> dict:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, receiving, sending)
        self._log(scope, status[0], started)

    async def _read_body(self, scope: dict, receive: Any) -> list[dict] | None:
        """The request's messages, read whole (at most ``limit`` bytes) before the app sees them; None if over.

        Read here, not counted while the app reads: an exception raised inside
        FastAPI's body parsing would come out as a 400, not a 413."""
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return None
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.limit:
                return None
            if not message.get("more_body"):
                return messages

    @staticmethod
    def _log(scope: dict, status: int, started: float) -> None:
        # the matched route's template, never the path (it names the user); a mounted app's routes keep
        # their prefix
        route = scope.get("route")
        template = scope.get("root_path", "") + route.path if isinstance(route, BaseRoute) else "<unmatched>"
        log.info(json.dumps({"method": scope.get("method"), "route": template, "status": status,
                             "ms": round((time.perf_counter() - started) * 1000, 2)}))


async def _tenant(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    # async: a cached lookup (keys.KEY_CACHE_S) costs microseconds, less than a hop to the thread pool
    return request.app.state.service.tenant(creds.credentials if creds else None)


Tenant = Annotated[str, Depends(_tenant)]
MemoryId = Annotated[int, PathParam(ge=0, le=2**63 - 1)]  # SQLite's and PostgreSQL's integer


async def _service(request: Request) -> Service:
    return request.app.state.service


Svc = Annotated[Service, Depends(_service)]
v1 = APIRouter(prefix="/v1")


@v1.post("/users/{user}/turns", status_code=202, response_model=JobAccepted | JobOut)
def add_turns(user: str, body: TurnsIn, t: Tenant, service: Svc, response: Response, wait: bool = False,
              idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None) -> Any:
    """Queue turns for ingestion (202 + job id); ``wait=true`` answers with the finished job."""
    if idempotency_key is not None:
        if body.idempotency_key not in (None, idempotency_key):
            raise InvalidInput("the Idempotency-Key header and the body's idempotency_key differ")
        body = body.model_copy(update={"idempotency_key": idempotency_key})
    job, created = service.add_turns(t, user, body, wait=wait)
    if wait:
        response.status_code = 200 if job.status in ("done", "failed") else 202
        return job
    return JobAccepted(job_id=job.job_id, status=job.status, duplicate=not created)


@v1.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, t: Tenant, service: Svc) -> JobOut:
    return service.job(t, job_id)


@v1.get("/users/{user}/jobs", response_model=list[JobOut])
def user_jobs(user: str, t: Tenant, service: Svc, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobOut]:
    return service.job_list(t, user, limit)


@v1.post("/users/{user}/search", response_model=list[HitOut])
def search(user: str, body: SearchIn, t: Tenant, service: Svc) -> list[HitOut]:
    return service.search(t, user, body)


@v1.post("/users/{user}/answer", response_model=AnswerOut)
def answer(user: str, body: AnswerIn, t: Tenant, service: Svc) -> AnswerOut:
    return service.answer(t, user, body)


@v1.get("/users/{user}/memories", response_model=list[MemoryOut])
def memories(user: str, t: Tenant, service: Svc) -> list[MemoryOut]:
    return service.memories(t, user)


@v1.get("/users/{user}/memories/{memory_id}", response_model=MemoryOut)
def get_memory(user: str, memory_id: MemoryId, t: Tenant, service: Svc) -> MemoryOut:
    return service.get(t, user, memory_id)


@v1.patch("/users/{user}/memories/{memory_id}", response_model=MemoryOut)
def update_memory(user: str, memory_id: MemoryId, body: UpdateIn, t: Tenant, service: Svc) -> MemoryOut:
    return service.update(t, user, memory_id, body.text)


@v1.delete("/users/{user}/memories/{memory_id}", response_model=MemoryOut)
def delete_memory(user: str, memory_id: MemoryId, t: Tenant, service: Svc) -> MemoryOut:
    return service.delete(t, user, memory_id)


@v1.get("/users/{user}/memories/{memory_id}/history", response_model=list[HistoryOut])
def history(user: str, memory_id: MemoryId, t: Tenant, service: Svc) -> list[HistoryOut]:
    return service.history(t, user, memory_id)


@v1.get("/users", response_model=list[UserOut])
def users(t: Tenant, service: Svc) -> list[UserOut]:
    return service.users(t)


@v1.get("/stats", response_model=StatsOut)
def stats(t: Tenant, service: Svc) -> StatsOut:
    return service.stats(t)


@v1.get("/users/{user}/export", response_class=PlainTextResponse)
def export(user: str, t: Tenant, service: Svc) -> PlainTextResponse:
    return PlainTextResponse(service.export(t, user), media_type="application/x-ndjson")


def _typed_error(request: Request, exc: MemoryAgentError) -> JSONResponse:
    code = _status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, code, headers=headers)


def create_app(service: Service, *, mcp_app: Any = None, page: bool = False) -> FastAPI:
    """The ASGI app; ``mcp_app`` (from ``mcp_server.http_app``) is mounted at ``/mcp``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # A mounted app gets no lifespan events: run the MCP app's (its session manager) inside ours.
        if mcp_app is None:
            yield
            return
        async with mcp_app.router.lifespan_context(mcp_app):
            yield

    app = FastAPI(title="memory-agent", version="1", description="Long-lived memory for LLM assistants.",
                  lifespan=lifespan)
    app.state.service = service
    app.add_exception_handler(MemoryAgentError, _typed_error)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        state = service.ready()
        return JSONResponse({"ready": state["worker"], **state}, 200 if state["worker"] else 503)

    app.include_router(v1)
    if page:
        from memory_agent.service.page import mount_page

        mount_page(app)
    if mcp_app is not None:
        app.mount("/mcp", mcp_app)
    app.add_middleware(_Edge, limit=MAX_BODY_BYTES)
    return app
