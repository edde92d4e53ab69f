"""``memory-agent rlm``: answer one question with the recursive retriever.

The context is either a user's whole memory bank (``--db DIR --user U``, read
with ``MemoryStore.list``; the store is opened with the dimension it records,
since listing needs no embedder) or a raw file (``--context FILE``: plain text,
a JSON list, or JSONL of ``{"id", "time", "text"}`` records). Models are
resolved lazily, so ``--help`` loads nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from memory_agent.errors import ConfigError
from memory_agent.rlm.sandbox import ISOLATION_MODES

__all__ = ["rlm", "load_context_file", "load_memory_bank"]


def load_memory_bank(db: str, user_id: str) -> list[dict]:
    """The user's memories as ``{"id", "time", "text"}`` dicts, oldest first."""
    from memory_agent.cli.options import require_store
    from memory_store import open_store

    require_store(db)
    store = open_store(db)  # no embedder: the store keeps the dimension it was built with
    try:
        return [{"id": r.id, "time": str(r.created_at), "text": r.text} for r in store.list(user_id)]
    finally:
        store.close()


def load_context_file(path: str) -> str | list:
    """Plain text as is; ``.json`` (a list) and ``.jsonl`` (one record or string per line) parsed."""
    text = Path(path).read_text(encoding="utf-8")
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
            if isinstance(data, list):
                return data
        elif suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return text


@click.command("rlm")
@click.argument("question")
@click.option("--db", default=None,
              help="Memory folder or PostgreSQL URL: search this user's whole memory bank.")
@click.option("--user", "user_id", default="default", show_default=True, help="Whose memories (with --db).")
@click.option("--context", "context_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A raw history file instead: .txt, .json list, or .jsonl records.")
@click.option("--model", default="default", show_default=True,
              help="Root model: default (embedded SmolLM2-135M), a folder, a .gguf file, or openai:MODEL@URL.")
@click.option("--sub-model", default=None, help="Model for sub-calls (default: --model).")
@click.option("--strategy", type=click.Choice(["auto", "code", "program"]), default="auto", show_default=True,
              help="auto = program for a local model (it cannot write working code), code otherwise.")
@click.option("--trajectory", type=click.Path(dir_okay=False), default=None,
              help="Write every prompt, code cell and output as JSONL here.")
@click.option("--max-iterations", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-depth", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--max-subcalls", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--isolation", type=click.Choice(ISOLATION_MODES), default="auto", show_default=True,
              help="File isolation of the code sandbox: auto = bubblewrap where it works (else a warning), "
                   "bubblewrap = refuse to run without it, none = in-process layers only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def rlm(question: str, db: str | None, user_id: str, context_file: str | None, model: str, sub_model: str | None,
        strategy: str, trajectory: str | None, max_iterations: int, max_depth: int, max_subcalls: int,
        isolation: str, as_json: bool) -> None:
    """Answer QUESTION by recursive retrieval over a memory bank or a raw history."""
    if (db is None) == (context_file is None):
        raise click.UsageError("give exactly one of --db or --context")
    from memory_agent.llms import resolve_llm
    from memory_agent.rlm import RecursiveRetriever, RLMLimits

    context = load_memory_bank(db, user_id) if db is not None else load_context_file(context_file)
    if not context:
        raise click.UsageError("the context is empty (no memories for this user?)")
    root = resolve_llm(model)
    sub = resolve_llm(sub_model) if sub_model else root
    if strategy == "auto" and model == "default":
        strategy = "program"
    limits = RLMLimits(max_depth=max_depth, max_subcalls=max_subcalls, sandbox_isolation=isolation)
    result = RecursiveRetriever(root, sub, limits=limits, strategy=strategy,
                                max_iterations=max_iterations).run(question, context, trajectory_path=trajectory)
    if as_json:
        click.echo(json.dumps({"question": question, "answer": result.answer, "cited_ids": result.cited_ids,
                               "stop_reason": result.stop_reason, "usage": result.usage,
                               "protections": result.protections, "trajectory": trajectory},
                              default=str, ensure_ascii=False))
        return
    click.echo(result.answer)
    if result.cited_ids and isinstance(context, list):
        by_id = {c.get("id"): c for c in context if isinstance(c, dict)}
        for cid in result.cited_ids:
            rec = by_id.get(cid, {})
            click.echo(f"  [#{cid}] {str(rec.get('text', ''))[:100]}")
    u = result.usage
    click.echo(f"({result.stop_reason}; {u['iterations']} iterations, {u['sub_calls']} sub-calls, "
               f"~{u['total_tokens']:,} tokens, {u['wall_s']:.1f} s)", err=True)
