"""The memory service over real HTTP: auth and tenants, every route's success and error shapes,
durable jobs through a SIGKILL and a restart, idempotent retries.

Servers are real uvicorn processes or threads on loopback (``served`` / ``start_service``
in conftest), with the deterministic ``echo`` model and a hashing embedder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from memory_agent import Memory
from memory_agent.llms.echo import EchoLLM
from memory_store import HashingEmbedder

CLI = str(Path(sys.executable).parent / "memory-agent")


def turns(*texts, speaker="Alice"):
    return {"turns": [{"speaker": speaker, "text": t} for t in texts]}


def add(served, key, user, *texts, **params):
    r = httpx.post(f"{served.url}/v1/users/{user}/turns", json=turns(*texts), headers=served.headers(key),
                   params={"wait": "true", **params})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "done"
    return r.json()


# ------------------------------------------------------------------ auth and tenants


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer mak_x"},
                                     {"Authorization": "Basic abc"}, {"Authorization": "Bearer  x y"}])
def test_requests_without_a_valid_key_are_401(served, headers):
    for method, path in [("GET", "/v1/users"), ("GET", "/v1/stats"), ("POST", "/v1/users/a/search"),
                         ("GET", "/v1/jobs/job_1"), ("GET", "/v1/users/a/memories/1")]:
        r = httpx.request(method, served.url + path, headers=headers, json={"query": "x"})
        assert r.status_code == 401, (path, r.text)
        assert "detail" in r.json()


def test_a_revoked_key_is_401(served):
    h = served.headers("app")
    assert httpx.get(served.url + "/v1/users", headers=h).status_code == 200
    served.service.keys.revoke("app")
    assert httpx.get(served.url + "/v1/users", headers=h).status_code == 401


def test_another_tenant_never_reaches_our_users(served):
    first = add(served, "acme", "alice", "Alice keeps the vault code 4417 in her drawer")
    mid = first["applied"][0]["id"]
    other = served.headers("evil")
    # same user name, the other tenant: an empty namespace
    for path in ["/v1/users/alice/memories", "/v1/users"]:
        assert httpx.get(served.url + path, headers=other).json() == []
    hits = httpx.post(served.url + "/v1/users/alice/search", json={"query": "vault code 4417"}, headers=other)
    assert hits.status_code == 200 and hits.json() == []
    # the first tenant's memory and job ids answer 404, exactly like ids that do not exist
    for method, path in [("GET", f"/v1/users/alice/memories/{mid}"), ("DELETE", f"/v1/users/alice/memories/{mid}"),
                         ("GET", f"/v1/users/alice/memories/{mid}/history"), ("GET", f"/v1/jobs/{first['job_id']}")]:
        theirs = httpx.request(method, served.url + path, headers=other)
        missing = httpx.request(method, served.url + path.replace(str(mid), "999999").replace(first["job_id"], "job_0"),
                                headers=other)
        assert theirs.status_code == missing.status_code == 404
        assert "acme" not in theirs.text and "/" not in theirs.json()["detail"].split("user")[-1]
    r = httpx.patch(f"{served.url}/v1/users/alice/memories/{mid}", json={"text": "owned"}, headers=other)
    assert r.status_code == 404
    # user names that look like another namespace stay inside ours
    tenant = served.service.keys.tenant(served.key("acme"))
    for name in [f"{tenant}/alice", "../alice", "alice/..", "%2e%2e"]:
        r = httpx.get(f"{served.url}/v1/users/{name}/memories", headers=other)
        assert r.status_code in (200, 404) and "4417" not in r.text
    # and the owner still has it, unchanged
    mine = httpx.get(served.url + "/v1/users/alice/memories", headers=served.headers("acme")).json()
    assert [m["text"] for m in mine] == ["Alice keeps the vault code 4417 in her drawer"]


def test_two_keys_of_one_tenant_share_its_users(served):
    served.key("a1")
    tenant = served.service.keys.tenant(served.key("a1"))
    served.key("a2", tenant=tenant)
    add(served, "a1", "bob", "Bob plays the cello on Sundays")
    assert [u["user"] for u in httpx.get(served.url + "/v1/users", headers=served.headers("a2")).json()] == ["bob"]


# ------------------------------------------------------------------ routes


def test_every_route_success_shape(served):
    h = served.headers("app")
    job = add(served, "app", "alice", "Alice adopted a cat named Tom", "Alice works as a nurse in Lyon")
    assert job["turns"] == job["turns_done"] == 2 and job["progress"] == 1.0
    assert [c["op"] for c in job["applied"]] == ["ADD", "ADD"] and job["counts"]["add"] == 2
    cat = job["applied"][0]["id"]
    hits = httpx.post(served.url + "/v1/users/alice/search", json={"query": "cat Tom", "k": 1}, headers=h).json()
    assert [x["id"] for x in hits] == [cat] and set(hits[0]) >= {"id", "user", "text", "score", "created_at"}
    for mode in ("vector", "keyword", "hybrid"):
        r = httpx.post(served.url + "/v1/users/alice/search", json={"query": "nurse", "mode": mode}, headers=h)
        assert r.status_code == 200 and r.json()[0]["text"].endswith("nurse in Lyon")
    r = httpx.post(served.url + "/v1/users/alice/search", headers=h,
                   json={"query": "cat", "filters": {"speaker": "Nobody"}})
    assert r.json() == []
    ans = httpx.post(served.url + "/v1/users/alice/answer", json={"question": "What is the cat called?"}, headers=h)
    assert ans.status_code == 200 and ans.json()["valid"] is True and ans.json()["memories"]
    got = httpx.get(f"{served.url}/v1/users/alice/memories/{cat}", headers=h).json()
    assert got["text"] == "Alice adopted a cat named Tom" and got["user"] == "alice"
    upd = httpx.patch(f"{served.url}/v1/users/alice/memories/{cat}", json={"text": "Alice's cat is named Tommy"},
                      headers=h)
    assert upd.status_code == 200 and upd.json()["text"] == "Alice's cat is named Tommy"
    hist = httpx.get(f"{served.url}/v1/users/alice/memories/{cat}/history", headers=h).json()
    assert [(e["event"], e["new_text"]) for e in hist] == [("ADD", "Alice adopted a cat named Tom"),
                                                         ("UPDATE", "Alice's cat is named Tommy")]
    assert httpx.delete(f"{served.url}/v1/users/alice/memories/{cat}", headers=h).json()["id"] == cat
    assert [m["id"] for m in httpx.get(served.url + "/v1/users/alice/memories", headers=h).json()] != [cat]
    assert httpx.get(served.url + "/v1/users", headers=h).json() == [{"user": "alice", "memories": 1}]
    assert httpx.get(served.url + "/v1/stats", headers=h).json() == {"users": 1, "memories": 1, "jobs": {"done": 1}}
    jobs = httpx.get(served.url + "/v1/users/alice/jobs", headers=h).json()
    assert [j["job_id"] for j in jobs] == [job["job_id"]]
    export = httpx.get(served.url + "/v1/users/alice/export", headers=h)
    rows = [__import__("json").loads(line) for line in export.text.splitlines()]
    assert export.status_code == 200 and {r["user_id"] for r in rows} == {"alice"}
    assert sorted(bool(r.get("deleted")) for r in rows) == [False, True]  # the deleted one, with its history
    assert httpx.get(served.url + "/healthz").json() == {"ok": True}
    assert httpx.get(served.url + "/readyz").json()["ready"] is True
    assert "/v1/users/{user}/turns" in httpx.get(served.url + "/openapi.json").json()["paths"]


def test_sessions_and_a_queued_job(served):
    h = served.headers("app")
    body = {"sessions": [{"turns": [{"speaker": "A", "text": "I live in Oslo now"}], "timestamp": "2023-05-08"},
                         {"turns": [{"speaker": "A", "text": "I started learning Norwegian"}],
                          "timestamp": "1:56 pm on 9 May, 2023"}]}
    r = httpx.post(served.url + "/v1/users/u/turns", json=body, headers=h)
    assert r.status_code == 202 and r.json()["job_id"].startswith("job_") and r.json()["duplicate"] is False
    job = served.service.jobs.wait(served.service.keys.tenant(served.key("app")), r.json()["job_id"], 20)
    assert job.status == "done"
    mems = httpx.get(served.url + "/v1/users/u/memories", headers=h).json()
    assert [m["created_at"][:10] for m in mems] == ["2023-05-08", "2023-05-09"]


@pytest.mark.parametrize("body,field", [
    ({"turns": []}, "turns"),
    ({"turns": [{"speaker": "A"}]}, "text"),
    ({"turns": [{"speaker": "A", "text": "x", "mood": "happy"}]}, "mood"),
    ({"turns": [{"speaker": "A", "text": "x" * 20_001}]}, "text"),
    ({"sessions": [{"turns": [{"speaker": "A", "text": "x"}]}], "turns": [{"speaker": "A", "text": "x"}]}, "body"),
    ({"turns": [{"speaker": "A", "text": "hi there"}], "timestamp": "not a date"}, "timestamp"),
    ({"turns": [{"speaker": "", "text": "hi there"}]}, "speaker"),
])
def test_bad_turn_bodies_are_422_naming_the_field(served, body, field):
    r = httpx.post(served.url + "/v1/users/u/turns", json=body, headers=served.headers("app"))
    assert r.status_code == 422, r.text
    assert field in r.text
    assert served.service.jobs.list(served.service.keys.tenant(served.key("app"))) == []  # nothing queued


@pytest.mark.parametrize("path,body", [
    ("/v1/users/u/search", {"query": ""}),
    ("/v1/users/u/search", {"query": "x", "k": 0}),
    ("/v1/users/u/search", {"query": "x", "mode": "psychic"}),
    ("/v1/users/u/search", {"query": "x", "filters": {"speaker": {"$regex": ".*"}}}),
    ("/v1/users/u/answer", {"question": "x", "strategy": "guess"}),
])
def test_bad_read_bodies_are_422(served, path, body):
    r = httpx.post(served.url + path, json=body, headers=served.headers("app"))
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_bad_ids_and_users(served):
    h = served.headers("app")
    assert httpx.get(served.url + "/v1/users/u/memories/abc", headers=h).status_code == 422
    assert httpx.get(served.url + "/v1/users/u/memories/999", headers=h).status_code == 404
    assert httpx.get(served.url + "/v1/jobs/nope", headers=h).status_code == 404
    assert httpx.get(served.url + "/v1/users/" + "x" * 300 + "/memories", headers=h).status_code == 422
    assert httpx.get(served.url + "/v1/users/a%01b/memories", headers=h).status_code == 422


def test_a_body_over_the_limit_is_413_and_changes_nothing(served):
    big = b'{"turns": [{"speaker": "A", "text": "' + b"x" * (5 * 1024 * 1024) + b'"}]}'
    r = httpx.post(served.url + "/v1/users/u/turns", content=big, headers={**served.headers("app"),
                                                                          "content-type": "application/json"})
    assert r.status_code == 413
    assert served.service.jobs.open_count() == 0


def test_wait_is_refused_for_big_requests(served):
    body = turns(*[f"fact number {i} about gardening" for i in range(21)])
    r = httpx.post(served.url + "/v1/users/u/turns", params={"wait": "true"}, json=body, headers=served.headers("app"))
    assert r.status_code == 422 and "poll" in r.json()["detail"]


# ------------------------------------------------------------------ idempotency and exactly-once


def test_a_retried_request_adds_once(served):
    h = {**served.headers("app"), "Idempotency-Key": "req-1"}
    body = turns("Alice bought a red bicycle")
    first = httpx.post(served.url + "/v1/users/alice/turns", json=body, headers=h)
    second = httpx.post(served.url + "/v1/users/alice/turns", json=body, headers=h)
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"] and second.json()["duplicate"] is True
    served.service.jobs.wait(served.service.keys.tenant(served.key("app")), first.json()["job_id"], 20)
    texts = [m["text"] for m in httpx.get(served.url + "/v1/users/alice/memories", headers=h).json()]
    assert texts == ["Alice bought a red bicycle"]
    # the same key for another body is a conflict, not a silent replay
    r = httpx.post(served.url + "/v1/users/alice/turns", json=turns("something else entirely"), headers=h)
    assert r.status_code == 409


def test_a_resumed_ingestion_applies_each_turn_once(tmp_path):
    memory = Memory.open(tmp_path / "m", llm=EchoLLM(), embedder=HashingEmbedder(dim=64), policy=None)
    texts = [f"Alice visited museum number {i} in Paris" for i in range(6)]
    batch = [{"speaker": "Alice", "text": t} for t in texts]
    first = memory.add(batch[:4], "alice", receipt="job_x")  # the crash came after turn 3 committed
    assert first.counts()["add"] == 4
    again = memory.add(batch, "alice", receipt="job_x")  # the job resumed with all its turns
    assert again.already_applied == 4 and again.counts()["add"] == 2
    assert sorted(r.text for r in memory.list("alice")) == sorted(texts)
    assert memory.add(batch, "alice", receipt="job_x").counts()["add"] == 0  # a third run changes nothing
    memory.close()


# ------------------------------------------------------------------ crash and restart


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db: Path | str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([CLI, "serve", "--db", str(db), "--embedder", "hashing", "--model", "echo:0.03",
                             "--untrained", "--no-mcp", "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        time.sleep(0.1)
    raise RuntimeError("server did not start")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_queue_then_restart_applies_every_acknowledged_turn_once(tmp_path, request, backend):
    db = tmp_path / "crash" if backend == "sqlite" else request.getfixturevalue("pg_database")("crash")
    key = subprocess.run([CLI, "keys", "create", "--db", str(db), "--name", "app"], capture_output=True,
                         text=True, check=True).stdout.strip()
    h = {"Authorization": f"Bearer {key}"}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(db, port)
    acked: dict[str, list[str]] = {}
    try:
        for j in range(40):  # 40 requests of 5 turns: a queue of 200 turns
            texts = [f"Alice noted item {j}-{i} about her garden plot" for i in range(5)]
            r = httpx.post(f"{url}/v1/users/alice/turns", json=turns(*texts), headers={**h, "Idempotency-Key": f"r{j}"})
            assert r.status_code == 202
            acked[f"r{j}"] = texts
        while httpx.get(f"{url}/v1/stats", headers=h).json()["jobs"].get("done", 0) < 3:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    proc = _serve(db, port)
    try:
        stats = httpx.get(f"{url}/v1/stats", headers=h).json()
        assert 0 < stats["jobs"].get("done", 0) < 40  # killed mid-queue
        retried = httpx.post(f"{url}/v1/users/alice/turns", json=turns(*acked["r39"]),
                             headers={**h, "Idempotency-Key": "r39"})
        assert retried.json()["duplicate"] is True  # a client retrying after the crash adds nothing
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/v1/stats", headers=h).json()["jobs"] != {"done": 40}:
            assert time.monotonic() < deadline, httpx.get(f"{url}/v1/stats", headers=h).json()
            time.sleep(0.1)
        texts = [m["text"] for m in httpx.get(f"{url}/v1/users/alice/memories", headers=h).json()]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    expected = [t for batch in acked.values() for t in batch]
    assert len(texts) == len(expected) == 200
    assert sorted(texts) == sorted(expected)  # none lost, none twice


def test_a_second_service_on_one_folder_is_refused(served):
    from memory_agent.errors import StoreError
    from memory_agent.service import Service

    other = Service(served.service.memory, served.folder)
    with pytest.raises(StoreError, match="already running"):
        other.start()
    other.db.close()


def test_each_request_is_logged_as_its_route_without_user_or_text(served, caplog):
    import json as _json

    with caplog.at_level("INFO", logger="memory_agent.service"):
        add(served, "app", "zelda-private", "Zelda hides the key under the blue flowerpot")
        httpx.post(served.url + "/v1/users/zelda-private/search", json={"query": "flowerpot"},
                   headers=served.headers("app"))
    lines = [_json.loads(r.getMessage()) for r in caplog.records if r.name == "memory_agent.service"
             and r.getMessage().startswith("{")]
    assert lines[-1]["route"] == "/v1/users/{user}/search" and lines[-1]["status"] == 200
    text = caplog.text
    assert "zelda-private" not in text and "flowerpot" not in text and served.key("app") not in text


# ------------------------------------------------------------------ review findings (kept as regressions)


def test_a_job_that_skips_a_fact_finishes_and_the_worker_goes_on(served):
    h = served.headers("app")
    # "one" is a single word: the extractor's fact check refuses it (a skipped turn, with why)
    r = httpx.post(served.url + "/v1/users/alice/turns", params={"wait": "true"}, headers=h,
                   json={"turns": [{"speaker": "Alice", "text": "one", "dia_id": "D1:1"}]})
    job = r.json()
    assert job["status"] == "done" and job["skipped"][0]["dia_id"] == "D1:1" and job["skipped"][0]["reason"]
    assert httpx.get(served.url + "/readyz").json()["worker"] is True
    add(served, "app", "alice", "Alice grows tomatoes on her balcony")  # the queue still runs


def test_a_failed_job_runs_again_when_its_request_is_retried_and_applies_each_turn_once(tmp_path):
    from memory_agent.errors import BackendError
    from memory_agent.service import Service
    from memory_agent.service.models import TurnsIn

    class Flaky(EchoLLM):
        fail_at = 3  # the third generate call: after the first manager wave committed

        def generate(self, batch, **kw):
            if self.usage.calls + 1 == self.fail_at:
                self.usage.calls += 1
                raise BackendError("model server down")
            return super().generate(batch, **kw)

    memory = Memory.open(tmp_path / "m", llm=Flaky(), embedder=HashingEmbedder(dim=64), policy=None, wave_size=1)
    memory.add([{"speaker": "A", "text": "Alice has a garden in Lyon"}], "alice")  # so the manager is asked
    service = Service(memory).start()
    try:
        body = TurnsIn.model_validate({"idempotency_key": "k1", "turns": [
            {"speaker": "A", "text": "Alice plays the cello on Sundays"},
            {"speaker": "A", "text": "Alice bought a red bicycle yesterday"}]})
        first, _ = service.add_turns(None, "alice", body, wait=True)
        assert first.status == "failed" and "model server down" in first.error
        again, created = service.add_turns(None, "alice", body, wait=True)
        assert not created and again.job_id == first.job_id and again.status == "done"
        texts = [r.text for r in memory.list("alice")]
        assert texts.count("Alice plays the cello on Sundays") == 1
        assert any("bicycle" in t for t in texts) and len(texts) == 3
    finally:
        service.close()
        memory.close()


def test_too_many_waiters_get_their_queued_job_at_once(served):
    from memory_agent.service.core import MAX_WAITERS

    held = [served.service._waiters.acquire(blocking=False) for _ in range(MAX_WAITERS)]
    try:
        assert all(held)
        r = httpx.post(served.url + "/v1/users/u/turns", params={"wait": "true"},
                       json=turns("Alice likes green tea"), headers=served.headers("app"))
        assert r.status_code == 202 and r.json()["status"] in ("queued", "running", "done")
    finally:
        for _ in held:
            served.service._waiters.release()


def test_a_chunked_body_over_the_limit_is_413(served):
    def chunks():
        yield b'{"turns": [{"speaker": "A", "text": "'
        for _ in range(5):
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    r = httpx.post(served.url + "/v1/users/u/turns", content=chunks(),
                   headers={**served.headers("app"), "content-type": "application/json"})
    assert r.status_code == 413


def test_unmatched_paths_are_logged_without_the_user(served, caplog):
    with caplog.at_level("INFO", logger="memory_agent.service"):
        httpx.get(served.url + "/v1/users/secret%2Fcarol/memories", headers=served.headers("app"))
        httpx.get(served.url + "/v1/nothing-here/secret-dave", headers=served.headers("app"))
    assert "carol" not in caplog.text and "secret-dave" not in caplog.text and "<unmatched>" in caplog.text


@pytest.mark.parametrize("method,path,headers,body", [
    ("GET", "/v1/users/alice/memories/99999999999999999999", {}, None),
    ("POST", "/v1/users/alice/turns", {"Idempotency-Key": ""}, {"turns": [{"speaker": "A", "text": "hi there"}]}),
    ("GET", "/v1/users/a%2Fb/memories/1", {}, None),
])
def test_out_of_range_ids_empty_keys_and_slashes_are_422_or_404(served, method, path, headers, body):
    r = httpx.request(method, served.url + path, headers={**served.headers("app"), **headers}, json=body)
    assert r.status_code in (404, 422), r.text
    assert r.status_code != 500
