"""Durable ingestion jobs: written before the 202, run in order by one worker, resumed after a crash.

The queue lives in ``service.db`` (WAL, the store's crash rules). A job is a
``Memory.add_sessions`` call; its id is the receipt prefix of its turns, so a
job resumed after a crash skips every turn whose changes already committed
(the receipt is in the store's own transaction) and runs the rest: each turn
is applied exactly once. One worker runs every job in arrival order, so a
user's turns land in order. A retried request with the same idempotency key
returns the existing job instead of enqueueing a second one.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from memory_agent.errors import IdempotencyConflict
from memory_agent.service.db import PgServiceDB, ServiceDB

__all__ = ["Job", "JobQueue", "JobWorker"]

log = logging.getLogger(__name__)

_COLS = "job_id, tenant, user_name, idem, payload, turns, status, attempts, result, error, created_at, updated_at"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Job:
    def __init__(self, row: tuple):
        (self.job_id, self.tenant, self.user, self.idem, payload, self.turns, self.status, self.attempts,
         result, self.error, self.created_at, self.updated_at) = row
        self.payload: dict = json.loads(payload)
        self.result: dict = json.loads(result) if result else {}


class JobQueue:
    def __init__(self, db: ServiceDB | PgServiceDB):
        self.db = db
        self.changed = threading.Condition()

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def enqueue(self, tenant: str, user: str, payload: dict, turns: int, idem: str | None) -> tuple[Job, bool]:
        """Write the job (committed before this returns); ``(job, False)`` when ``idem`` named one already
        (a failed one is queued again)."""
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        found: Job | None = None
        with self.db.txn() as conn:
            if idem is not None:
                row = conn.execute(f"SELECT {_COLS} FROM jobs WHERE tenant = ? AND idem = ?", [tenant, idem]).fetchone()
                if row is not None:
                    job = Job(row)
                    if job.user != user or json.dumps(job.payload, sort_keys=True, ensure_ascii=False) != body:
                        raise IdempotencyConflict(f"idempotency key {idem!r} was used for a different request")
                    if job.status == "failed":
                        # a retry of a failed request runs the same job again: its receipts skip
                        # the turns that committed before the failure, so none is applied twice
                        conn.execute("UPDATE jobs SET status = 'queued', error = NULL, updated_at = ?"
                                     " WHERE job_id = ?", [_now(), job.job_id])
                        job = Job(conn.execute(f"SELECT {_COLS} FROM jobs WHERE job_id = ?", [job.job_id]).fetchone())
                    found = job
            if found is None:
                now = _now()
                job_id = "job_" + secrets.token_hex(8)
                conn.execute("INSERT INTO jobs (job_id, tenant, user_name, idem, payload, turns, status, created_at,"
                             " updated_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                             [job_id, tenant, user, idem, body, turns, now, now])
                found = Job(conn.execute(f"SELECT {_COLS} FROM jobs WHERE job_id = ?", [job_id]).fetchone())
                created = True
            else:
                created = False
        self._notify()
        return found, created

    def get(self, tenant: str, job_id: str) -> Job | None:
        rows = self.db.read(f"SELECT {_COLS} FROM jobs WHERE job_id = ? AND tenant = ?", [job_id, tenant])
        return Job(rows[0]) if rows else None

    def list(self, tenant: str, user: str | None = None, limit: int = 50) -> list[Job]:
        if user is None:
            rows = self.db.read(f"SELECT {_COLS} FROM jobs WHERE tenant = ? ORDER BY seq DESC LIMIT ?", [tenant, limit])
        else:
            rows = self.db.read(f"SELECT {_COLS} FROM jobs WHERE tenant = ? AND user_name = ? ORDER BY seq DESC LIMIT ?",
                                [tenant, user, limit])
        return [Job(r) for r in rows]

    def users(self, tenant: str) -> list[str]:
        return [r[0] for r in self.db.read("SELECT DISTINCT user_name FROM jobs WHERE tenant = ?", [tenant])]

    def counts(self, tenant: str) -> dict[str, int]:
        rows = self.db.read("SELECT status, count(*) FROM jobs WHERE tenant = ? GROUP BY status", [tenant])
        return {status: int(n) for status, n in rows}

    def next_open(self) -> Job | None:
        """The oldest job not finished: a 'running' one was interrupted by a crash and is resumed."""
        rows = self.db.read(f"SELECT {_COLS} FROM jobs WHERE status IN ('queued', 'running') ORDER BY seq LIMIT 1")
        return Job(rows[0]) if rows else None

    def open_count(self) -> int:
        return int(self.db.read("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")[0][0])

    def _set(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = _now()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.db.txn() as conn:
            conn.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*fields.values(), job_id])
        self._notify()

    def start(self, job: Job) -> None:
        self._set(job.job_id, status="running", attempts=job.attempts + 1)

    def finish(self, job: Job, result: dict) -> None:
        self._set(job.job_id, status="done", result=json.dumps(result, ensure_ascii=False), error=None)

    def fail(self, job: Job, error: str, result: dict | None = None) -> None:
        self._set(job.job_id, status="failed", error=error,
                  result=json.dumps(result, ensure_ascii=False) if result else None)

    def wait(self, tenant: str, job_id: str, timeout: float) -> Job | None:
        """Block until the job is done or failed (or ``timeout`` passes); the job as it is then."""
        end = time.monotonic() + timeout
        with self.changed:
            while True:
                job = self.get(tenant, job_id)
                if job is None or job.status in ("done", "failed"):
                    return job
                left = end - time.monotonic()
                if left <= 0:
                    return job
                self.changed.wait(min(left, 0.5))


class JobWorker(threading.Thread):
    """Runs open jobs one at a time, oldest first, with ``run(job) -> result``.

    ``run`` raises ``failures`` (typed, expected errors: bad input, a model
    backend down) to fail the job with the message; any other exception is a
    bug: the job fails with "internal error" (the traceback goes to the log) and
    the worker goes on with the next job. Only a ``BaseException`` that is not
    an ``Exception`` (an interpreter shutdown) stops the worker, which
    ``/readyz`` reports. A failed job runs again when its request is retried with
    the same idempotency key.
    """

    def __init__(self, queue: JobQueue, run: Callable[[Job], dict], failures: tuple[type[BaseException], ...]):
        super().__init__(name="memory-agent-jobs", daemon=True)
        self.queue, self.run_job, self.failures = queue, run, failures
        self._stop_event = threading.Event()
        self.crashed: BaseException | None = None

    def stop(self, timeout: float = 30.0) -> None:
        self._stop_event.set()
        self.queue._notify()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                job = self.queue.next_open()
                if job is None:
                    with self.queue.changed:
                        self.queue.changed.wait(0.5)
                    continue
                self._one(job)
        except BaseException as exc:  # the thread boundary: record it for /readyz, then stop
            self.crashed = exc
            log.exception("the ingestion worker stopped")

    def _one(self, job: Any) -> None:
        self.queue.start(job)
        try:
            result = self.run_job(job)
        except self.failures as exc:
            log.warning("job %s failed: %s", job.job_id, type(exc).__name__)
            self.queue.fail(job, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # the job boundary: a bug in one job fails it, loudly, not the whole queue
            log.exception("job %s failed with an internal error", job.job_id)
            self.queue.fail(job, f"internal error ({type(exc).__name__}); see the server log")
        else:
            self.queue.finish(job, result)
