"""The agent's typed errors, on top of the store's hierarchy.

One module holds everything a caller may want to catch. Model output is
untrusted: when it cannot be used we raise :class:`InvalidModelOutput` with the
raw text attached, and callers count it; nothing is silently turned into a
no-op.
"""

from __future__ import annotations

from memory_store.errors import (
    AlreadyApplied,
    EmbeddingDimensionMismatch,
    InvalidInput,
    MemoryAgentError,
    MemoryNotFound,
    SchemaTooNew,
    StoreError,
)

__all__ = [
    "MemoryAgentError",
    "StoreError",
    "InvalidInput",
    "MemoryNotFound",
    "EmbeddingDimensionMismatch",
    "SchemaTooNew",
    "AlreadyApplied",
    "InvalidModelOutput",
    "BackendError",
    "ModelNotFound",
    "ConfigError",
    "SandboxError",
    "BudgetExceeded",
    "Unauthorized",
    "JobNotFound",
    "IdempotencyConflict",
]


class InvalidModelOutput(MemoryAgentError, ValueError):
    """A model's completion could not be parsed or failed validation."""

    def __init__(self, message: str, raw: str):
        self.raw = raw
        super().__init__(message)

    def __str__(self) -> str:
        raw = self.raw if len(self.raw) <= 200 else self.raw[:200] + "..."
        return f"{self.args[0]} (raw output: {raw!r})"


class BackendError(MemoryAgentError):
    """An LLM backend failed (HTTP error after retries, OOM, bad response shape)."""


class ConfigError(MemoryAgentError, ValueError):
    """Bad configuration: unknown model spec, bad option value."""


class ModelNotFound(ConfigError):
    """A model spec points at nothing that can be loaded."""


class SandboxError(MemoryAgentError):
    """The recursive-retrieval sandbox could not start or broke down."""


class BudgetExceeded(MemoryAgentError):
    """A host-side limit of the recursive retriever was reached (depth, calls, tokens, time)."""


class Unauthorized(MemoryAgentError):
    """The memory service got no API key, or one it does not know (or revoked)."""


class JobNotFound(MemoryAgentError, KeyError):
    """No ingestion job with that id for this tenant (another tenant's ids look the same)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such job"


class IdempotencyConflict(ConfigError):
    """An idempotency key was reused for a different request."""
