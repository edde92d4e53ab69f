"""Private files: a store folder is 0700 and every file in it 0600, whatever the umask.

Why: a memory folder holds every user's memories in one SQLite file. Created
with the usual umask (0644 files in a 0755 folder) any local account, and any
code a model gets to run as another account, can read it. So folders are made
0700, files are created 0600 (SQLite gives its -wal and -shm files the mode of
the database file), and opening an existing store whose folder or files are
open to others tightens them when the current user owns them, with one warning
per folder. Only POSIX permissions are touched; on other systems these are no-ops.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import IO, Any

from memory_store.errors import StoreError

__all__ = ["DIR_MODE", "FILE_MODE", "private_folder", "private_file", "open_private"]

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
_warned: set[str] = set()
_POSIX = os.name == "posix"


def _loose(st: os.stat_result) -> bool:
    return bool(st.st_mode & 0o077) and st.st_uid == os.getuid()


def private_folder(path: Path, db_name: str = "memories.db") -> None:
    """Create ``path`` as 0700, or tighten an existing store folder and the store's files we own.

    Only a folder that already holds a store is tightened, and only the store's own
    files (``db_name`` with its -wal/-shm, the index and its temp files): a store
    opened inside a folder that holds other things never changes those.
    """
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)
        if _POSIX:
            os.chmod(path, DIR_MODE)  # explicit: mkdir's mode is filtered by the umask
        return
    for name in (db_name, db_name + "-wal", db_name + "-shm"):
        # SQLite follows links: a planted (even dangling) link would make the store create or
        # write a file wherever it points, or read another store. Refused, nothing created.
        if (path / name).is_symlink():
            raise StoreError(f"{path / name} is a symbolic link; a store's database files must be regular "
                             "files in its folder")
    if not _POSIX:
        return
    if not (path / db_name).exists():
        if not any(path.iterdir()) and _loose(path.stat()):
            os.chmod(path, DIR_MODE)  # an empty folder made for the store
        return
    tightened = []
    if _loose(path.stat()):
        os.chmod(path, DIR_MODE)
        tightened.append(".")
    for child in path.iterdir():
        if not (child.name.startswith(db_name) or child.name.startswith("index.bin")):
            continue
        st = child.lstat()
        if stat.S_ISREG(st.st_mode) and _loose(st):
            os.chmod(child, FILE_MODE)
            tightened.append(child.name)
    if tightened and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("store %s was readable by other accounts; made private (0700/0600): %s",
                    path, ", ".join(sorted(tightened)))


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (before SQLite opens it)."""
    if path.exists():
        return
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    if _POSIX:
        os.chmod(path, FILE_MODE)


def open_private(path: Path, mode: str = "wb", **kwargs: Any) -> IO[Any]:
    """``open()`` for a new file that is 0600 from its first byte (temp files, exports, index saves)."""

    def opener(name: str, flags: int) -> int:
        fd = os.open(name, flags, FILE_MODE)
        if _POSIX:
            os.fchmod(fd, FILE_MODE)
        return fd

    return open(path, mode, opener=opener, **kwargs)
