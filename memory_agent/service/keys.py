"""API keys: each belongs to one tenant; stored as SHA-256 hashes, shown once at creation.

A key is 32 random bytes (``secrets``), so a plain SHA-256 is enough to store
it (no password stretching needed: there is nothing to guess), and looking a
key up by its hash compares no secret byte by byte in Python.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from memory_agent.errors import ConfigError, InvalidInput
from memory_agent.service.db import PgServiceDB, ServiceDB

__all__ = ["KEY_PREFIX", "KeyInfo", "KeyStore"]

KEY_PREFIX = "mak_"
#: How long a looked-up key is trusted without asking the database again: a key
#: revoked by another process (``memory-agent keys revoke``) is refused within this.
KEY_CACHE_S = 2.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


@dataclass(frozen=True)
class KeyInfo:
    name: str
    tenant: str
    created_at: str
    revoked_at: str | None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class KeyStore:
    def __init__(self, db: ServiceDB | PgServiceDB):
        self.db = db
        self._cache: dict[str, tuple[str | None, float]] = {}  # hash -> (tenant or None, expiry)
        self._cache_lock = threading.Lock()

    def create(self, name: str, tenant: str | None = None) -> tuple[str, KeyInfo]:
        """A new key (returned in clear once) for ``tenant`` (a new tenant when None)."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidInput(f"key name {name!r}: 1-64 letters, digits, _ . @ -; starting with a letter or digit")
        if tenant is not None and not _NAME.fullmatch(tenant):
            raise InvalidInput(f"tenant {tenant!r}: 1-64 letters, digits, _ . @ -")
        tenant = tenant or "t" + secrets.token_hex(6)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        info = KeyInfo(name, tenant, _now(), None)
        with self.db.txn() as conn:
            if conn.execute("SELECT 1 FROM keys WHERE name = ?", [name]).fetchone():
                raise ConfigError(f"a key named {name!r} exists already")
            conn.execute("INSERT INTO keys (name, tenant, hash, created_at) VALUES (?, ?, ?, ?)",
                         [name, tenant, _hash(key), info.created_at])
        return key, info

    def tenant(self, key: str | None) -> str | None:
        """The tenant of a valid, unrevoked key; None otherwise."""
        if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest, now = _hash(key), time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        rows = self.db.read("SELECT tenant FROM keys WHERE hash = ? AND revoked_at IS NULL", [digest])
        tenant = rows[0][0] if rows else None
        with self._cache_lock:
            if len(self._cache) > 10_000:  # wrong keys must not grow it without bound
                self._cache.clear()
            self._cache[digest] = (tenant, now + KEY_CACHE_S)
        return tenant

    def list(self) -> list[KeyInfo]:
        return [KeyInfo(*r) for r in self.db.read("SELECT name, tenant, created_at, revoked_at FROM keys ORDER BY id")]

    def revoke(self, name: str) -> KeyInfo:
        with self.db.txn() as conn:
            row = conn.execute("SELECT name, tenant, created_at, revoked_at FROM keys WHERE name = ?",
                               [name]).fetchone()
            if row is None:
                raise ConfigError(f"no key named {name!r}")
            if row[3] is None:
                conn.execute("UPDATE keys SET revoked_at = ? WHERE name = ?", [_now(), name])
        with self._cache_lock:
            self._cache.clear()  # this process refuses it at once; others within KEY_CACHE_S
        return KeyInfo(*self.db.read("SELECT name, tenant, created_at, revoked_at FROM keys WHERE name = ?",
                                     [name])[0])
