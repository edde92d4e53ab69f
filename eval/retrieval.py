"""``memory-agent eval retrieval``: how often retrieval finds the evidence, without a language model.

Why: answering a LoCoMo conversation costs a CPU model minutes; retrieval
costs milliseconds. This scores the Answer Agent's own retrieval
(:meth:`memory_agent.answer.AnswerAgent.retrieve`: per-speaker split, time
boost, the chosen mode) on every question, in every search mode, so a
retrieval change can be judged on whole splits before any F1 run:

* over raw turns (``source="turns"``: the memory of the ``rag`` method), or
* over the memories an earlier ``memory-agent eval`` run built
  (``source=RUN_DIR``, its ``stores/<sample_id>``; opened read-only in spirit:
  searches never write).

Metrics (percent, per category and overall) are the harness's own
(:mod:`eval.scoring`): evidence recall at k and at 10, and gold-answer word
recall at k, plus the evidence recall if *every* memory were retrieved (the
ceiling a better ranking could reach).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.schema import Conversation
from eval.methods import store_turns
from eval.report import SCORED_CATEGORIES, recall_block
from eval.scoring import answer_recall, evidence_recall, memory_source
from memory_agent.answer import AnswerAgent
from memory_agent.defaults import ANSWER_K
from memory_agent.errors import ConfigError

__all__ = ["retrieval_report"]


def _store(conv: Conversation, source: str | Path, embedder: Any) -> Any:
    from memory_store import InMemoryStore, MemoryStore

    if source == "turns":
        store = InMemoryStore(embedder)
        for session in conv.sessions:
            store_turns(store, session, conv.sample_id)
        return store
    folder = Path(source) / "stores" / conv.sample_id
    if not (Path(source) / "stores" / f"{conv.sample_id}.ingested.json").is_file():
        raise ConfigError(f"{source} has no finished memory of {conv.sample_id} (run memory-agent eval first)")
    return MemoryStore(folder, embedder=embedder)


def _block(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    present = {r["category_name"] for r in rows}
    return recall_block(rows, key, [c for c in SCORED_CATEGORIES if c in present])


def retrieval_report(conversations: Sequence[Conversation], *, source: str | Path = "turns",
                     modes: Sequence[str] = ("vector", "keyword", "hybrid"), embedder: Any,
                     k: int = ANSWER_K, time_aware: bool = True) -> dict[str, Any]:
    """Evidence and answer recall of the Answer Agent's retrieval per mode (see the module docstring)."""
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    ceiling: list[dict[str, Any]] = []
    seconds: dict[str, float] = {m: 0.0 for m in modes}
    for conv in conversations:
        store = _store(conv, source, embedder)
        try:
            everything = [memory_source(r) for r in store.list(conv.sample_id)]
            for mode in modes:
                agent = AnswerAgent(None, store, k=k, retrieval=mode, time_aware=time_aware)
                speakers, now = agent.present(conv.sample_id)
                for qa in conv.qa:
                    if qa.is_adversarial:
                        continue
                    start = time.perf_counter()
                    hits = agent.retrieve(qa.question, conv.sample_id, speakers, agent.when(qa.question, now))
                    seconds[mode] += time.perf_counter() - start
                    sources = [memory_source(h) for h in hits]
                    rows[mode].append({"category_name": qa.category_name,
                                       "evidence": evidence_recall(qa.evidence, sources),
                                       "evidence_10": evidence_recall(qa.evidence, sources[:10]),
                                       "answer": answer_recall(qa.answer, hits)})
            ceiling += [{"ceiling": evidence_recall(qa.evidence, everything)} for qa in conv.qa
                        if not qa.is_adversarial]
        finally:
            store.close()
    return {
        "source": str(source), "k": k, "time_aware": time_aware,
        "conversations": [c.sample_id for c in conversations],
        "questions": len(next(iter(rows.values()), [])),
        "evidence_recall_ceiling": recall_block(ceiling, "ceiling", [])["overall"],
        "modes": {m: {"evidence_recall@k": _block(r, "evidence"), "evidence_recall@10": _block(r, "evidence_10"),
                      "answer_recall@k": _block(r, "answer"),
                      "ms_per_question": round(1000 * seconds[m] / max(1, len(r)), 2)} for m, r in rows.items()},
    }
