"""Click options shared by the memory commands, and the helper that opens a Memory.

One definition per option keeps names, defaults and help identical across
``add``, ``ask``, ``search``, ``history``, ``chat``, ``info``, ``demo`` and
``bench ingest``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click

from memory_agent.defaults import EMBEDDER_NAMES

__all__ = [
    "db_option",
    "user_option",
    "model_options",
    "embedder_option",
    "json_option",
    "open_memory",
    "require_store",
    "policy_value",
    "policy_options",
    "retrieval_option",
    "emit_json",
    "DEFAULT_DB",
]

DEFAULT_DB = "./memory_db"

db_option = click.option(
    "--db",
    default=lambda: os.environ.get("MEMORY_AGENT_DB", DEFAULT_DB),
    show_default="./memory_db or $MEMORY_AGENT_DB",
    help="Memory folder, or a PostgreSQL URL (postgresql://user@host:5432/db; password from the URL, "
    "$PGPASSWORD or ~/.pgpass).",
)
user_option = click.option("--user", "user_id", default="default", show_default=True, help="Whose memories.")
embedder_option = click.option(
    "--embedder",
    type=click.Choice(EMBEDDER_NAMES),
    default="default",
    show_default=True,
    help="default = embedded all-MiniLM-L6-v2; hashing = fast, no model (tests).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")


def retrieval_option(flag: str = "--retrieval") -> Callable:
    """How the Answer Agent (or ``search``) finds memories: hybrid, vector or keyword."""
    from memory_store.keyword import SEARCH_MODES

    return click.option(flag, "retrieval", type=click.Choice(SEARCH_MODES), default=SEARCH_MODES[0],
                        show_default=True,
                        help="hybrid = keyword (BM25) and vector results fused by reciprocal rank; "
                        "vector = embeddings only; keyword = BM25 only.")


def policy_value(value: str | None) -> Any:
    """The ``--policy``/``--untrained`` option as ``Memory(policy=...)`` takes it."""
    return None if value in ("untrained", "none") else value


def policy_options(f: Callable) -> Callable:
    """--policy / --untrained: the trained manager and answer adapters of the embedded model."""
    f = click.option("--untrained", "policy", flag_value="untrained",
                     help="Use the plain embedded model for every role (no shipped trained policies).")(f)
    return click.option("--policy", "policy", default="default", show_default=True,
                        help="Trained manager/answer adapters for the embedded model: default (shipped with the "
                        "package), untrained, or a folder with manager/ and answer/ (memory-agent train "
                        "policies).")(f)


def model_options(f: Callable) -> Callable:
    """--model, --manager-model / --answer-model to swap one role's model, and the trained-policy switch."""
    f = policy_options(f)
    f = click.option("--answer-model", default=None, help="Model for the Answer Agent (default: --model).")(f)
    f = click.option("--manager-model", default=None, help="Model for the Memory Manager (default: --model).")(f)
    f = click.option(
        "--model",
        default="default",
        show_default=True,
        help="default (embedded SmolLM2-135M), a model folder, a .gguf file, openai:MODEL@URL, or echo "
        "(a deterministic rule-following model for trying things out and benchmarks).",
    )(f)
    return f


def require_store(db: str) -> None:
    """Read commands only: fail with one line, creating nothing, when ``db`` holds no store (a mistyped
    ``--db`` must not become a new empty store). Write commands (add, chat, demo, serve) create it."""
    from memory_store.opening import describe_location, store_exists

    if not store_exists(db):
        from memory_agent.errors import ConfigError

        raise ConfigError(f"no memory store at {describe_location(db)}; check --db (or $MEMORY_AGENT_DB), "
                          "or create one with `memory-agent add`")


def open_memory(db: str, embedder: str, model: str = "default", manager_model: str | None = None,
                answer_model: str | None = None, policy: str | None = "default", retrieval: str = "hybrid", *,
                must_exist: bool = False) -> Any:
    """A :class:`~memory_agent.Memory` on ``--db``; ``must_exist=True`` for commands that only read it."""
    from memory_agent.memory import Memory

    if must_exist:
        require_store(db)

    return Memory.open(db, llm=model, embedder=embedder, manager_llm=manager_model, answer_llm=answer_model,
                       policy=policy_value(policy), retrieval=retrieval)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))

