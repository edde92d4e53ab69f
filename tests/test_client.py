"""``MemoryClient`` against a real served memory (uvicorn on loopback, echo model, hashing embedder)."""

from __future__ import annotations

import socket

import httpx
import pytest

from memory_agent.client import MemoryClient, RemoteAnswer, RemoteHit, RemoteMemory
from memory_agent.errors import (
    BackendError, IdempotencyConflict, InvalidInput, JobNotFound, MemoryNotFound, Unauthorized,
)
from memory_agent.service.models import HistoryOut, JobAccepted, JobOut, StatsOut, UserOut

TURNS = [
    {"speaker": "Bob", "text": "I drink green tea every morning", "dia_id": "D1:1"},
    {"speaker": "Bob", "text": "My dog Rex is three years old", "dia_id": "D1:2"},
    {"speaker": "Ann", "text": "I moved to Lisbon last spring", "dia_id": "D1:3"},
]


@pytest.fixture
def client(served):
    with MemoryClient(served.url, served.key("app")) as c:
        yield c


def _texts(records):
    return sorted(r.text for r in records)


def test_every_method(client, served):
    job = client.add(TURNS[:2], "bob", "2024-05-08T13:56")
    assert isinstance(job, JobOut) and job.status == "done" and job.turns == job.turns_done == 2
    assert [c.op for c in job.applied] == ["ADD", "ADD"]

    accepted = client.add([TURNS[2]], "bob", "2024-05-09", wait=False)
    assert isinstance(accepted, JobAccepted) and accepted.job_id.startswith("job_") and not accepted.duplicate
    done = client.wait(accepted.job_id)
    assert done.status == "done" and client.job(accepted.job_id).job_id == accepted.job_id
    assert {j.job_id for j in client.jobs("bob")} == {job.job_id, accepted.job_id}

    sessions = client.add_sessions([([{"speaker": "Cy", "text": "I play the cello"}], "2023-01-01"),
                                    ([{"speaker": "Cy", "text": "I sold the cello"}], "2023-06-01")], "cy")
    assert sessions.turns == 2 and sessions.status == "done"
    assert sorted(m.created_at[:10] for m in client.list("cy")) == ["2023-01-01", "2023-06-01"]

    hits = client.search("green tea", "bob", k=2)
    assert len(hits) == 2 and isinstance(hits[0], RemoteHit) and hits[0].text == TURNS[0]["text"]
    assert hits[0].user == hits[0].user_id == "bob" and hits[0].score >= hits[1].score
    assert [h.text for h in client.search("tea", "bob", mode="keyword")] == [TURNS[0]["text"]]
    only_ann = client.search("moved", "bob", k=5, mode="vector", filters={"speaker": "Ann"})
    assert [h.text for h in only_ann] == [TURNS[2]["text"]]

    answer = client.answer("What does Bob drink?", "bob", k=3)
    assert isinstance(answer, RemoteAnswer) and answer.valid and answer.strategy == "memory"
    assert answer.text == answer.answer and answer.memories and answer.memories[0].user_id == "bob"

    memories = client.list("bob")
    assert _texts(memories) == sorted(t["text"] for t in TURNS) and all(isinstance(m, RemoteMemory) for m in memories)
    first = next(m for m in memories if m.text == TURNS[0]["text"])
    assert client.get(first.id, "bob") == first and first.metadata["speaker"] == "Bob"

    updated = client.update(first.id, "I drink black coffee every morning", "bob")
    assert updated.id == first.id and updated.text == "I drink black coffee every morning"
    history = client.history(first.id, "bob")
    assert all(isinstance(h, HistoryOut) for h in history)
    assert [(h.event, h.actor) for h in history] == [("ADD", "agent"), ("UPDATE", "user")]
    assert history[1].old_text == TURNS[0]["text"] and history[1].new_text == updated.text

    deleted = client.delete(first.id, "bob")
    assert deleted.id == first.id and first.id not in {m.id for m in client.list("bob")}

    assert client.users() == [UserOut(user="bob", memories=2), UserOut(user="cy", memories=2)]
    stats = client.stats()
    assert isinstance(stats, StatsOut) and stats.users == 2 and stats.memories == 4 and stats.jobs == {"done": 3}
    export = client.export("bob").splitlines()
    assert len(export) == 3 and all('"user_id": "bob"' in line for line in export)  # the deleted one with history
    assert client.ready()["worker"] is True


def _script(memory, user: str) -> dict:
    """A small application: what it observes must not depend on where the memory lives."""
    seen: dict = {}
    job = memory.add(TURNS, user, "2024-05-08T13:56")
    seen["applied"] = [(c.op, c.id, c.new_text) for c in job.applied]
    seen["search"] = [(h.id, h.text, h.user_id, round(h.score, 6), h.metadata) for h in memory.search("tea dog", user, k=3)]
    answer = memory.answer("What does Bob drink?", user)
    seen["answer"] = (answer.text, answer.valid, [m.text for m in answer.memories])
    seen["list"] = [(m.id, m.text, m.created_at, m.metadata) for m in memory.list(user)]
    target = seen["list"][0][0]
    seen["update"] = memory.update(target, "I drink black coffee every morning", user).text
    seen["get"] = memory.get(target, user).text
    seen["history"] = [(h.event, h.old_text, h.new_text, h.actor) for h in memory.history(target, user)]
    seen["delete"] = memory.delete(target, user).id
    seen["after"] = [m.text for m in memory.list(user)]
    try:
        memory.get(target, user)
    except MemoryNotFound as exc:
        seen["gone"] = str(exc)
    try:
        memory.search("", user)
    except InvalidInput:
        seen["bad_query"] = "InvalidInput"
    return seen


def test_the_one_line_switch(served, tmp_path):
    from memory_agent import Memory
    from memory_store import HashingEmbedder

    with Memory.open(tmp_path / "local", llm="echo", embedder=HashingEmbedder(dim=64), policy=None) as memory:
        local = _script(memory, "bob")
    with MemoryClient(served.url, served.key("app")) as memory:
        remote = _script(memory, "bob")
    assert local["gone"] == "no memory 1 for user 'bob'" and local["bad_query"] == "InvalidInput"
    assert remote == local


def test_errors_are_typed(client, served):
    with MemoryClient(served.url, "not-a-key") as stranger:
        with pytest.raises(Unauthorized):
            stranger.list("bob")
        with pytest.raises(Unauthorized):
            stranger.add(TURNS, "bob")
    client.add(TURNS[:1], "bob")
    mine = client.list("bob")[0].id
    for call in (lambda: client.get(99, "bob"), lambda: client.update(99, "x", "bob"),
                 lambda: client.delete(99, "bob"), lambda: client.history(99, "bob")):
        with pytest.raises(MemoryNotFound, match="no memory 99 for user 'bob'"):
            call()
    with MemoryClient(served.url, served.key("other-tenant")) as other:  # another tenant: the id is not found
        with pytest.raises(MemoryNotFound):
            other.get(mine, "bob")
        job = client.add(TURNS[1:2], "bob")
        with pytest.raises(JobNotFound):
            other.job(job.job_id)
    with pytest.raises(JobNotFound):
        client.job("job_0000000000000000")
    with pytest.raises(InvalidInput, match="query") as bad:
        client.search("", "bob")
    assert bad.value.status == 422 and bad.value.detail[0]["loc"] == ["body", "query"]
    with pytest.raises(InvalidInput, match="k"):
        client.search("tea", "bob", k=0)
    with pytest.raises(InvalidInput, match="unreadable timestamp"):
        client.add(TURNS[:1], "bob", "not a date")
    with pytest.raises(InvalidInput):
        client.answer("why?", "bob", strategy="guess")
    client.add(TURNS[:1], "bob", idempotency_key="k-1", wait=False)
    with pytest.raises(IdempotencyConflict):
        client.add(TURNS[1:2], "bob", idempotency_key="k-1", wait=False)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with MemoryClient(f"http://127.0.0.1:{port}", "k", timeout=2) as down:
        with pytest.raises(BackendError, match="cannot reach"):
            down.search("tea", "bob")


class _Flaky(httpx.BaseTransport):
    """A real connection, except that the first reply to ``path`` is lost after the server acted on it
    (``before=True``: the first connection attempt fails before anything is sent)."""

    def __init__(self, path: str, before: bool = False):
        self.inner, self.path, self.before = httpx.HTTPTransport(), path, before
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        first = request.url.path == self.path and not any(r.url.path == self.path for r in self.sent)
        self.sent.append(request)
        if first and self.before:
            raise httpx.ConnectError("connection refused", request=request)
        response = self.inner.handle_request(request)
        if first:
            response.read()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_retried_add_is_applied_once(served):
    flaky = _Flaky("/v1/users/bob/turns")
    with MemoryClient(served.url, served.key("app"), transport=flaky) as client:
        job = client.add(TURNS, "bob")
        posts = [r for r in flaky.sent if r.url.path == "/v1/users/bob/turns"]
        assert len(posts) == 2  # the lost reply was retried ...
        keys = {r.headers["Idempotency-Key"] for r in posts}
        assert len(keys) == 1 and next(iter(keys)).startswith("client-")  # ... with the same generated key
        assert job.status == "done" and job.turns == 3
        assert _texts(client.list("bob")) == sorted(t["text"] for t in TURNS)  # each turn once
        assert client.stats().jobs == {"done": 1}

        again = client.add(TURNS, "bob", idempotency_key=next(iter(keys)))  # a caller's own resend
        assert again.job_id == job.job_id and len(client.list("bob")) == 3
        assert client.add(TURNS, "bob", idempotency_key=next(iter(keys)), wait=False).duplicate
        other = client.add(TURNS[:1], "bob", wait=False)  # no key given: a fresh one per call
        assert not other.duplicate and client.wait(other.job_id).turns == 1


def test_a_failed_connection_is_retried_once(served):
    flaky = _Flaky("/v1/users/bob/search", before=True)
    with MemoryClient(served.url, served.key("app"), transport=flaky) as client:
        client.add(TURNS[:1], "bob")
        assert [h.text for h in client.search("tea", "bob")] == [TURNS[0]["text"]]
        assert sum(r.url.path == "/v1/users/bob/search" for r in flaky.sent) == 2


def test_a_lost_delete_reply_is_not_resent(served):
    flaky = _Flaky("/v1/users/bob/memories/1")
    with MemoryClient(served.url, served.key("app"), transport=flaky) as client:
        client.add(TURNS[:1], "bob")
        with pytest.raises(BackendError, match="did not answer"):
            client.delete(1, "bob")
        assert client.list("bob") == []  # it ran once, and the client said it does not know the outcome
