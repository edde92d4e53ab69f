"""Fault injection on memory_store.MemoryStore (issue 14, "Security").

Each probe runs the faulty part in a child process and then reopens the
folder here, checking the rules of docs/store.md ("Durability and crash
rules"): every acknowledged memory is present once, found by vector and by
keyword search, acknowledged deletes stay deleted, and the FAISS index agrees
with SQLite.

* killed (SIGKILL, from a hook at an exact code point, no timing) at each step
  of a write and of an index save: before the SQLite COMMIT, after it (before
  the in-memory index is updated), with the index temp file written and
  fsynced but not renamed, right after the rename (the "marker", the change
  counter the file reflects, is in the file's own header, so it lands with the
  rename), and after a completed save;
* disk full: a file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored, so writes
  fail with EFBIG) while SQLite writes and while the index is saved, and, when
  this runs as root with mount namespaces, a tiny tmpfs (ENOSPC);
* a read-only folder: permission bits (as ``nobody`` when we are root, since
  root ignores them) and, when possible, a read-only bind mount (EROFS).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from memory_store import HashingEmbedder, MemoryStore
from memory_store.index import VectorIndex
from memory_store.keyword import fts_problem
from memory_store.store import INDEX_FILE, STALE_TMP_S

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
SKIP_CODE = 77  # a child that cannot set up its fault (no mount rights...) exits with this

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals, rlimits and permissions")


def run_child(tmp_path: Path, source: str, *args: str, prefix: list[str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(source))
    cmd = [*(prefix or []), sys.executable, str(script), *map(str, args)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def child_result(proc: subprocess.CompletedProcess) -> dict:
    if proc.returncode == SKIP_CODE:
        pytest.skip(f"fault could not be set up here: {proc.stdout.strip()} {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_acks(log: Path) -> list[list]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def fold(acks: list[list]) -> tuple[dict[int, str], set[int]]:
    """The acknowledged state: live id -> text, and the ids whose delete was acknowledged."""
    live: dict[int, str] = {}
    deleted: set[int] = set()
    for kind, mid, text in acks:
        if kind in ("add", "update"):
            live[mid] = text
        elif kind == "delete":
            live.pop(mid)
            deleted.add(mid)
    return live, deleted


def verify(path: Path, live: dict[int, str], deleted: set[int] = frozenset(), *, user: str = "u1",
           dim: int = 64, extra: int = 0) -> MemoryStore:
    """Reopen ``path`` and check it against the acknowledged state; returns the open store.

    ``extra``: rows allowed beyond the acknowledged ones (a commit that landed but
    whose call never returned).
    """
    s = MemoryStore(path, embedder=HashingEmbedder(dim=dim))
    conn = s._db.conn
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert fts_problem(conn) is None
    db = {r[0]: r[1] for r in conn.execute("SELECT id, user_id FROM memories")}
    assert dict(s._index.owner) == db and len(s._index) == len(db)  # index == database
    rows = {r.id: r.text for r in s.list(user)}
    for mid, text in live.items():
        assert rows.get(mid) == text, f"acknowledged memory {mid} lost or changed"
    assert not deleted & rows.keys(), "an acknowledged delete came back"
    assert s.count() == len(live) + extra
    texts = list(rows.values())
    assert len(texts) == len(set(texts)), "duplicate memory after recovery"
    for mid, text in live.items():
        hit = s.search(text, user, k=1, mode="vector")[0]
        assert hit.id == mid and hit.score == pytest.approx(1.0, abs=1e-5)
        word = text.split()[0]  # a token unique to this memory
        assert [h.id for h in s.search(word, user, k=2, mode="keyword")] == [mid]
    return s


def tmp_files(path: Path) -> list[Path]:
    return sorted(path.glob(INDEX_FILE + ".*.tmp"))


# ---- killed at each step of a commit and of an index save ------------------------------

KILL_CHILD = """
    import json, os, signal, sys
    from memory_store import HashingEmbedder, MemoryStore
    from memory_store.index import VectorIndex
    path, log, step = sys.argv[1], sys.argv[2], sys.argv[3]
    out = open(log, "a", buffering=1)  # one write() per line: survives SIGKILL

    def ack(kind, mid, text=None):
        out.write(json.dumps([kind, mid, text]) + "\\n")

    def die(where):
        ack("killed", where)
        os.kill(os.getpid(), signal.SIGKILL)

    def text(i):
        return f"w{i}q memory number {i} about topic {i % 3}"

    s = MemoryStore(path, embedder=HashingEmbedder(dim=64))
    for i, mid in enumerate(s.add_many([text(i) for i in range(10)], "u1")):
        ack("add", mid, text(i))
    s.flush()  # an index file with an older marker: recovery must replay past it
    for i in range(10, 15):
        ack("add", s.add(text(i), "u1"), text(i))
    rec = s.update(3, "x3v rewritten about whales", "u1")
    ack("update", rec.id, rec.text)
    ack("delete", s.delete(5, "u1").id)

    if step == "before_sqlite_commit":  # rows written inside BEGIN IMMEDIATE, COMMIT not run
        s._db.conn.set_trace_callback(lambda sql: die(step) if sql.strip().upper() == "COMMIT" else None)
        s.add(text(99), "u1")
    elif step == "after_sqlite_commit":  # committed; the in-memory index not updated; add not returned
        VectorIndex.add = lambda *a, **k: die(step)
        s.add(text(99), "u1")
    elif step in ("index_tmp_written", "index_renamed"):
        ack("add", s.add(text(99), "u1"), text(99))
        real = os.replace

        def replace(src, dst, *a, **k):
            if str(src).endswith(".tmp"):
                if step == "index_tmp_written":  # temp file complete and fsynced, not renamed
                    die(step)
                real(src, dst, *a, **k)  # new file (and its marker) in place, save not finished
                die(step)
            return real(src, dst, *a, **k)

        os.replace = replace
        s.close()
    elif step == "index_saved":  # save complete, store never closed (WAL not checkpointed)
        ack("add", s.add(text(99), "u1"), text(99))
        s.flush()
        die(step)
    raise SystemExit("the kill hook never fired")
"""

STEPS = ["before_sqlite_commit", "after_sqlite_commit", "index_tmp_written", "index_renamed", "index_saved"]


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_commit_step(tmp_path, step, monkeypatch):
    path, log = tmp_path / "s", tmp_path / "acks.jsonl"
    proc = run_child(tmp_path, KILL_CHILD, path, log, step)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    acks = read_acks(log)
    assert acks[-1] == ["killed", step, None]  # the hook fired at the intended point
    live, deleted = fold(acks[:-1])
    assert len(live) == 15 - 1 + (step.startswith("index"))
    in_flight = "w99q memory number 99 about topic 0"

    if step == "index_tmp_written":
        [tmp] = tmp_files(path)  # complete, but never renamed: the older index file is still current
        assert VectorIndex.peek(tmp)["seq"] > VectorIndex.peek(path / INDEX_FILE)["seq"]
    else:
        assert not tmp_files(path)
    if step in ("index_renamed", "index_saved"):  # the file on disk reflects every commit
        with sqlite3.connect(path / "memories.db") as c:
            assert VectorIndex.peek(path / INDEX_FILE)["seq"] == c.execute("SELECT max(seq) FROM changes").fetchone()[0]

    rebuilds = []
    real_rebuild = MemoryStore._rebuild
    monkeypatch.setattr(MemoryStore, "_rebuild", lambda self, seq: (rebuilds.append(seq), real_rebuild(self, seq)))
    # The commit that landed without returning is kept (once); the one killed before COMMIT is gone.
    s = verify(path, live, deleted, extra=int(step == "after_sqlite_commit"))
    try:
        found = [r.id for r in s.list("u1") if r.text == in_flight]
        assert len(found) == int(step != "before_sqlite_commit")
        if found:
            assert s.search(in_flight, "u1", k=1, mode="vector")[0].id == found[0]
        # Whatever file was left (older marker, or the renamed one) was usable: replayed, not rebuilt.
        assert rebuilds == []
    finally:
        s.close()
    with sqlite3.connect(path / "memories.db") as c:
        seq = c.execute("SELECT max(seq) FROM changes").fetchone()[0]
    assert VectorIndex.peek(path / INDEX_FILE)["seq"] == seq  # re-saved at close
    verify(path, live, deleted, extra=int(step == "after_sqlite_commit")).close()  # loads that file
    assert rebuilds == []

    # A dead writer's temp file is never loaded; it is removed once stale (a live writer may still own a fresh one).
    for tmp in tmp_files(path):
        os.utime(tmp, (time.time() - STALE_TMP_S - 60,) * 2)
    MemoryStore(path, embedder=HashingEmbedder(dim=64)).close()
    assert not tmp_files(path)


# ---- disk full ------------------------------------------------------------------------------

FULL_CHILD = """
    import json, os, resource, signal, sqlite3, sys
    from memory_store import HashingEmbedder, MemoryStore
    from memory_store.errors import MemoryAgentError
    path, log, limit, dim, what = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    out = open(log, "a", buffering=1)
    s = MemoryStore(path, embedder=HashingEmbedder(dim=dim))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    result = {"errors": []}

    def attempt(i):
        text = f"f{i}z filler memory {i} " + "pad " * 150
        try:
            mid = s.add(text, "u1")
        except Exception as exc:
            cause = exc.__cause__
            result["errors"].append({"type": type(exc).__name__, "typed": isinstance(exc, MemoryAgentError),
                                     "msg": str(exc), "cause": type(cause).__name__ if cause else None,
                                     "text": text})
            return False
        out.write(json.dumps(["add", mid, text]) + "\\n")
        return True

    if what == "sqlite":
        for i in range(10_000):
            if not attempt(i):
                break
        attempt(10_001)  # the store stays usable: the next write fails the same clean way
        result["search"] = len(s.search("f1z", "u1", k=3))
    else:  # "index": one add fits, the index file does not
        attempt(0)
    try:
        s.close()  # saving the index fails under the limit: derived data, must not raise
        result["close"] = "ok"
    except Exception as exc:
        result["close"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result))
"""


def test_disk_full_sqlite_write_is_typed_and_loses_nothing(tmp_path):
    path, log = tmp_path / "s", tmp_path / "acks.jsonl"
    res = child_result(run_child(tmp_path, FULL_CHILD, path, log, 1 << 20, 64, "sqlite"))
    live, _ = fold(read_acks(log))
    assert len(live) >= 5 and len(res["errors"]) == 2  # some adds fit, then every write fails
    for err in res["errors"]:
        assert err["type"] == "StoreError" and err["typed"], err
        assert err["cause"] == "OperationalError" and "nothing was changed" in err["msg"], err
    assert res["search"] == 3 and res["close"] == "ok"
    with verify(path, live) as s:  # limit lifted: every acknowledged add, none of the failed ones
        assert not {e["text"] for e in res["errors"]} & {r.text for r in s.list("u1")}
        s.add("g1z written after the disk has room again", "u1")
    verify(path, {**live, max(live) + 1: "g1z written after the disk has room again"}).close()


def test_disk_full_during_index_save_loses_nothing(tmp_path):
    path, log, dim = tmp_path / "s", tmp_path / "acks.jsonl", 256
    with MemoryStore(path, embedder=HashingEmbedder(dim=dim)) as s:
        base = {mid: f"b{i}y base memory {i}" for i, mid in
                enumerate(s.add_many([f"b{i}y base memory {i}" for i in range(300)], "u1"))}
    size = (path / INDEX_FILE).stat().st_size
    old_seq = VectorIndex.peek(path / INDEX_FILE)["seq"]
    res = child_result(run_child(tmp_path, FULL_CHILD, path, log, size // 2, dim, "index"))
    assert res["errors"] == [] and res["close"] == "ok"  # the add fitted; the failed save did not raise
    live, _ = fold(read_acks(log))
    assert len(live) == 1
    assert not tmp_files(path)  # the half-written temp file was removed
    assert VectorIndex.peek(path / INDEX_FILE)["seq"] == old_seq  # the old file is intact, just behind
    verify(path, {**base, **live}, dim=dim).close()


TMPFS_CHILD = """
    import json, os, shutil, subprocess, sys
    from memory_store import HashingEmbedder, MemoryStore
    from memory_store.errors import MemoryAgentError
    mnt, copy, log = sys.argv[1], sys.argv[2], sys.argv[3]
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=768k", "tmpfs", mnt], capture_output=True).returncode:
        print("cannot mount a tmpfs"); sys.exit(77)
    out = open(log, "a", buffering=1)
    store = os.path.join(mnt, "s")
    s = MemoryStore(store, embedder=HashingEmbedder(dim=64))
    errors = []
    for i in range(10_000):
        text = f"t{i}k memory on a tiny disk {i} " + "pad " * 150
        try:
            mid = s.add(text, "u1")
        except Exception as exc:
            errors.append({"type": type(exc).__name__, "typed": isinstance(exc, MemoryAgentError),
                           "cause": type(exc.__cause__).__name__, "msg": str(exc), "text": text})
            if len(errors) == 2:
                break
            continue
        out.write(json.dumps(["add", mid, text]) + "\\n")
    s.close()
    subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
    shutil.copytree(store, copy)  # the closed store as the full disk left it, out of this namespace
    print(json.dumps({"errors": errors}))
"""


def test_disk_full_tmpfs(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("a tmpfs needs root and unshare(1)")
    mnt, copy, log = tmp_path / "mnt", tmp_path / "copy", tmp_path / "acks.jsonl"
    mnt.mkdir()
    # A private mount namespace: the tmpfs dies with the child, nothing leaks into this system.
    proc = run_child(tmp_path, TMPFS_CHILD, mnt, copy, log, prefix=["unshare", "--mount", "--propagation", "private"])
    if proc.returncode != 0 and "unshare" in proc.stderr and "Operation not permitted" in proc.stderr:
        pytest.skip(f"no mount namespace here: {proc.stderr.strip()}")
    res = child_result(proc)
    live, _ = fold(read_acks(log))
    assert len(live) >= 3 and len(res["errors"]) == 2
    for err in res["errors"]:
        assert err["type"] == "StoreError" and err["typed"] and err["cause"] == "OperationalError", err
    with verify(copy, live) as s:
        assert not {e["text"] for e in res["errors"]} & {r.text for r in s.list("u1")}


# ---- a read-only folder ---------------------------------------------------------------------

RO_CHILD = """
    import json, os, subprocess, sys
    from memory_store import HashingEmbedder, MemoryStore
    from memory_store.errors import MemoryAgentError
    path, how = sys.argv[1], sys.argv[2]
    if how == "bind":  # read-only for everyone, root included (EROFS)
        for cmd in (["mount", "--bind", path, path], ["mount", "-o", "remount,bind,ro", path]):
            if subprocess.run(cmd, capture_output=True).returncode:
                print("cannot bind-mount read-only"); sys.exit(77)
    os.chdir(path)  # so that an unprivileged child needs no rights on the folders above
    if how == "nobody":  # root ignores permission bits: become an ordinary owner
        os.setgid(65534)
        os.setuid(65534)

    def outcome(fn):
        try:
            return {"ok": fn()}
        except Exception as exc:
            return {"type": type(exc).__name__, "typed": isinstance(exc, MemoryAgentError), "msg": str(exc),
                    "cause": type(exc.__cause__).__name__ if exc.__cause__ else None}

    result = {}
    holder = []
    result["open"] = outcome(lambda: holder.append(MemoryStore(".", embedder=HashingEmbedder(dim=64))) or "opened")
    if holder:
        s = holder[0]
        result["search"] = outcome(lambda: [h.id for h in s.search("r7m", "u1", k=1, mode="keyword")])
        result["add"] = outcome(lambda: s.add("must not be written", "u1"))
        result["close"] = outcome(s.close)
    print(json.dumps(result))
"""

KILLED_WRITER = """
    import json, os, signal, sys
    from memory_store import HashingEmbedder, MemoryStore
    s = MemoryStore(sys.argv[1], embedder=HashingEmbedder(dim=64))
    s.add("r99m added by a writer that was killed", "u1")
    print(json.dumps(s.list("u1")[-1].id), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # leaves -wal/-shm behind, the add only in the WAL
"""


def _set_modes(path: Path, folder: int, files: int, owner: int | None) -> None:
    for f in path.iterdir():
        if owner is not None:
            os.chown(f, owner, owner)
        os.chmod(f, files)
    if owner is not None:
        os.chown(path, owner, owner)
    os.chmod(path, folder)


@pytest.mark.parametrize("left", ["closed", "killed_writer"])
@pytest.mark.parametrize("how", ["permissions", "bind"])
def test_read_only_folder(tmp_path, how, left):
    path = tmp_path / "s"
    with MemoryStore(path, embedder=HashingEmbedder(dim=64)) as s:
        live = {mid: f"r{i}m read only memory {i}" for i, mid in
                enumerate(s.add_many([f"r{i}m read only memory {i}" for i in range(20)], "u1"))}
    if left == "killed_writer":  # a WAL that still needs recovery, which a read-only folder forbids
        proc = run_child(tmp_path, KILLED_WRITER, path)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        live[int(proc.stdout.split()[0])] = "r99m added by a writer that was killed"
        assert (path / "memories.db-wal").exists()
    before = {f.name: f.read_bytes() for f in path.iterdir()}

    root = os.geteuid() == 0
    if how == "bind":
        if not root or not shutil.which("unshare"):
            pytest.skip("a read-only bind mount needs root and unshare(1)")
        proc = run_child(tmp_path, RO_CHILD, path, how, prefix=["unshare", "--mount", "--propagation", "private"])
        if proc.returncode != 0 and "unshare" in proc.stderr and "Operation not permitted" in proc.stderr:
            pytest.skip(f"no mount namespace here: {proc.stderr.strip()}")
    else:
        _set_modes(path, 0o500, 0o400, 65534 if root else None)
        try:
            proc = run_child(tmp_path, RO_CHILD, path, "nobody" if root else "plain")
        finally:
            _set_modes(path, 0o700, 0o600, 0 if root else None)
    res = child_result(proc)

    # Opening either works (then reads work and writes fail) or fails; every failure is typed.
    if "ok" in res["open"]:
        assert "ok" in res["search"], res
        assert res["add"]["type"] == "StoreError" and res["add"]["typed"], res
        assert "ok" in res["close"], res
    else:
        err = res["open"]
        assert err["type"] == "StoreError" and err["typed"] and err["cause"] in ("OperationalError", "PermissionError",
                                                                                  "OSError"), res
    assert {f.name: f.read_bytes() for f in path.iterdir()} == before  # nothing in the folder changed
    with verify(path, live) as s:  # writable again: nothing lost, nothing half-written
        assert "must not be written" not in {r.text for r in s.list("u1")}


def test_recovered_index_is_saved_once(tmp_path, monkeypatch):
    """A damaged index file whose header still reads fine (a bit flipped in the vectors) is
    rebuilt once and replaced at close, so later opens load it instead of rebuilding again."""
    path = tmp_path / "s"
    with MemoryStore(path, embedder=HashingEmbedder(dim=64)) as s:
        live = {mid: f"d{i}h damaged index memory {i}" for i, mid in
                enumerate(s.add_many([f"d{i}h damaged index memory {i}" for i in range(30)], "u1"))}
    data = bytearray((path / INDEX_FILE).read_bytes())
    data[-100] ^= 0xFF
    (path / INDEX_FILE).write_bytes(bytes(data))
    rebuilds = []
    real_rebuild = MemoryStore._rebuild
    monkeypatch.setattr(MemoryStore, "_rebuild", lambda self, seq: (rebuilds.append(seq), real_rebuild(self, seq)))
    verify(path, live).close()
    assert len(rebuilds) == 1
    verify(path, live).close()
    assert len(rebuilds) == 1  # the file written at the first close loads cleanly
