"""``memory-agent eval``: ingest, answer, score and report, resumably.

Layout of a run folder (one method with one set of models)::

    run.json                the run's identity (method, models, embedder, data)
    stores/<sample_id>/     the method's memory of that conversation
    stores/<sample_id>.ingested.json   marker + ingest counts, written last
    predictions.jsonl       one row per answered question, appended as we go
    summary.json, details.json, report.md, by_category.png

Why resumable: a LoCoMo conversation takes a small CPU model a long time to
ingest. A conversation whose marker exists is never ingested again (a store
without a marker is a torn ingest and is rebuilt), and a question whose row is
in ``predictions.jsonl`` is never asked again. With several methods each gets
``OUT/<method>/`` and a comparison is written to ``OUT``.

Adversarial questions (category 5) are not asked, as in Mem0 and Memory-R1.

Several ``--retrieval`` modes give each method one run folder per mode
(``OUT/<method>-<mode>/``); the memory is built once and copied to the other
modes' folders (retrieval happens at answer time, so the memory is the same),
and ``--stores-from RUN`` does the same from an earlier run whose ingest
identity (method, models that write memory, embedder, data) matches.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data.locomo import SPLITS, default_root
from data.schema import Conversation, DatasetError
from data.specs import load_spec
from eval import metrics
from eval.scoring import answer_metrics, answer_recall, evidence_recall
from eval.methods import METHODS, IngestStats, MethodConfig, Prediction, make_method
from eval.report import details, read_rows, summarize, write_compare, write_report
from memory_agent.answer import check_retrieval
from memory_agent.defaults import ANSWER_K, ANSWER_RETRIEVAL
from memory_agent.errors import ConfigError
from memory_agent.llms import resolve_llm
from memory_agent.memory import embedder_name, resolve_embedder
from memory_agent.policies import role_specs

__all__ = ["EvalConfig", "load_conversations", "make_embedder", "run_eval", "run_method"]

#: Fields of run.json that decide what a method's memory holds: a folder whose
#: ingest identity matches may lend its ingested stores (``--stores-from``).
INGEST_IDENTITY = ("method", "model", "manager_model", "embedder", "data", "split")
#: Fields of run.json that must match for a rerun to reuse a run folder: every
#: option that changes a prediction, so a rerun is never served stale answers.
IDENTITY = (*INGEST_IDENTITY, "answer_model", "top_k", "context_window", "retrieval")


@dataclass
class EvalConfig:
    """Everything ``memory-agent eval`` takes. Model fields are specs or LLM objects."""

    out: Path
    methods: Sequence[str] = ("memory-r1",)
    data: str | None = None
    split: str | None = None
    limit_questions: int | None = None
    model: Any = "default"
    manager_model: Any = None
    answer_model: Any = None
    judge: Any = None
    embedder: Any = "default"
    policy: Any = "default"  # trained manager/answer adapters for the embedded model (memory_agent.policies)
    f1: str = "mem0"
    top_k: int = ANSWER_K
    retrieval: Sequence[str] = (ANSWER_RETRIEVAL,)  # Answer Agent search modes; one run folder per mode
    stores_from: Path | None = None  # an earlier run to copy ingested stores from (same ingest identity)
    answer_batch: int = 8  # questions per model call; latencies are per question, amortised
    context_window: int | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _name(spec: Any) -> str | None:
    """A printable name for a model spec or object."""
    if spec is None or isinstance(spec, str):
        return spec
    return str(getattr(spec, "name", None) or type(spec).__name__)


def load_conversations(data: str | None, split: str | None) -> list[Conversation]:
    """``--data``/``--split`` -> conversations (the forms of :mod:`data.specs`; default: LoCoMo dev)."""
    return load_spec(data, split=split)


def make_embedder(spec: Any) -> Any:
    """A name of :data:`memory_agent.memory.EMBEDDER_NAMES` or an embedder object (the product's resolver)."""
    return resolve_embedder(spec)


def _check_identity(run_dir: Path, identity: dict[str, Any], settings: dict[str, Any]) -> None:
    """Refuse a folder that holds another run; record this run's identity and settings."""
    path = run_dir / "run.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), identity[k]) for k in IDENTITY if old.get(k) != identity[k]}
        if diff:
            raise ConfigError(
                f"{run_dir} holds another run ({', '.join(f'{k}: {a!r} != {b!r}' for k, (a, b) in diff.items())}); "
                "use another --out"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**identity, **settings}, indent=2) + "\n", encoding="utf-8")


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _judge_rows(rows: list[dict[str, Any]], judge_llm: Any, judge_name: str, batch: int = 16) -> int:
    """Label rows that lack a label from this judge; returns how many were judged."""
    todo = [r for r in rows if r.get("judge_model") != judge_name]
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        labels = metrics.judge_many([(r["question"], r["gold"], r["prediction"]) for r in chunk], judge_llm)
        for row, label in zip(chunk, labels):
            row["judge"], row["judge_invalid"], row["judge_model"] = label, label is None, judge_name
    return len(todo)


def _ingest_summary(markers: list[IngestStats]) -> dict[str, Any]:
    ops: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for m in markers:
        ops.update(m.ops)
        skipped.update(m.skipped)
    return {
        "conversations": len(markers),
        "turns": sum(m.turns for m in markers),
        "facts": sum(m.facts for m in markers),
        "ops": dict(sorted(ops.items())),
        "invalid_outputs": sum(m.invalid_outputs for m in markers),
        "skipped_by_stage": dict(sorted(skipped.items())),
        "seconds": round(sum(m.seconds for m in markers), 3),
    }


def _row(conv: Conversation, qid: int, pred: Prediction) -> dict[str, Any]:
    """One line of predictions.jsonl."""
    qa = conv.qa[qid]
    return {
        "sample_id": conv.sample_id,
        "qid": qid,
        "question": qa.question,
        "gold": qa.answer,
        "prediction": pred.text,
        "category": qa.category,
        "category_name": qa.category_name,
        "tags": list(qa.tags),
        "evidence": list(qa.evidence),
        "valid": pred.valid,
        "retrieved_ids": pred.retrieved,
        "search_ms": None if pred.search_ms is None else round(pred.search_ms, 2),
        "answer_ms": None if pred.answer_ms is None else round(pred.answer_ms, 2),
        "context_tokens": pred.context_tokens,
        "raw": pred.raw,
        # gold-answer content in what the Answer Agent was shown: retrieval vs answering failures
        "answer_recall": None if pred.shown is None else answer_recall(qa.answer, pred.shown),
        # the same in the top-k retrieved (before the token budget), and the evidence turns found
        "answer_recall_k": None if pred.ranked is None else answer_recall(qa.answer, pred.ranked),
        "evidence_recall": None if pred.ranked_sources is None else evidence_recall(qa.evidence, pred.ranked_sources),
        "evidence_recall_shown": (None if pred.shown_sources is None
                                  else evidence_recall(qa.evidence, pred.shown_sources)),
        "ranked_sources": pred.ranked_sources,
        **answer_metrics(pred.text, qa.answer, qa.category),
    }


def _seed_store(conv_id: str, stores: Path, seed: Path | None, identity: dict[str, Any]) -> bool:
    """Copy ``seed``'s finished ingest of ``conv_id`` into ``stores`` if its ingest identity matches."""
    if seed is None:
        return False
    seed = Path(seed)
    marker, store_dir, run_json = seed / "stores" / f"{conv_id}.ingested.json", seed / "stores" / conv_id, seed / "run.json"
    if not (marker.is_file() and store_dir.is_dir() and run_json.is_file()):
        return False
    theirs = json.loads(run_json.read_text(encoding="utf-8"))
    if any(theirs.get(k) != identity[k] for k in INGEST_IDENTITY):
        return False
    target = stores / conv_id
    if target.exists():
        shutil.rmtree(target)
    _copy_store(store_dir, target)
    shutil.copy2(marker, stores / marker.name)  # the marker last: a copy torn before it is rebuilt
    return True


def _copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of a store folder, also while another process has it open.

    SQLite's online backup copies the database as of one snapshot (a file copy of a
    WAL database being checkpointed can tear); the index file follows and is
    rebuilt on open if it does not match.
    """
    import sqlite3

    from memory_store.schema import DB_NAME

    dst.mkdir(parents=True)
    source = sqlite3.connect(f"file:{src / DB_NAME}?mode=ro", uri=True)
    target = sqlite3.connect(dst / DB_NAME)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    for extra in src.iterdir():
        if extra.is_file() and not extra.name.startswith(DB_NAME):
            shutil.copy2(extra, dst / extra.name)


def _identity(method_name: str, config: EvalConfig, method_config: MethodConfig) -> dict[str, Any]:
    """What a run folder's rows depend on: a rerun with another value is refused, not served stale rows."""
    uses = METHODS[method_name].uses_retrieval
    return {
        "method": method_name,
        "model": _name(config.model),
        "manager_model": _name(config.manager_model),
        "answer_model": _name(config.answer_model),
        "embedder": _name(embedder_name(config.embedder)),
        "data": str(config.data) if config.data else str(default_root()),
        "split": config.split,
        "top_k": config.top_k if uses else None,
        "context_window": config.context_window if method_name == "full-context" else None,
        "retrieval": method_config.retrieval if uses else None,
    }


def _selected(conversations: Sequence[Conversation], limit: int | None) -> list[tuple[Conversation, int]]:
    """The questions of a run, in order, after --limit-questions (a total): adversarial ones are not scored."""
    selected = [(conv, qid) for conv in conversations for qid, qa in enumerate(conv.qa) if not qa.is_adversarial]
    return selected if limit is None else selected[:limit]


def run_method(
    method_name: str,
    conversations: Sequence[Conversation],
    run_dir: Path,
    config: EvalConfig,
    method_config: MethodConfig,
    judge_llm: Any = None,
    seed: Path | None = None,
) -> dict[str, Any]:
    """Evaluate one method into ``run_dir``; returns the summary.

    ``seed``: a run folder whose finished ingests (same ingest identity) are copied instead of rebuilt.
    """
    run_dir = Path(run_dir)
    identity = _identity(method_name, config, method_config)
    settings = {"f1": config.f1, "answer_batch": config.answer_batch, "judge": _name(config.judge),
                "limit_questions": config.limit_questions}
    _check_identity(run_dir, identity, settings)
    pred_path = run_dir / "predictions.jsonl"
    rows = read_rows(pred_path)
    if pred_path.is_file() and len(rows) != sum(1 for ln in pred_path.read_text(encoding="utf-8").splitlines() if ln):
        _rewrite(pred_path, rows)  # drop a line torn by an interruption before appending after it
    done = {(r["sample_id"], r["qid"]) for r in rows}
    selected = _selected(conversations, config.limit_questions)
    wanted = {(c.sample_id, q) for c, q in selected}

    method = make_method(method_name, method_config)
    stores = run_dir / "stores"
    stores.mkdir(exist_ok=True)
    markers: dict[str, IngestStats] = {}
    judge_name = _name(config.judge)
    pending = [(c, q) for c, q in selected if (c.sample_id, q) not in done]
    bar = tqdm(total=len(pending), desc=f"{method_name}: questions", unit="q", file=sys.stderr,
               disable=not config.progress, dynamic_ncols=True)
    try:
        with pred_path.open("a", encoding="utf-8") as out:
            for conv in conversations:
                todo = [q for c, q in pending if c.sample_id == conv.sample_id]
                marker = stores / f"{conv.sample_id}.ingested.json"
                store_dir = stores / conv.sample_id
                if not todo:
                    if marker.is_file():
                        markers[conv.sample_id] = IngestStats.from_dict(json.loads(marker.read_text()))
                    continue
                if marker.is_file() or _seed_store(conv.sample_id, stores, seed, identity):
                    stats = IngestStats.from_dict(json.loads(marker.read_text()))
                    method.load(conv, store_dir)
                else:
                    if store_dir.exists():  # a torn ingest: its memory is incomplete
                        shutil.rmtree(store_dir)
                    with tqdm(total=conv.n_turns, desc=f"{method_name}: ingest {conv.sample_id}", unit="turn",
                              file=sys.stderr, disable=not config.progress, leave=False) as ibar:
                        stats = method.ingest(conv, store_dir, progress=ibar.update)
                    marker.write_text(json.dumps(stats.to_dict(), indent=2) + "\n", encoding="utf-8")
                markers[conv.sample_id] = stats
                for start in range(0, len(todo), config.answer_batch):
                    qids = todo[start : start + config.answer_batch]
                    preds = method.answer_many([conv.qa[q].question for q in qids])
                    batch = [_row(conv, qid, pred) for qid, pred in zip(qids, preds)]
                    if judge_llm is not None:
                        _judge_rows(batch, judge_llm, judge_name)
                    for row in batch:
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    rows.extend(batch)
                    out.flush()  # a batch is never lost to a later interruption
                    bar.update(len(qids))
    finally:
        bar.close()
        method.close()

    rows = [r for r in rows if (r["sample_id"], r["qid"]) in wanted]
    if judge_llm is not None and _judge_rows(rows, judge_llm, judge_name):
        # labels added to rows answered by an earlier, unjudged run
        kept = {(r["sample_id"], r["qid"]): r for r in rows}
        _rewrite(pred_path, [kept.get((r["sample_id"], r["qid"]), r) for r in read_rows(pred_path)])
    order = {key: i for i, key in enumerate((c.sample_id, q) for c, q in selected)}
    rows.sort(key=lambda r: order[(r["sample_id"], r["qid"])])
    summary = summarize(rows, method=method_name, model=identity["model"], f1_kind=config.f1,
                        ingest=_ingest_summary([markers[s] for s in sorted(markers)]))
    write_report(run_dir, summary, details(rows, config.f1))
    return summary


def run_eval(config: EvalConfig, conversations: Sequence[Conversation] | None = None) -> list[dict[str, Any]]:
    """Evaluate every method of ``config``; returns their summaries (and writes the files)."""
    if config.f1 not in metrics.F1_KINDS:
        raise ConfigError(f"unknown F1 kind {config.f1!r}; choose from {', '.join(metrics.F1_KINDS)}")
    if config.split is not None and config.split not in SPLITS:
        raise ConfigError(f"unknown split {config.split!r}; choose from {', '.join(SPLITS)}")
    if not config.methods:
        raise ConfigError("no --method given")
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if isinstance(config.retrieval, str):
        config = replace(config, retrieval=(config.retrieval,))
    for mode in config.retrieval or [None]:
        check_retrieval(mode)
    if config.stores_from is not None and not (Path(config.stores_from) / "run.json").is_file():
        raise ConfigError(f"--stores-from {config.stores_from} is not an evaluation run folder (no run.json)")
    if conversations is None:
        conversations = load_conversations(config.data, config.split)
    if not conversations:
        raise DatasetError(config.data or default_root(), "no conversations selected")
    # The roles' models as Memory would pick them (shipped policies by default), recorded in run.json.
    manager, answer = role_specs(config.model, config.manager_model, config.answer_model, config.policy)
    config = replace(config, manager_model=manager, answer_model=answer)
    llm = resolve_llm(config.model)
    method_config = MethodConfig(
        llm=llm,
        embedder=make_embedder(config.embedder),
        manager_llm=resolve_llm(config.manager_model) if config.manager_model is not None else None,
        answer_llm=resolve_llm(config.answer_model) if config.answer_model is not None else None,
        top_k=config.top_k,
        context_window=config.context_window,
    )
    judge_llm = resolve_llm(config.judge) if config.judge is not None else None
    out = Path(config.out)
    modes = list(dict.fromkeys(config.retrieval))
    summaries, run_dirs = [], []
    runs = [(name, mode) for name in dict.fromkeys(config.methods)  # each method once, in the order given
            for mode in (modes if METHODS[name].uses_retrieval else modes[:1])]
    for name, mode in runs:
        if len(runs) == 1:
            run_dir = out
        else:
            run_dir = out / (f"{name}-{mode}" if len(modes) > 1 and METHODS[name].uses_retrieval
                             else name)
        seed = config.stores_from
        if seed is None and mode != modes[0]:  # the same memory, built once by the first mode's run
            seed = out / f"{name}-{modes[0]}"
        started = time.perf_counter()
        summaries.append(run_method(name, conversations, run_dir, config, replace(method_config, retrieval=mode),
                                    judge_llm, seed=seed))
        run_dirs.append(run_dir)
        if config.progress:
            print(f"{name} ({mode}): done in {time.perf_counter() - started:.1f}s -> {run_dir}", file=sys.stderr)
    if len(run_dirs) > 1:
        write_compare(run_dirs, out, f1_kind=config.f1)
    return summaries
