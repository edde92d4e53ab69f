"""``memory-agent bench serve``: a bounded loopback load test of the memory service, with an exactly-once check.

The service runs in this process exactly as ``memory-agent serve`` runs it
(FastAPI on a real uvicorn server on a free loopback port, the durable job
queue and its worker) over a fresh temporary folder, with the ``echo`` model
and the hashing embedder, so the numbers are the service's and not a model's.
``clients`` concurrent clients (asyncio tasks in a load-generator process of
their own, one keep-alive connection each) then run closed loops for
``seconds``: each request is a search (``1 - turn_ratio`` of them) or an
enqueue of two new turns (202, not waited for), each enqueue with its own
idempotency key and turn texts no other request uses. A client sends its next
request as soon as it has the reply, with no pause, so the latencies are
queueing under saturation, not an idle service's.

Then the queue is drained and every acknowledged turn (its enqueue got a 202)
is looked up among the memories: its text must be there exactly once. Lost
turns (acknowledged, never applied) and duplicated ones (applied twice) are
counted; the goal is zero of each, and zero errors.

The load generator is a second process on the same machine (not the
server's GIL), with a minimal HTTP/1.1 client; on a small machine it still
takes some of the server's CPU, so the latencies are an upper bound of what a
client on another machine sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["run_serve_bench", "percentile"]

_WORDS = ("tea coffee garden dog cat violin cello lisbon paris hiking sailing chess painting novel trip "
          "sister brother birthday concert marathon recipe bakery museum camera guitar yoga river "
          "mountain beach winter summer school office doctor bicycle kitchen festival").split()
TURNS_PER_ENQUEUE = 2
_REQUEST_TIMEOUT_S = 30.0


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _latency(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": _ms(percentile(values, 50)), "p90_ms": _ms(percentile(values, 90)),
            "p99_ms": _ms(percentile(values, 99)), "max_ms": _ms(max(values) if values else None),
            "mean_ms": _ms(sum(values) / len(values) if values else None)}


class _Server:
    """The service on a real uvicorn server on a free loopback port, in a thread of this process."""

    def __init__(self, folder: Path, *, embedder: str = "hashing", llm: str = "echo"):
        import uvicorn

        from memory_agent.memory import Memory
        from memory_agent.service.app import create_app
        from memory_agent.service.core import Service

        self.memory = Memory.open(folder, llm=llm, embedder=embedder, policy=None)
        self.service = Service(self.memory)
        self.key = self.service.keys.create("bench")[0]
        self.tenant = self.service.tenant(self.key)
        app = create_app(self.service)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, backlog=4096))
        self.thread = threading.Thread(target=self.server.run, name="bench-uvicorn", daemon=True)

    def start(self) -> "_Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the benchmark's server did not start")
            time.sleep(0.01)
        self.service.start()
        return self

    def drain(self, timeout: float) -> bool:
        """Wait until no job is queued or running; False on timeout (or a stopped worker)."""
        end = time.monotonic() + timeout
        while self.service.jobs.open_count():
            if time.monotonic() > end or not self.service.worker.is_alive():
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.service.close()
        self.memory.close()


class _Load:
    """The clients' shared tallies (one event loop: no locks needed)."""

    def __init__(self) -> None:
        self.search_s: list[float] = []
        self.enqueue_s: list[float] = []
        self.errors: Counter[str] = Counter()
        self.acked: dict[str, str] = {}      # turn text -> user, for every acknowledged turn
        self.unacked: dict[str, str] = {}    # sent, but the enqueue failed: may or may not be applied
        self.hits = 0

    def as_dict(self) -> dict[str, Any]:
        return {"search_s": self.search_s, "enqueue_s": self.enqueue_s, "errors": dict(self.errors),
                "acked": self.acked, "unacked": self.unacked, "hits": self.hits}


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just what the service answers (JSON with a length).

    The load generator is this small on purpose: a full client library costs
    more CPU per request than the service's search itself, and on a small
    machine that CPU is taken from the server being measured.
    """

    def __init__(self, host: str, port: int, key: str):
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {key}\r\n"
        self.reader: Any = None
        self.writer: Any = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes, extra: str = "") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
        try:
            self.writer.write(head.encode("ascii") + body)
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionResetError("the server closed the connection")
            status = int(status_line.split()[1])
            length, keep = 0, True
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    raise ValueError("chunked replies are not expected from the service")
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
            data = await self.reader.readexactly(length) if length else b""
        except BaseException:
            await self.close()
            raise
        if not keep:
            await self.close()
        return status, data


async def _client(i: int, conn: _Connection, users: list[str], end: float, turn_ratio: float, load: _Load,
                  rng: random.Random) -> None:
    seq = 0
    try:
        while time.perf_counter() < end:
            user = users[rng.randrange(len(users))]
            if rng.random() < turn_ratio:
                seq += 1
                texts = [f"{' '.join(rng.sample(_WORDS, 3))} note c{i} n{seq} t{j}" for j in range(TURNS_PER_ENQUEUE)]
                body = {"turns": [{"speaker": "user" if j % 2 == 0 else "assistant", "text": t}
                                  for j, t in enumerate(texts)]}
                extra = f"Idempotency-Key: bench-{i}-{seq}-{secrets.token_hex(4)}\r\n"
                kind, path, expected = "enqueue", f"/v1/users/{user}/turns", 202
            else:
                texts, extra = [], ""
                body = {"query": " ".join(rng.sample(_WORDS, 2)), "k": 5}
                kind, path, expected = "search", f"/v1/users/{user}/search", 200
            payload = json.dumps(body).encode("utf-8")
            t0 = time.perf_counter()
            try:
                status, data = await asyncio.wait_for(conn.post(path, payload, extra), _REQUEST_TIMEOUT_S)
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:  # one error, and the loop goes on
                load.errors[f"{kind}:{type(exc).__name__}"] += 1
                load.unacked.update(dict.fromkeys(texts, user))
                continue
            took = time.perf_counter() - t0
            if status != expected:
                load.errors[f"{kind}:{status}"] += 1
                load.unacked.update(dict.fromkeys(texts, user))
                continue
            if kind == "enqueue":
                load.enqueue_s.append(took)
                load.acked.update(dict.fromkeys(texts, user))
            else:
                load.search_s.append(took)
                load.hits += len(json.loads(data))
    finally:
        await conn.close()


async def _run_clients(port: int, key: str, clients: int, seconds: float, turn_ratio: float, users: list[str],
                       seed: int) -> dict[str, Any]:
    load = _Load()
    t0 = time.perf_counter()
    end = t0 + seconds
    await asyncio.gather(*(_client(i, _Connection("127.0.0.1", port, key), users, end, turn_ratio, load,
                                   random.Random(seed * 7919 + i)) for i in range(clients)))
    return {**load.as_dict(), "wall_s": time.perf_counter() - t0}


def _loadgen_main() -> None:
    """The load generator's process: its settings as JSON on stdin, its tallies as JSON on stdout."""
    cfg = json.loads(sys.stdin.read())
    out = asyncio.run(_run_clients(cfg["port"], cfg["key"], cfg["clients"], cfg["seconds"], cfg["turn_ratio"],
                                   cfg["users"], cfg["seed"]))
    sys.stdout.write(json.dumps(out))


def _load(port: int, key: str, clients: int, seconds: float, turn_ratio: float, users: list[str],
          seed: int) -> dict[str, Any]:
    """Run the clients in a process of their own (their CPU is not the server's GIL), return their tallies."""
    cfg = {"port": port, "key": key, "clients": clients, "seconds": seconds, "turn_ratio": turn_ratio,
           "users": users, "seed": seed}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                      os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "memory_agent.service.bench", "--loadgen"], input=json.dumps(cfg),
                          capture_output=True, text=True, env=env, timeout=seconds + 300)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _seed(server: _Server, users: list[str], per_user: int, rng: random.Random) -> set[str]:
    """Give every user ``per_user`` memories before the clock starts (searches then find something)."""
    from memory_agent.service.models import TurnsIn

    texts: set[str] = set()
    for user in users:
        turns = []
        for n in range(per_user):
            text = f"{' '.join(rng.sample(_WORDS, 4))} seed {user} {n}"
            texts.add(text)
            turns.append({"speaker": "user", "text": text})
        server.service.add_turns(server.tenant, user, TurnsIn(turns=turns))
    if not server.drain(120):
        raise RuntimeError("the seed jobs did not finish")
    return texts


def _check_turns(server: Any, names: list[str], acked: list[str], unacked: list[str],
                 seeded: set[str]) -> dict[str, Any]:
    """Every acknowledged turn among the memories exactly once: counted by text over every user."""
    seen: Counter[str] = Counter()
    for user in names:
        seen.update(m.text for m in server.service.memories(server.tenant, user))
    lost = sorted(t for t in acked if seen[t] == 0)
    duplicated = sorted(t for t in acked if seen[t] > 1) + sorted(t for t in unacked if seen[t] > 1)
    known = set(acked) | set(unacked) | seeded
    return {
        "acknowledged": len(acked),
        "applied": sum(1 for t in acked if seen[t] >= 1),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "unacknowledged_sent": len(unacked),
        "unexpected_memories": sum(1 for t in seen if t not in known),
        "examples_lost": lost[:3],
        "examples_duplicated": duplicated[:3],
    }


def run_serve_bench(clients: int = 32, seconds: float = 30.0, turn_ratio: float = 0.2, *, users: int = 8,
                    seed_memories: int = 50, drain_timeout: float = 300.0, folder: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Run the load test (see the module docstring) and return its report."""
    if clients < 1 or seconds <= 0 or not 0.0 <= turn_ratio <= 1.0 or users < 1:
        raise ValueError("clients >= 1, seconds > 0, 0 <= turn_ratio <= 1, users >= 1")
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    tmp = None
    if folder is None:
        tmp = tempfile.mkdtemp(prefix="memory-agent-bench-serve-")
        folder = Path(tmp) / "memory"
    server = _Server(Path(folder)).start()
    try:
        names = [f"user{n}" for n in range(users)]
        seeded = _seed(server, names, seed_memories, random.Random(seed))
        cpu0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        load = _load(server.port, server.key, clients, seconds, turn_ratio, names, seed)
        cpu1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = load["wall_s"]
        server_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        client_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
        t_drain = time.perf_counter()
        drained = server.drain(drain_timeout)
        drain_s = time.perf_counter() - t_drain

        turns = _check_turns(server, names, load["acked"], load["unacked"], seeded)
        jobs = server.service.jobs.counts(server.tenant)
    finally:
        server.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    search_s, enqueue_s, errors = load["search_s"], load["enqueue_s"], load["errors"]
    ok = len(search_s) + len(enqueue_s)
    n_errors = sum(errors.values())
    return {
        "benchmark": "serve",
        "clients": clients,
        "seconds": seconds,
        "turn_ratio": turn_ratio,
        "users": users,
        "seed_memories_per_user": seed_memories,
        "wall_s": round(wall, 2),
        "requests": ok + n_errors,
        "requests_per_s": round(ok / wall, 1) if wall else None,
        "search": _latency(search_s),
        "enqueue": _latency(enqueue_s),
        "cpu": {  # seconds of CPU while the clients ran: the service's process, the load generator's
            "server_s": round(server_cpu, 2),
            "server_ms_per_request": round(server_cpu * 1000 / ok, 3) if ok else None,
            "server_cores_busy": round(server_cpu / wall, 2) if wall else None,
            "loadgen_s": round(client_cpu, 2),
        },
        "search_hits_per_request": round(load["hits"] / len(search_s), 2) if search_s else None,
        "errors": n_errors,
        "errors_by_kind": errors,
        "turns": turns,
        "drained": drained,
        "drain_s": round(drain_s, 2),
        "jobs": jobs,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg_1m_before": None if load_before is None else round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
        },
        "model": "echo",
        "embedder": "hashing",
        "ok": n_errors == 0 and not turns["lost"] and not turns["duplicated"] and drained
        and jobs.get("failed", 0) == 0,
    }


if __name__ == "__main__" and sys.argv[1:] == ["--loadgen"]:
    _loadgen_main()
