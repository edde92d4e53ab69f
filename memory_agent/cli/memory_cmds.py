"""The user-facing memory commands: setup, demo, add, ask, search, history, chat, info.

Each command opens a :class:`memory_agent.Memory` on ``--db`` and does one
thing. Language models load only in commands that need one (``add``, ``ask``,
``chat``, ``demo``); ``search``, ``history`` and ``info`` only touch the store.
Errors surface as one line and exit code 1 through ``memory_agent.cli.main``.
"""

from __future__ import annotations

import json
import re
import string
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import click

from memory_agent.cli.options import (
    db_option,
    embedder_option,
    emit_json,
    json_option,
    model_options,
    open_memory,
    retrieval_option,
    user_option,
)
from memory_agent.errors import ConfigError

__all__ = ["setup", "demo", "add", "ask", "search", "history", "chat", "info", "token_f1", "exact_match"]


# ------------------------------------------------------------------ setup
@click.command()
@click.option("--force", is_flag=True, help="Convert the embedded model again even if cached.")
def setup(force: bool) -> None:
    """Prepare the embedded models (GGUF -> cached safetensors, once)."""
    from memory_agent import embedded

    t0 = time.perf_counter()
    llm_path = embedded.ensure_smollm2(force=force)
    click.echo(f"LLM      SmolLM2-135M-Instruct -> {llm_path} ({time.perf_counter() - t0:.1f}s)")
    click.echo(f"embedder all-MiniLM-L6-v2    -> {embedded.minilm_path()}")


# ------------------------------------------------------------------ scoring (no eval import)
def _normalise(text: str) -> list[str]:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the|and)\b", " ", text)
    return text.split()


def exact_match(pred: str, gold: str) -> float:
    return float(_normalise(pred) == _normalise(gold))


def token_f1(pred: str, gold: str) -> float:
    p, g = _normalise(pred), _normalise(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------ demo
@click.command()
@click.option("--db", default=None, help="Memory folder (default: a new temporary folder). Must be new or empty.")
@model_options
@embedder_option
@click.option("--seed", default=0, show_default=True, help="Which synthetic conversation.")
@click.option("--sessions", "n_sessions", default=4, show_default=True)
@click.option("--questions", "n_questions", default=6, show_default=True)
@json_option
def demo(db: str | None, model: str, manager_model: str | None, answer_model: str | None, policy: str | None, embedder: str,
         seed: int, n_sessions: int, n_questions: int, as_json: bool) -> None:
    """Ingest a small multi-session conversation, show each memory operation, answer questions."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    try:
        from data.synthetic import generate
    except ImportError as exc:  # pragma: no cover - data ships with the project
        raise ConfigError(f"the demo needs the project's data package: {exc}") from exc

    console = Console(stderr=as_json, highlight=False)
    folder = Path(db) if db else Path(tempfile.mkdtemp(prefix="memory-agent-demo-"))
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty; the demo needs a new folder (omit --db for a temporary one)")
    conv = generate(seed=seed, n_sessions=n_sessions, n_questions=n_questions)
    user = conv.sample_id
    t_start = time.perf_counter()
    mem = open_memory(str(folder), embedder, model, manager_model, answer_model, policy)
    console.print(f"[bold]memory-agent demo[/]: {conv.speaker_a} and {conv.speaker_b}, "
                  f"{len(conv.sessions)} sessions, {sum(len(s.turns) for s in conv.sessions)} turns; model: {model}")
    with console.status("loading models..."):
        _ = mem.extract_llm, mem.manager_llm, mem.answer_llm
    totals: Counter[str] = Counter()
    ops_log: list[dict[str, Any]] = []
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("ingesting", total=len(conv.sessions))
        for s in conv.sessions:
            turns = [t.model_dump() for t in s.turns]
            result = mem.add(turns, user_id=user, timestamp=s.timestamp)
            totals.update(result.counts())
            progress.console.print(f"[bold]session {s.index}[/] ({s.date_time}): {len(turns)} turns, "
                                   f"{len(result.facts)} facts, {result.extract_s + result.manage_s:.1f}s")
            for a in result.applied:
                colour = {"ADD": "green", "UPDATE": "yellow", "DELETE": "red"}[a.op]
                old = f" [dim](was: {a.old_text})[/]" if a.op == "UPDATE" else ""
                text = a.new_text if a.op != "DELETE" else a.old_text
                progress.console.print(f"  [{colour}]{a.op:<6}[/] #{a.id} {text}{old}  [dim]{a.source}[/]")
                ops_log.append({"op": a.op, "id": a.id, "old": a.old_text, "new": a.new_text, "source": a.source})
            for sk in result.skipped:
                progress.console.print(f"  [magenta]SKIP[/]   {sk.source} ({sk.stage}): {sk.reason}")
            progress.advance(task)
    ingest_s = time.perf_counter() - t_start

    questions = list(conv.qa)
    with console.status("answering..."):
        answers = mem.answer_many([q.question for q in questions], user_id=user)
    table = Table(title="Questions")
    for col in ("question", "gold", "answer", "F1", "EM"):
        table.add_column(col)
    rows = []
    for q, a in zip(questions, answers):
        f1, em = token_f1(a.text, q.answer), exact_match(a.text, q.answer)
        rows.append({"question": q.question, "gold": q.answer, "answer": a.text, "valid": a.valid, "f1": f1, "em": em})
        table.add_row(q.question, q.answer, a.text + ("" if a.valid else " [magenta](no marker)[/]"),
                      f"{f1:.2f}", f"{em:.0f}")
    wall = time.perf_counter() - t_start
    n = max(len(rows), 1)
    summary = {
        "f1": round(sum(r["f1"] for r in rows) / n, 3),
        "exact_match": round(sum(r["em"] for r in rows) / n, 3),
        "memories": mem.store.count(user),
        "ops": {k: totals[k] for k in ("add", "update", "delete", "noop")},
        "skipped": {k: totals[k] for k in ("skipped_extract", "skipped_manage", "skipped_apply")},
        "answers_invalid": sum(not r["valid"] for r in rows),
        "ingest_s": round(ingest_s, 1),
        "wall_s": round(wall, 1),
        "db": str(folder),
        "user": user,
    }
    mem.close()
    if as_json:
        emit_json({"summary": summary, "questions": rows, "operations": ops_log})
        return
    console.print(table)
    console.print(f"F1 {summary['f1']:.2f}  EM {summary['exact_match']:.2f}  | memories {summary['memories']}  "
                  f"ops {summary['ops']}  skipped {summary['skipped']}  | {wall:.0f}s")
    console.print(f"Memory folder: [bold]{folder}[/] (user {user!r}); try "
                  f"`memory-agent search \"where does {conv.speaker_a} live\" --db {folder} --user {user}`")


# ------------------------------------------------------------------ add / ask
@click.command()
@click.argument("text", nargs=-1, required=True)
@click.option("--speaker", default="user", show_default=True, help="Who said it.")
@click.option("--timestamp", default=None, help="ISO-8601 conversation time (default: now).")
@db_option
@user_option
@model_options
@embedder_option
@json_option
def add(text: tuple[str, ...], speaker: str, timestamp: str | None, db: str, user_id: str, model: str,
        manager_model: str | None, answer_model: str | None, policy: str | None, embedder: str, as_json: bool) -> None:
    """Remember what SPEAKER said (facts are extracted and merged into memory)."""
    from datetime import datetime, timezone

    ts = timestamp or datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
    with open_memory(db, embedder, model, manager_model, answer_model, policy) as mem:
        turn = {"speaker": speaker, "text": " ".join(text), "dia_id": f"cli-{uuid.uuid4().hex[:8]}"}
        result = mem.add([turn], user_id=user_id, timestamp=ts)
    if as_json:
        emit_json({
            "facts": [f.text for f in result.facts],
            "applied": [vars(a) for a in result.applied],
            "skipped": [vars(s) for s in result.skipped],
            "counts": result.counts(),
        })
        return
    for a in result.applied:
        click.echo(f"{a.op:<6} #{a.id} {a.new_text if a.op != 'DELETE' else a.old_text}")
    for s in result.skipped:
        click.echo(f"skipped ({s.stage}): {s.reason}", err=True)
    if not result.applied and not result.skipped:
        click.echo("nothing new to remember")


@click.command()
@click.argument("question", nargs=-1, required=True)
@click.option("--strategy", type=click.Choice(["memory", "rlm"]), default="memory", show_default=True)
@retrieval_option()
@db_option
@user_option
@model_options
@embedder_option
@json_option
def ask(question: tuple[str, ...], strategy: str, retrieval: str, db: str, user_id: str, model: str,
        manager_model: str | None, answer_model: str | None, policy: str | None, embedder: str,
        as_json: bool) -> None:
    """Answer QUESTION from the user's memories."""
    with open_memory(db, embedder, model, manager_model, answer_model, policy, retrieval, must_exist=True) as mem:
        ans = mem.answer(" ".join(question), user_id=user_id, strategy=strategy)
    if as_json:
        emit_json({"answer": ans.text, "valid": ans.valid, "raw": ans.raw,
                   "memories": [{"id": m.id, "text": m.text} for m in ans.memories],
                   "retrieved": len(ans.retrieved)})
        return
    click.echo(ans.text if ans.text else "(no answer)")
    if not ans.valid:
        click.echo("(the model did not follow the answer format; showing its last line)", err=True)
    for m in ans.memories:
        click.echo(f"  - #{m.id} {m.text}")


# ------------------------------------------------------------------ store-only commands
@click.command()
@click.argument("query", nargs=-1, required=True)
@click.option("-k", default=5, show_default=True, help="How many memories.")
@retrieval_option("--mode")
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help='Only memories passing this filter, e.g. \'{"speaker": "Caroline"}\' or '
              '\'{"created_at": {"$gte": "2023-05-01"}}\' (operators: $eq $ne $in $nin $gt $gte $lt $lte '
              '$and $or $not).')
@db_option
@user_option
@embedder_option
@json_option
def search(query: tuple[str, ...], k: int, retrieval: str, filter_json: str | None, db: str, user_id: str,
           embedder: str, as_json: bool) -> None:
    """Find the user's memories best matching QUERY (no language model)."""
    try:
        filters = json.loads(filter_json) if filter_json else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--filter") from None
    with open_memory(db, embedder, must_exist=True) as mem:
        hits = mem.search(" ".join(query), user_id=user_id, k=k, mode=retrieval, filters=filters)
    if as_json:
        emit_json([{"id": h.id, "score": round(h.score, 4), "text": h.text, "updated_at": h.updated_at,
                    "metadata": h.metadata} for h in hits])
        return
    if not hits:
        click.echo("no memories")
    for h in hits:
        click.echo(f"#{h.id:<5} {h.score:.3f}  {h.updated_at[:10]}  {h.text}")


@click.command()
@click.argument("memory_id", type=int)
@db_option
@user_option
@embedder_option
@json_option
def history(memory_id: int, db: str, user_id: str, embedder: str, as_json: bool) -> None:
    """Show every change of one memory (which turn added, updated or deleted it)."""
    with open_memory(db, embedder, must_exist=True) as mem:
        events = mem.history(memory_id, user_id=user_id)
    if as_json:
        emit_json([e.model_dump() for e in events])
        return
    for e in events:
        change = e.new_text if e.event == "ADD" else (f"{e.old_text!r} -> {e.new_text!r}" if e.event == "UPDATE" else e.old_text)
        click.echo(f"{e.at}  {e.event:<6} by {e.actor} ({e.source or '-'}): {change}")


@click.command()
@db_option
@user_option
@embedder_option
@json_option
def info(db: str, user_id: str, embedder: str, as_json: bool) -> None:
    """Store statistics and where the embedded models are."""
    from memory_agent import embedded

    with open_memory(db, embedder, must_exist=True) as mem:
        stats = dict(mem.store.stats())
        stats["user"] = user_id
        stats["user_memories"] = mem.store.count(user_id)
    from memory_store.opening import describe_location

    stats["db"] = describe_location(db)  # a URL without its password
    stats["embedded_llm_cached"] = embedded.smollm2_is_cached()
    stats["embedded_llm_cache"] = str(embedded.smollm2_cache_path())
    if as_json:
        emit_json(stats)
        return
    for k, v in stats.items():
        click.echo(f"{k:>22}: {v}")


# ------------------------------------------------------------------ chat
@click.command()
@click.option("--name", "speaker", default="user", show_default=True, help="Your name in the memories.")
@db_option
@user_option
@model_options
@embedder_option
def chat(speaker: str, db: str, user_id: str, model: str, manager_model: str | None, answer_model: str | None, policy: str | None,
         embedder: str) -> None:
    """Talk with memory: each message is answered from memory, then remembered. `exit` or Ctrl-D ends."""
    from datetime import datetime, timezone

    with open_memory(db, embedder, model, manager_model, answer_model, policy) as mem:
        click.echo("memory-agent chat - type `exit` or press Ctrl-D to leave.", err=True)
        while True:
            click.echo("> ", nl=False, err=True)
            line = sys.stdin.readline()
            if not line or line.strip().lower() in ("exit", "quit"):
                break
            text = line.strip()
            if not text:
                continue
            if mem.store.count(user_id):
                ans = mem.answer(text, user_id=user_id)
                click.echo(ans.text or "(no answer)")
            else:
                click.echo("(no memories yet)")
            # Only the user's own words are remembered: storing the model's replies
            # would let its mistakes become "facts".
            ts = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
            result = mem.add([{"speaker": speaker, "text": text, "dia_id": f"chat-{uuid.uuid4().hex[:8]}"}],
                             user_id=user_id, timestamp=ts)
            for a in result.applied:
                click.echo(f"  [{a.op.lower()} #{a.id}] {a.new_text if a.op != 'DELETE' else a.old_text}", err=True)
