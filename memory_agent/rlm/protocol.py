"""JSON-lines RPC between the host (retriever) and the sandboxed REPL worker.

Why a separate module: the same framing is used on both sides of the pipe, and
the worker loads this file *by path* with a bare ``python -I`` interpreter, so
it must stay stdlib-only and must not import anything from ``memory_agent``.

Every message is one JSON object on one line (``\\n``-terminated, ASCII-only so
no stray byte can split a line). Direction and types:

host -> worker
    ``setup``     protections to apply before any model code runs (uid, cwd, rlimits)
    ``init``      the ``context`` value, its flat text view, limits the REPL may read
    ``exec``      ``{"id", "code", "timeout"}`` run one code cell
    ``get_var``   ``{"id", "name"}`` read a variable for a prose ``FINAL_VAR(name)``
    ``llm_result````{"id", "results": [{"ok", "text"} | {"ok": false, "error", "message"}]}``
    ``shutdown``

worker -> host
    ``ready``     ``{"protections": {...}}`` after setup
    ``inited``    after init
    ``llm``       ``{"id", "items": [{"prompt", "slice", "recursive", "max_new_tokens"}]}``
    ``result``    ``{"id", "stdout", "error", "final", "final_kind"}`` end of a cell
    ``var``       ``{"id", "ok", "value" | "error"}``

The host treats anything it cannot decode as a broken worker (kill + restart):
model code runs in the worker process and may write to these pipes itself, so
nothing the worker sends is trusted beyond its shape; all budgets are enforced
on the host.
"""

from __future__ import annotations

import json

__all__ = [
    "MAX_MESSAGE_BYTES",
    "ProtocolError",
    "encode",
    "decode",
    "HOST_TYPES",
    "WORKER_TYPES",
]

# A single message may carry a whole llm_batch of slices (or, host -> worker,
# the whole context), so the cap is generous; it only stops a runaway writer.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

HOST_TYPES = frozenset({"setup", "init", "exec", "get_var", "llm_result", "shutdown"})
WORKER_TYPES = frozenset({"ready", "inited", "llm", "result", "var", "fatal"})


class ProtocolError(ValueError):
    """A line on the pipe is not a well-formed message."""


def encode(msg: dict) -> bytes:
    """One message -> one ASCII JSON line (bytes, newline-terminated)."""
    return (json.dumps(msg, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def decode(line: bytes, allowed: frozenset = WORKER_TYPES) -> dict:
    """Parse one line; raise :class:`ProtocolError` unless it is a dict with a known ``type``."""
    if not line:
        raise ProtocolError("end of stream")
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(line)} bytes exceeds the cap")
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or msg.get("type") not in allowed:
        raise ProtocolError(f"unexpected message: {str(msg)[:200]}")
    return msg
