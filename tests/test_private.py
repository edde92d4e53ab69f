"""Store files are private: 0700 folders and 0600 files whatever the umask; loose stores are tightened."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from memory_store import MemoryStore

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_new_store_is_private_under_umask_000(tmp_path, embedder, open_umask):
    path = tmp_path / "deep" / "store"
    s = MemoryStore(path, embedder=embedder)
    s.add("a secret", "u1")
    assert mode(path) == 0o700
    files = [p for p in path.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"memories.db", "memories.db-wal"}
    assert all(mode(p) == 0o600 for p in files), {p.name: oct(mode(p)) for p in files}
    out = tmp_path / "export.jsonl"
    s.export_jsonl(out)
    s.close()
    assert mode(path / "index.bin") == 0o600 and mode(out) == 0o600


def test_loose_store_is_tightened_once_with_a_warning(tmp_path, embedder, caplog):
    path = tmp_path / "store"
    with MemoryStore(path, embedder=embedder) as s:
        s.add("a secret", "u1")
    os.chmod(path, 0o755)
    for p in path.iterdir():
        os.chmod(p, 0o644)
    (path / "notes.txt").write_text("not ours")
    os.chmod(path / "notes.txt", 0o644)
    with caplog.at_level(logging.WARNING, logger="memory_store.private"):
        with MemoryStore(path, embedder=embedder) as s:
            assert s.count() == 1
        with MemoryStore(path, embedder=embedder):
            pass
    assert mode(path) == 0o700 and mode(path / "memories.db") == 0o600 and mode(path / "index.bin") == 0o600
    assert mode(path / "notes.txt") == 0o644  # not the store's file: left alone
    assert len([r for r in caplog.records if "made private" in r.message]) == 1


def test_store_inside_a_folder_with_other_files_leaves_them_alone(tmp_path, embedder):
    os.chmod(tmp_path, 0o755)
    (tmp_path / "keep.txt").write_text("x")
    with MemoryStore(tmp_path, embedder=embedder) as s:
        s.add("a", "u1")
    assert mode(tmp_path) == 0o755 and mode(tmp_path / "memories.db") == 0o600
