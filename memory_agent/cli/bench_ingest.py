"""``memory-agent bench ingest``: how fast one LoCoMo conversation goes into memory.

Reports turns/s, the LLM's generated tokens/s, the time split between
extraction and management, and how much of the wall time the LLM took
(``llm_share``), as one JSON object with ``--json``. Numbers depend on the
machine and on what else runs on it; the command prints the CPU count and load.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from memory_agent.cli.options import embedder_option, emit_json, json_option, model_options, policy_value
from memory_agent.errors import ConfigError

__all__ = ["ingest", "find_locomo", "load_sessions"]

_REL = Path("..") / "shared" / "datasets" / "locomo" / "locomo_dev.json"


def find_locomo() -> Path:
    """The default LoCoMo file, relative to the current dir, then to the repo root."""
    repo_root = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repo_root):
        path = (base / _REL).resolve()
        if path.is_file():
            return path
    raise ConfigError(f"no LoCoMo file at {_REL} (from {Path.cwd()} or {repo_root}); pass --data PATH")


def load_sessions(path: Path) -> tuple[str, list[tuple[list[dict], str]]]:
    """First conversation of a LoCoMo JSON file -> (sample id, [(turn dicts, session date)])."""
    try:
        from data.locomo import load_locomo  # the project's typed loader, when installed
    except ImportError:
        load_locomo = None
    if load_locomo is not None:
        conv = load_locomo(path)[0]
        return conv.sample_id, [
            ([t.model_dump() for t in s.turns], s.timestamp) for s in conv.sessions
        ]
    # Minimal fallback parser of the raw layout.
    raw = json.loads(Path(path).read_text())
    sample = raw[0] if isinstance(raw, list) else raw
    conv = sample["conversation"]
    sessions = []
    n = 1
    while f"session_{n}" in conv:
        sessions.append((conv[f"session_{n}"], conv[f"session_{n}_date_time"]))
        n += 1
    return str(sample.get("sample_id", "locomo-0")), sessions


@click.command("ingest")
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="LoCoMo JSON file (default: ../shared/datasets/locomo/locomo_dev.json).")
@click.option("--turns", type=int, default=None, help="Only the first N turns.")
@click.option("--db", default=None, help="Memory folder or PostgreSQL URL (default: a fresh temporary folder).")
@model_options
@embedder_option
@json_option
def ingest(data_path: Path | None, turns: int | None, db: str | None, model: str, manager_model: str | None,
           answer_model: str | None, policy: str | None, embedder: str, as_json: bool) -> None:
    """Ingest one LoCoMo conversation and report throughput."""
    from memory_agent.memory import Memory

    path = data_path or find_locomo()
    sample_id, sessions = load_sessions(path)
    if turns is not None:
        kept, left = [], turns
        for ts_turns, ts in sessions:
            if left <= 0:
                break
            kept.append((ts_turns[:left], ts))
            left -= len(ts_turns[:left])
        sessions = kept
    n_turns = sum(len(t) for t, _ in sessions)
    folder = db or tempfile.mkdtemp(prefix="memory-agent-bench-")
    t_load = time.perf_counter()
    mem = Memory.open(folder, llm=model, embedder=embedder, manager_llm=manager_model, answer_llm=answer_model,
                      policy=policy_value(policy))
    _ = mem.extract_llm, mem.manager_llm  # load models before the clock starts
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    result = mem.add_sessions(sessions, user_id=sample_id)
    wall = time.perf_counter() - t0
    mem.close()
    usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0, "seconds": 0.0}
    for role in result.usage.values():
        for k in usage:
            usage[k] += role.get(k, 0)
    report = {
        "data": str(path),
        "sample_id": sample_id,
        "turns": n_turns,
        "sessions": len(sessions),
        "model": model,
        "embedder": embedder,
        "wall_s": round(wall, 2),
        "load_s": round(load_s, 2),
        "turns_per_s": round(n_turns / wall, 3) if wall else None,
        "extract_s": round(result.extract_s, 2),
        "manage_s": round(result.manage_s, 2),
        "llm_s": round(usage["seconds"], 2),
        "llm_share": round(usage["seconds"] / wall, 3) if wall else None,
        "llm_calls": usage["calls"],
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "llm_tokens_per_s": round(usage["completion_tokens"] / usage["seconds"], 1) if usage["seconds"] else None,
        "llm_prompt_tokens_per_s": round(usage["prompt_tokens"] / usage["seconds"], 1) if usage["seconds"] else None,
        "manager_calls": result.manager_calls,
        "manager_decisions": result.decisions,
        "direct_turns": result.direct_turns,
        "redecided": result.redecided,
        "counts": result.counts(),
        "extract_valid_rate": _rate(n_turns, result.counts()["skipped_extract"]),
        "manage_valid_rate": _rate(result.decisions, result.counts()["skipped_manage"]),
        "memories": None,
        "db": folder,
        "cpu_count": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    from memory_store import open_store

    with open_store(folder) as store:
        report["memories"] = store.count(sample_id)
    if as_json:
        emit_json(report)
        return
    for k, v in report.items():
        click.echo(f"{k:>24}: {v}")


def _rate(total: int, bad: int) -> float | None:
    return round((total - bad) / total, 3) if total else None
