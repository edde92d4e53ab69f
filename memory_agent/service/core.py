"""The memory service's one implementation: tenants, jobs and the ``Memory`` calls behind every route and tool.

REST (``app.py``) and MCP (``mcp_server.py``) are thin adapters over
:class:`Service`; neither talks to the store or the models directly, so both
get the same scoping, limits and errors.

Tenancy: every API key belongs to one tenant, and a tenant's users are its own
namespace. The store holds them as ``"<tenant>/<user>"``; the tenant comes
from the key, never from the request, and tenant names cannot hold ``/``, so
no user name a request sends can reach another tenant's store ids. A memory or
job id of another tenant is "not found", exactly like an id that does not
exist. ``tenant=None`` is the store's owner on this machine (the stdio MCP
server, the CLI): plain user ids, as ``Memory`` uses them.

Model calls (ingestion, answers) are serialised by one lock: one local model
serves one generation at a time, and the job worker and the answer route share it.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from data.dates import parse_date
from memory_agent.errors import ConfigError, InvalidInput, JobNotFound, MemoryAgentError, MemoryNotFound, Unauthorized
from memory_agent.memory import Memory
from memory_agent.service.db import open_service_db
from memory_agent.service.jobs import Job, JobQueue, JobWorker
from memory_agent.service.keys import KeyStore
from memory_agent.service.models import (
    WAIT_MAX_TURNS, AnswerIn, AnswerOut, ChangeOut, HistoryOut, HitOut, JobOut, MemoryOut, SearchIn, SkippedOut,
    StatsOut, TurnsIn, UserOut,
)

__all__ = ["Service", "check_user_name", "MAX_WAITERS"]


@contextmanager
def _as_seen_by(user: str) -> Iterator[None]:
    """A not-found names the user as the request did, never the store's namespaced id."""
    try:
        yield
    except MemoryNotFound as exc:
        raise MemoryNotFound(exc.memory_id, user) from None

# A job fails with its message on these (bad input found late, a model server down);
# anything else is a bug and stops the worker (see JobWorker).
_JOB_FAILURES = (MemoryAgentError, OSError, TimeoutError)
_WAIT_TIMEOUT_S = 120.0
#: Requests that may wait (``wait=true``) for their job at once; the server's thread pool has 40.
MAX_WAITERS = 8


def check_user_name(user: Any) -> str:
    """A user name as a request gives it: 1-200 printable characters, no ``/`` (a URL path segment)."""
    if not isinstance(user, str) or not 1 <= len(user) <= 200 or not user.isprintable() or "/" in user:
        raise InvalidInput("user must be 1-200 printable characters without '/'")
    return user


class Service:
    """One store, its models, its keys and its job queue (see the module docstring)."""

    def __init__(self, memory: Memory, location: str | Path | None = None, *,
                 wait_timeout: float = _WAIT_TIMEOUT_S):
        """``location``: where the store lives (a folder or a PostgreSQL URL); default: the store's folder."""
        self.memory = memory
        location = location if location is not None else memory.store.path
        if location is None:
            raise ConfigError("a store with no folder (PostgreSQL) needs Service(memory, location=<its URL>)")
        self.db = open_service_db(location)
        self.keys = KeyStore(self.db)
        self.jobs = JobQueue(self.db)
        self.model_lock = threading.Lock()
        self.wait_timeout = wait_timeout
        self.worker = JobWorker(self.jobs, self._run_job, _JOB_FAILURES)
        self._waiters = threading.BoundedSemaphore(MAX_WAITERS)

    def start(self) -> "Service":
        """Start the job worker; one per store (a second service would run the same jobs)."""
        self.db.acquire_service_lock()
        self.worker.start()
        return self

    def close(self) -> None:
        self.worker.stop()
        self.db.close()

    def ready(self) -> dict[str, Any]:
        """What ``/readyz`` reports: the worker alive, and the open jobs (read from the service database)."""
        return {"worker": self.worker.is_alive() and self.worker.crashed is None, "open_jobs": self.jobs.open_count()}

    # ------------------------------------------------------------ identity
    def tenant(self, key: str | None) -> str:
        tenant = self.keys.tenant(key)
        if tenant is None:
            raise Unauthorized("missing or unknown API key" if key else "missing API key")
        return tenant

    @staticmethod
    def store_user(tenant: str | None, user: str) -> str:
        user = check_user_name(user)
        return user if tenant is None else f"{tenant}/{user}"

    # ------------------------------------------------------------ ingestion
    def add_turns(self, tenant: str | None, user: str, body: TurnsIn, *, wait: bool = False) -> tuple[JobOut, bool]:
        """Enqueue (durably) and return ``(job, created)``; with ``wait``, the finished job."""
        self.store_user(tenant, user)
        sessions = body.session_list()
        for s in sessions:  # found now, not in the worker: a bad date is this request's 422
            if s.timestamp is not None and parse_date(s.timestamp) is None:
                raise InvalidInput(f"unreadable timestamp {s.timestamp!r}; use ISO-8601 like 2024-05-08T13:56")
        if wait and body.n_turns() > WAIT_MAX_TURNS:
            raise InvalidInput(f"wait=true is for requests of at most {WAIT_MAX_TURNS} turns; "
                               f"this one has {body.n_turns()}: poll the job instead")
        payload = {"sessions": [s.model_dump(exclude_none=True) for s in sessions]}
        job, created = self.jobs.enqueue(tenant or "", user, payload, body.n_turns(), body.idempotency_key)
        # A waiting request holds a thread of the server's shared pool: only a few may wait at
        # once, the others get their queued job at once (202) instead of starving every route.
        if wait and self._waiters.acquire(blocking=False):
            try:
                job = self.jobs.wait(tenant or "", job.job_id, self.wait_timeout) or job
            finally:
                self._waiters.release()
        return self._job_out(job), created

    def _run_job(self, job: Job) -> dict:
        sessions = [(s["turns"], s.get("timestamp")) for s in job.payload["sessions"]]
        store_user = self.store_user(job.tenant or None, job.user)
        with self.model_lock:
            res = self.memory.add_sessions(sessions, store_user, receipt=job.job_id)
        return {
            "applied": [ChangeOut(op=a.op, id=a.id, old_text=a.old_text, new_text=a.new_text,
                                  source=a.source).model_dump() for a in res.applied],
            # reasons may quote the store's user id: name the user as the request did
            "skipped": [SkippedOut(stage=s.stage, dia_id=s.source,
                                   reason=s.reason.replace(store_user, job.user)).model_dump()
                        for s in res.skipped],
            "counts": {**res.counts(), "already_applied": res.already_applied},
        }

    def job(self, tenant: str | None, job_id: str) -> JobOut:
        job = self.jobs.get(tenant or "", job_id) if isinstance(job_id, str) else None
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        return self._job_out(job)

    def job_list(self, tenant: str | None, user: str | None = None, limit: int = 50) -> list[JobOut]:
        if user is not None:
            check_user_name(user)
        return [self._job_out(j) for j in self.jobs.list(tenant or "", user, limit)]

    def _job_out(self, job: Job) -> JobOut:
        if job.status == "done":
            done = job.turns
        elif job.status == "queued" and job.attempts == 0:
            done = 0
        else:  # running or failed: the turns whose receipts the store holds
            keys = [f"{job.job_id}:{i}" for i in range(job.turns)]
            done = len(self.memory.store.receipts(self.store_user(job.tenant or None, job.user), keys))
        r = job.result
        return JobOut(job_id=job.job_id, user=job.user, status=job.status, turns=job.turns, turns_done=done,
                      progress=round(done / job.turns, 4) if job.turns else 1.0, created_at=job.created_at,
                      updated_at=job.updated_at, attempts=job.attempts, applied=r.get("applied", []),
                      skipped=r.get("skipped", []), counts=r.get("counts", {}), error=job.error)

    # ------------------------------------------------------------ reading
    def _memory_out(self, rec: Any, user: str) -> dict[str, Any]:
        return {"id": rec.id, "user": user, "text": rec.text, "created_at": rec.created_at,
                "updated_at": rec.updated_at, "metadata": rec.metadata}

    def search(self, tenant: str | None, user: str, body: SearchIn) -> list[HitOut]:
        hits = self.memory.search(body.query, self.store_user(tenant, user), body.k, mode=body.mode,
                                  filters=body.filters)
        return [HitOut(**self._memory_out(h, user), score=h.score) for h in hits]

    def answer(self, tenant: str | None, user: str, body: AnswerIn) -> AnswerOut:
        su = self.store_user(tenant, user)
        with self.model_lock:
            a = self.memory.answer(body.question, su, strategy=body.strategy, k=body.k)
        return AnswerOut(question=body.question, answer=a.text, valid=a.valid, strategy=a.strategy,
                         memories=[MemoryOut(**self._memory_out(m, user)) for m in a.memories])

    def memories(self, tenant: str | None, user: str) -> list[MemoryOut]:
        return [MemoryOut(**self._memory_out(r, user)) for r in self.memory.list(self.store_user(tenant, user))]

    def get(self, tenant: str | None, user: str, memory_id: int) -> MemoryOut:
        with _as_seen_by(user):
            return MemoryOut(**self._memory_out(self.memory.get(memory_id, self.store_user(tenant, user)), user))

    def update(self, tenant: str | None, user: str, memory_id: int, text: str) -> MemoryOut:
        with _as_seen_by(user):
            rec = self.memory.update(memory_id, text, self.store_user(tenant, user))
        return MemoryOut(**self._memory_out(rec, user))

    def delete(self, tenant: str | None, user: str, memory_id: int) -> MemoryOut:
        with _as_seen_by(user):
            return MemoryOut(**self._memory_out(self.memory.delete(memory_id, self.store_user(tenant, user)), user))

    def history(self, tenant: str | None, user: str, memory_id: int) -> list[HistoryOut]:
        with _as_seen_by(user):
            entries = self.memory.history(memory_id, self.store_user(tenant, user))
        return [HistoryOut(event=e.event, old_text=e.old_text, new_text=e.new_text, actor=e.actor, source=e.source,
                           at=e.at) for e in entries]

    def users(self, tenant: str | None) -> list[UserOut]:
        prefix = "" if tenant is None else f"{tenant}/"
        counts = {u[len(prefix):]: n for u, n in self.memory.store.users(prefix).items()}
        for u in self.jobs.users(tenant or ""):
            counts.setdefault(u, 0)
        return [UserOut(user=u, memories=n) for u, n in sorted(counts.items())]

    def stats(self, tenant: str | None) -> StatsOut:
        users = self.users(tenant)
        return StatsOut(users=len(users), memories=sum(u.memories for u in users), jobs=self.jobs.counts(tenant or ""))

    def export(self, tenant: str | None, user: str) -> str:
        """The user's memories with their history as JSONL, user ids as the tenant names them."""
        su = self.store_user(tenant, user)
        with tempfile.TemporaryDirectory(prefix="memory-agent-export-") as tmp:
            path = Path(tmp) / "export.jsonl"
            self.memory.store.export_jsonl(path, user_id=su)
            lines = []
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                row["user_id"] = user
                for h in row.get("history") or []:
                    if isinstance(h, dict) and "user_id" in h:
                        h["user_id"] = user
                lines.append(json.dumps(row, ensure_ascii=False))
        return "".join(line + "\n" for line in lines)
