"""``MemoryClient``: the memory service over HTTP, with ``Memory``'s method names.

An application switches from the library to a served memory by one line::

    memory = Memory.open("./mem", llm="echo")                       # in process
    memory = MemoryClient("http://127.0.0.1:8420", api_key=KEY)     # over HTTP

and keeps calling ``add``, ``search``, ``answer``, ``get``, ``update``,
``delete``, ``history`` and ``list`` with the same arguments. Results are the
service's response models (:mod:`memory_agent.service.models`), with the two
attribute names ``Memory``'s results use added (``answer.text``,
``memory.user_id``). Errors are the project's typed errors
(:mod:`memory_agent.errors`): 401 :class:`Unauthorized`, 404
:class:`MemoryNotFound` / :class:`JobNotFound`, 409 :class:`IdempotencyConflict`,
413 and 422 :class:`InvalidInput` (the server's detail in the message and in
``exc.detail``), a failed connection or a 5xx :class:`BackendError`.

Every ``add`` carries an idempotency key (a fresh one unless given), and the
client retries a request once when the connection fails, so a retried add is
applied once. Only httpx and pydantic are imported: no FastAPI, uvicorn or MCP.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import httpx

from memory_agent import errors as _errors
from memory_agent.errors import (
    BackendError, IdempotencyConflict, InvalidInput, JobNotFound, MemoryAgentError, MemoryNotFound, Unauthorized,
)
from memory_agent.service.models import (
    AnswerOut, HistoryOut, HitOut, JobAccepted, JobOut, MemoryOut, StatsOut, UserOut,
)

__all__ = ["MemoryClient", "RemoteAnswer", "RemoteMemory", "RemoteHit"]

DEFAULT_TIMEOUT = 30.0
_DONE = ("done", "failed")


class _UserId:
    @property
    def user_id(self) -> str:
        """``Memory``'s records name their user ``user_id``; the service's ``user``."""
        return self.user  # type: ignore[attr-defined]


class RemoteMemory(_UserId, MemoryOut):
    """A :class:`MemoryOut` that also answers to ``user_id``."""


class RemoteHit(_UserId, HitOut):
    """A :class:`HitOut` (a memory and its ``score``) that also answers to ``user_id``."""


class RemoteAnswer(AnswerOut):
    """An :class:`AnswerOut` that also answers to ``text`` (``Memory.answer``'s name for the answer)."""

    memories: list[RemoteMemory]

    @property
    def text(self) -> str:
        return self.answer


class MemoryClient:
    """The memory service at ``url`` with the API key ``api_key`` (see the module docstring).

    ``timeout``: seconds per HTTP request (a request that times out is not resent). ``wait_timeout``: how long ``add(wait=True)``
    polls its job before giving up with :class:`BackendError`. ``transport``: an
    ``httpx.BaseTransport`` (tests, proxies); default: a plain HTTP connection pool.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT, wait_timeout: float = 600.0,
                 transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self.wait_timeout = wait_timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}",
                                           "User-Agent": "memory-agent-client/1"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "MemoryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryClient({self.url!r})"

    # ------------------------------------------------------------ transport
    def _request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                 headers: dict | None = None, retry: bool = True,
                 not_found: Callable[[str], MemoryAgentError] | None = None) -> httpx.Response:
        """One request; retried once when the connection fails (``retry``: also when the reply is lost)."""
        for attempt in (0, 1):
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent: safe to send again
                if attempt == 0:
                    continue
                raise BackendError(f"cannot reach the memory service at {self.url}: {exc}") from exc
            except httpx.TimeoutException as exc:  # a slow server: sending it the request again only adds load
                raise BackendError(f"the memory service at {self.url} did not answer in time: "
                                   f"{type(exc).__name__}: {exc}") from exc
            except httpx.TransportError as exc:  # the reply was lost: the request may have run
                if attempt == 0 and retry:  # only calls that are safe to repeat are resent
                    continue
                raise BackendError(f"the memory service at {self.url} did not answer: "
                                   f"{type(exc).__name__}: {exc}") from exc
            if response.status_code >= 400:
                raise _error(response, not_found)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    @staticmethod
    def _user(user_id: str) -> str:
        if not isinstance(user_id, str) or not user_id:
            raise InvalidInput("user_id must be a non-empty string")
        return "/v1/users/" + quote(user_id, safe="")

    # ------------------------------------------------------------ writing
    def add(self, turns: Sequence[dict | Any], user_id: str, timestamp: Any = None, *, wait: bool = True,
            idempotency_key: str | None = None) -> JobOut | JobAccepted:
        """Remember dialogue turns (dicts with speaker, text, dia_id, blip_caption), as ``Memory.add``.

        ``wait=True`` polls the ingestion job until it is done and returns it
        (:class:`JobOut`; a failed job raises its error); ``wait=False`` returns
        as soon as the service has queued it (:class:`JobAccepted`, with ``job_id``).
        """
        return self.add_sessions([(turns, timestamp)], user_id, wait=wait, idempotency_key=idempotency_key)

    def add_sessions(self, sessions: Iterable[tuple[Sequence[dict | Any], Any]], user_id: str, *,
                     wait: bool = True, idempotency_key: str | None = None) -> JobOut | JobAccepted:
        """Several sessions ``[(turns, session_timestamp), ...]`` as one job (see :meth:`add`)."""
        body = _turns_body(sessions)
        key = idempotency_key if idempotency_key is not None else f"client-{uuid.uuid4().hex}"
        # the key makes a resend after a lost reply return the same job, so a lost reply is retried
        try:
            accepted = JobAccepted(**self._json("POST", self._user(user_id) + "/turns", json=body,
                                                headers={"Idempotency-Key": key}))
        except BackendError as exc:  # the caller may resend with this key later: still at most once
            exc.idempotency_key = key  # type: ignore[attr-defined]
            raise
        if not wait:
            return accepted
        return self.wait(accepted.job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> JobOut:
        """Poll a job until it is done (returned) or failed (its error raised, with ``exc.job``)."""
        end = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        pause = 0.005
        while True:
            job = self.job(job_id)
            if job.status == "done":
                return job
            if job.status == "failed":
                raise _job_error(job)
            if time.monotonic() >= end:
                exc = BackendError(f"job {job_id} is still {job.status} ({job.turns_done}/{job.turns} turns) "
                                   f"after {self.wait_timeout if timeout is None else timeout:g} s")
                exc.job = job  # type: ignore[attr-defined]
                raise exc
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    def job(self, job_id: str) -> JobOut:
        return JobOut(**self._json("GET", "/v1/jobs/" + quote(str(job_id), safe=""), not_found=JobNotFound))

    def jobs(self, user_id: str, limit: int = 50) -> list[JobOut]:
        """The user's latest jobs, newest first."""
        return [JobOut(**j) for j in self._json("GET", self._user(user_id) + "/jobs", params={"limit": limit})]

    # ------------------------------------------------------------ reading
    def search(self, query: str, user_id: str, k: int = 5, *, mode: str | None = None,
               filters: Any = None) -> list[RemoteHit]:
        """The user's k best memories for ``query`` (``mode``: hybrid, vector, keyword; ``filters`` as ``Memory``)."""
        body: dict[str, Any] = {"query": query, "k": k}
        if mode is not None:
            body["mode"] = mode
        if filters is not None:
            body["filters"] = filters
        return [RemoteHit(**h) for h in self._json("POST", self._user(user_id) + "/search", json=body)]

    def answer(self, question: str, user_id: str, *, strategy: str = "memory", k: int | None = None) -> RemoteAnswer:
        body: dict[str, Any] = {"question": question, "strategy": strategy}
        if k is not None:
            body["k"] = k
        return RemoteAnswer(**self._json("POST", self._user(user_id) + "/answer", json=body))

    def list(self, user_id: str) -> list[RemoteMemory]:
        return [RemoteMemory(**m) for m in self._json("GET", self._user(user_id) + "/memories")]

    def get(self, memory_id: int, user_id: str) -> RemoteMemory:
        path, not_found = self._memory(memory_id, user_id)
        return RemoteMemory(**self._json("GET", path, not_found=not_found))

    def history(self, memory_id: int, user_id: str) -> list[HistoryOut]:
        path, not_found = self._memory(memory_id, user_id)
        return [HistoryOut(**h) for h in self._json("GET", path + "/history", not_found=not_found)]

    # ------------------------------------------------------------ direct edits
    def update(self, memory_id: int, text: str, user_id: str) -> RemoteMemory:
        # not resent after a lost reply: a second PATCH would write a second history entry
        path, not_found = self._memory(memory_id, user_id)
        return RemoteMemory(**self._json("PATCH", path, json={"text": text}, retry=False, not_found=not_found))

    def delete(self, memory_id: int, user_id: str) -> RemoteMemory:
        # not resent after a lost reply: the resend would answer "not found" for a delete that worked
        path, not_found = self._memory(memory_id, user_id)
        return RemoteMemory(**self._json("DELETE", path, retry=False, not_found=not_found))

    def _memory(self, memory_id: int, user_id: str) -> tuple[str, Callable[[str], MemoryAgentError]]:
        """The memory's path, and its not-found error as ``Memory`` raises it."""
        if isinstance(memory_id, bool) or not isinstance(memory_id, int):
            raise InvalidInput(f"memory_id must be an int, not {memory_id!r}")
        return f"{self._user(user_id)}/memories/{memory_id}", lambda _: MemoryNotFound(memory_id, user_id)

    # ------------------------------------------------------------ the tenant
    def users(self) -> list[UserOut]:
        return [UserOut(**u) for u in self._json("GET", "/v1/users")]

    def stats(self) -> StatsOut:
        return StatsOut(**self._json("GET", "/v1/stats"))

    def export(self, user_id: str) -> str:
        """The user's memories with their history as JSONL (``memory-agent import`` reads it)."""
        return self._request("GET", self._user(user_id) + "/export").text

    def ready(self) -> dict[str, Any]:
        """``/readyz``: whether the ingestion worker runs and the store is open (no key needed)."""
        try:
            response = self._http.get("/readyz")
            return {"status": response.status_code, **response.json()}
        except (httpx.TransportError, ValueError) as exc:
            raise BackendError(f"the memory service at {self.url} did not answer /readyz: {exc}") from exc


# ---------------------------------------------------------------- helpers
def _timestamp(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _turn(t: Any) -> tuple[dict[str, Any], Any]:
    """A turn as the service takes it, and its own timestamp (``Turn.from_dict``'s reading of a dict)."""
    if not isinstance(t, dict):
        if hasattr(t, "speaker") and hasattr(t, "text"):  # an extraction.Turn
            t = {"speaker": t.speaker, "text": t.text, "dia_id": getattr(t, "dia_id", None),
                 "blip_caption": getattr(t, "blip_caption", None), "timestamp": getattr(t, "timestamp", None)}
        else:
            raise InvalidInput(f"a turn is a dict with speaker and text, not {t!r}")
    out: dict[str, Any] = {"speaker": str(t.get("speaker") or "user"), "text": t.get("text")}
    if t.get("dia_id") is not None:
        out["dia_id"] = t["dia_id"]
    caption = t.get("blip_caption") or t.get("caption")
    if caption:
        out["blip_caption"] = caption
    return out, t.get("timestamp")


def _turns_body(sessions: Iterable[tuple[Sequence[Any], Any]]) -> dict[str, Any]:
    """``{"turns", "timestamp"}`` for one session, else ``{"sessions"}``; a turn's own timestamp splits a session."""
    out: list[dict[str, Any]] = []
    for pair in sessions:
        try:
            turns, ts = pair
        except (TypeError, ValueError):
            raise InvalidInput("sessions are (turns, timestamp) pairs") from None
        if isinstance(turns, (str, bytes, dict)):
            raise InvalidInput("turns must be a list of turns")
        session_ts = _timestamp(ts)
        for t in turns:
            turn, own = _turn(t)
            when = _timestamp(own) or session_ts
            if out and out[-1].get("timestamp") == when and out[-1]["_from"] is pair:
                out[-1]["turns"].append(turn)
            else:
                out.append({"turns": [turn], "timestamp": when, "_from": pair})
    for s in out:
        del s["_from"]
        if s["timestamp"] is None:
            del s["timestamp"]
    if len(out) == 1:
        return out[0]
    if not out:
        return {"turns": []}  # the service's 422: at least one turn
    return {"sessions": out}


def _detail(body: Any) -> str:
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's validation errors: one line per field
        parts = []
        for e in detail:
            if isinstance(e, dict):
                loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
            else:
                parts.append(str(e))
        return "; ".join(parts)
    return str(detail)


def _error(response: httpx.Response, not_found: Callable[[str], MemoryAgentError] | None) -> MemoryAgentError:
    code = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:500] or response.reason_phrase}
    message, name = _detail(body), (body.get("error") if isinstance(body, dict) else None)
    exc: MemoryAgentError
    if code == 401:
        exc = Unauthorized(message)
    elif code == 404 and not_found is not None and name in (None, "JobNotFound", "MemoryNotFound"):
        exc = not_found(message)
    elif code == 404 and name == "JobNotFound":
        exc = JobNotFound(message)
    elif code == 404:  # no such route (a user name the URL cannot carry, an old server)
        exc = MemoryAgentError(f"HTTP 404: {message}")
    elif code == 409:
        exc = IdempotencyConflict(message)
    elif code in (400, 405, 413, 422):
        exc = InvalidInput(message)
    elif code >= 500:
        exc = BackendError(f"the memory service failed ({code}): {message}")
    else:
        exc = MemoryAgentError(f"HTTP {code}: {message}")
    exc.status = code  # type: ignore[attr-defined]
    exc.detail = body.get("detail") if isinstance(body, dict) else body  # type: ignore[attr-defined]
    return exc


def _job_error(job: JobOut) -> MemoryAgentError:
    """A failed job's error as its type (``"InvalidInput: ..."``) when it is one of ours, else BackendError."""
    name, _, message = (job.error or "").partition(": ")
    cls = getattr(_errors, name, None) if name in _errors.__all__ else None
    simple = cls is not None and cls not in (MemoryNotFound, _errors.AlreadyApplied, _errors.InvalidModelOutput)
    exc = cls(message) if simple else BackendError(f"job {job.job_id} failed: {job.error}")
    exc.job = job  # type: ignore[attr-defined]
    return exc
