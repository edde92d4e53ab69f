"""The MCP server through the official SDK's own client: over stdio (``memory-agent mcp`` as a subprocess)
and over streamable HTTP (mounted at ``/mcp/`` under a real uvicorn server), with the deterministic
``echo`` model and a hashing embedder.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

mcp = pytest.importorskip("mcp")

from mcp import Client, MCPError, StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from conftest import start_service  # noqa: E402

CLI = str(Path(sys.executable).parent / "memory-agent")
TOOLS = {"add_memory", "search_memories", "answer_from_memory", "list_memories", "delete_memory"}

pytestmark = pytest.mark.timeout(60)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


def ok(result):
    """The structured result of a successful call (lists come wrapped as ``{"result": [...]}``)."""
    assert not result.is_error, result.content
    data = result.structured_content
    return data["result"] if isinstance(data, dict) and set(data) == {"result"} else data


def error_text(result) -> str:
    assert result.is_error, result
    return " ".join(getattr(c, "text", "") for c in result.content)


async def _scenario(client: Client, user: str) -> None:
    """The five tools, end to end, for a connection that acts for ``user``."""
    tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    for t in tools:  # whose memories is the connection's business, never an argument
        assert not {"user", "user_id", "tenant"} & set(t.input_schema.get("properties", {})), t.name

    job = ok(await client.call_tool("add_memory", {"text": "I keep the vault code 4417 in my desk drawer",
                                                   "timestamp": "2024-05-08T13:56"}))
    assert job["status"] == "done" and job["user"] == user and job["counts"]["add"] == 1
    (change,) = job["applied"]
    assert change["op"] == "ADD" and "4417" in change["new_text"]
    job = ok(await client.call_tool("add_memory", {"turns": [
        {"speaker": user, "text": "My sister Maya lives in Lisbon"},
        {"speaker": user, "text": "I am allergic to peanuts"}]}))
    assert job["status"] == "done" and [c["op"] for c in job["applied"]] == ["ADD", "ADD"]

    memories = ok(await client.call_tool("list_memories", {}))
    assert len(memories) == 3 and {m["user"] for m in memories} == {user}
    hits = ok(await client.call_tool("search_memories", {"query": "vault code 4417", "k": 2, "mode": "keyword"}))
    assert 1 <= len(hits) <= 2 and "4417" in hits[0]["text"] and hits[0]["id"] == change["id"]
    answer = ok(await client.call_tool("answer_from_memory", {"question": "Where is the vault code?"}))
    assert answer["valid"] and "4417" in answer["answer"] and answer["memories"]

    gone = ok(await client.call_tool("delete_memory", {"memory_id": change["id"]}))
    assert gone["id"] == change["id"] and "4417" in gone["text"]
    assert len(ok(await client.call_tool("list_memories", {}))) == 2
    assert not any("4417" in h["text"] for h in ok(await client.call_tool("search_memories", {"query": "vault"})))

    # typed errors come back as tool errors with their message; the server keeps serving
    assert "no memory" in error_text(await client.call_tool("delete_memory", {"memory_id": change["id"]}))
    assert "timestamp" in error_text(await client.call_tool("add_memory", {"text": "x", "timestamp": "soonish"}))
    assert "either text or turns" in error_text(await client.call_tool("add_memory", {}))
    assert error_text(await client.call_tool("search_memories", {"query": "x", "k": 0}))
    assert len(ok(await client.call_tool("list_memories", {}))) == 2


# ------------------------------------------------------------------ stdio


def test_stdio_tools_for_the_cli_user(tmp_path):
    params = StdioServerParameters(command=CLI, args=["mcp", "--db", str(tmp_path / "db"), "--user", "alice",
                                                      "--model", "echo", "--embedder", "hashing", "--untrained"])

    async def main():
        async with Client(params) as client:
            await _scenario(client, "alice")

    run(main())
    # what the tools wrote is the local owner's, under the plain user id
    from memory_agent import Memory

    with Memory.open(tmp_path / "db", llm="echo", embedder="hashing", policy=None) as m:
        texts = [r.text for r in m.list("alice")]
    assert len(texts) == 2 and any("Lisbon" in t for t in texts)


# ------------------------------------------------------------------ streamable HTTP


@pytest.fixture
def served_mcp(tmp_path):
    s = start_service(tmp_path / "s", mcp=True)
    yield s
    s.stop()


def http_client(served, key: str | None, user: str | None = "alice", mode: str = "auto") -> Client:
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if user is not None:
        headers["X-Memory-User"] = user
    transport = streamable_http_client(served.url + "/mcp/", http_client=create_mcp_http_client(headers=headers))
    return Client(transport, mode=mode)


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026 per-request protocol, and the initialize handshake
def test_http_tools_are_scoped_to_the_key_and_user_header(served_mcp, mode):
    acme = served_mcp.key("acme")

    async def main():
        async with http_client(served_mcp, acme, "alice", mode) as client:
            await _scenario(client, "alice")
            # an argument naming another user is not an argument
            res = await client.call_tool("list_memories", {"user": "bob", "tenant": "x"})
            assert res.is_error or {m["user"] for m in ok(res)} == {"alice"}
        # the same tenant's other user, another tenant's same user: empty namespaces
        for key, user in [(acme, "bob"), (served_mcp.key("evil"), "alice")]:
            async with http_client(served_mcp, key, user, mode) as client:
                assert ok(await client.call_tool("list_memories", {})) == []
                assert ok(await client.call_tool("search_memories", {"query": "Lisbon sister"})) == []
                mine = ok(await client.call_tool("add_memory", {"text": f"{user} likes tea"}))["applied"][0]["id"]
                alices = ok(await client.call_tool("answer_from_memory", {"question": "Where does Maya live?"}))
                assert all("Lisbon" not in m["text"] for m in alices["memories"])
                assert "no memory" in error_text(await client.call_tool("delete_memory", {"memory_id": mine - 1}))

    run(main())
    # the REST API sees what MCP wrote, in the same namespaces
    rest = httpx.get(f"{served_mcp.url}/v1/users/alice/memories", headers=served_mcp.headers("acme")).json()
    assert len(rest) == 2 and any("Lisbon" in m["text"] for m in rest)
    assert [m["text"] for m in httpx.get(f"{served_mcp.url}/v1/users/alice/memories",
                                         headers=served_mcp.headers("evil")).json()] == ["alice likes tea"]


def test_http_refuses_without_a_valid_key_or_user(served_mcp):
    url = served_mcp.url + "/mcp/"
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream", "X-Memory-User": "alice"}
    for auth in [None, "Bearer wrong", "Bearer", "Basic abc"]:
        headers = {**accept, **({"Authorization": auth} if auth else {})}
        r = httpx.post(url, json=init, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert httpx.get(url, headers=headers).status_code == 401
    key = served_mcp.key("acme")
    for user in [None, "", "a\tb", "x" * 201]:
        headers = {"Accept": accept["Accept"], "Authorization": f"Bearer {key}"}
        r = httpx.post(url, json=init, headers=headers if user is None else {**headers, "X-Memory-User": user})
        assert r.status_code == 400 and "user" in r.json()["detail"], r.text

    async def refused(key, user):
        with pytest.raises(BaseException) as info:
            async with http_client(served_mcp, key, user) as client:
                await client.list_tools()
        assert info.group_contains(MCPError) if isinstance(info.value, BaseExceptionGroup) \
            else isinstance(info.value, MCPError)

    async def main():
        await refused(None, "alice")
        await refused("mak_wrong", "alice")
        await refused(key, None)
        # a key revoked mid-connection stops working at its next call
        async with http_client(served_mcp, key, "alice") as client:
            assert ok(await client.call_tool("list_memories", {})) == []
            served_mcp.service.keys.revoke("acme")
            with pytest.raises(MCPError):
                await client.call_tool("list_memories", {})

    run(main())


def test_http_a_long_add_is_queued_and_lands(served_mcp):
    key = served_mcp.key("acme")
    turns = [{"speaker": "alice", "text": f"Fact number {i} about alice"} for i in range(21)]

    async def main():
        async with http_client(served_mcp, key, "alice") as client:
            job = ok(await client.call_tool("add_memory", {"turns": turns}))
            assert job["status"] in ("queued", "running", "done") and job["turns"] == 21
            served_mcp.service.jobs.wait(served_mcp.service.tenant(key), job["job_id"], 20)
            assert len(ok(await client.call_tool("list_memories", {}))) == 21

    run(main())


def test_http_identity_reads_the_headers(served_mcp):
    from memory_agent.errors import InvalidInput, Unauthorized
    from memory_agent.service.mcp_server import http_identity

    key = served_mcp.key("acme")
    tenant = served_mcp.service.tenant(key)
    wire = "zoë".encode().decode("latin-1")  # how an ASGI server hands over UTF-8 header bytes
    assert http_identity(served_mcp.service, {"authorization": f"bearer {key}", "x-memory-user": wire}) \
        == (tenant, "zoë")
    with pytest.raises(InvalidInput, match="UTF-8"):
        http_identity(served_mcp.service, {"authorization": f"Bearer {key}", "x-memory-user": "\xe9"})
    with pytest.raises(Unauthorized):
        http_identity(served_mcp.service, {"authorization": key, "x-memory-user": "alice"})
