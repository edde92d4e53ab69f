"""Greedy validation of a policy on held-out episodes, with the product's own calls.

The policy answers each episode's prompt exactly as in deployment
(:meth:`MemoryManager.ask` / :meth:`AnswerAgent.ask`: greedy, the product's
budget and stop strings) and the completions are scored by the same scorers
the GRPO rewards use. The reports carry per-episode values, so two policies
validated on the same episodes can be compared with a paired bootstrap
(:func:`eval.stats.paired_bootstrap`).

Manager reports add what a reward mean hides:

* ``edit_recall``: of the memories the gold decision UPDATEs or DELETEs (a
  superseded fact), the share the policy UPDATEs or DELETEs too; ``edit_precision``:
  of the policy's UPDATEs/DELETEs, the share that hit such a memory;
* ``add_rate``: on turns whose gold is ADD only (a new fact), the share of
  decisions that ADD; ``noop_rate`` on repeated facts;
* the operation mix and the valid-output rate; each per data source
  (``synthetic`` and ``locomo``) and overall.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from eval.scoring import answer_reward, score_answer_reply
from memory_agent.answer import AnswerAgent
from memory_agent.defaults import WAVE_SIZE
from memory_agent.manager import MemoryManager
from memory_agent.operations import DeleteOp, UpdateOp
from training.episodes import AnswerEpisode, ManagerEpisode
from training.rewards import ManagerScore, ManagerScorer

__all__ = ["manager_report", "validate_manager", "answer_report", "validate_answer", "source_of", "in_waves"]


def source_of(conversation_id: str) -> str:
    return "synthetic" if conversation_id.startswith("synthetic") else "locomo"


def in_waves(ask: Callable[[list[Any]], list[str]], prompts: Sequence[Any], desc: str) -> list[str]:
    """``ask`` over ``prompts`` one generation wave at a time, with a progress bar (validation is long on a CPU)."""
    replies: list[str] = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt", file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(prompts), WAVE_SIZE):
            wave = list(prompts[start : start + WAVE_SIZE])
            replies.extend(ask(wave))
            bar.update(len(wave))
    return replies


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _edit_counts(episode: ManagerEpisode, score: ManagerScore) -> tuple[int, int, int]:
    """(gold edits hit, gold edits, policy edits) of one episode."""
    gold = {op.id for op in episode.gold or () if isinstance(op, (UpdateOp, DeleteOp))}
    mine = {i for _op, i in score.edits} if score.valid else set()
    return len(gold & mine), len(gold), len(mine)


def _manager_block(pairs: Sequence[tuple[ManagerEpisode, ManagerScore]]) -> dict[str, Any]:
    valid = [s for _e, s in pairs if s.valid]
    known = [(e, s) for e, s in pairs if e.gold is not None]
    hit = sum(_edit_counts(e, s)[0] for e, s in known)
    gold_n = sum(_edit_counts(e, s)[1] for e, s in known)
    mine_n = sum(_edit_counts(e, s)[2] for e, s in known)
    new = [s for e, s in known if e.kind == "new"]
    repeat = [s for e, s in known if e.kind == "repeat"]
    return {
        "n": len(pairs),
        "reward": _mean([s.reward for _e, s in pairs]),
        "valid_rate": len(valid) / len(pairs) if pairs else None,
        "ops": {k.lower(): _mean([float(k in s.ops) for s in valid]) for k in ("ADD", "UPDATE", "DELETE", "NOOP")},
        "recall": _mean([s.recall for s in valid if s.recall is not None]),
        "stale": _mean([s.stale for s in valid if s.stale is not None]),
        "edit_recall": hit / gold_n if gold_n else None,
        "edit_precision": hit / mine_n if mine_n else None,
        "gold_edits": gold_n,
        "policy_edits": mine_n,
        "add_rate": _mean([float(s.valid and "ADD" in s.ops) for s in new]),
        "noop_rate": _mean([float(s.valid and s.ops == ("NOOP",)) for s in repeat]),
        "episodes_by_kind": {k: sum(e.kind == k for e, _ in pairs) for k in ("new", "change", "repeat", "unknown")},
    }


def manager_report(episodes: Sequence[ManagerEpisode], scores: Sequence[ManagerScore],
                   replies: Sequence[str] | None = None) -> dict[str, Any]:
    """Aggregate scores overall and per data source, with the per-episode rewards."""
    pairs = list(zip(episodes, scores, strict=True))
    out = {"all": _manager_block(pairs)}
    for source in ("synthetic", "locomo"):
        subset = [(e, s) for e, s in pairs if source_of(e.conversation_id) == source]
        if subset:
            out[source] = _manager_block(subset)
    out["per_episode"] = [{"id": e.id, "conversation": e.conversation_id, "dia_id": e.item.dia_id, "kind": e.kind,
                           "reward": s.reward, "valid": s.valid, "ops": list(s.ops)} for e, s in pairs]
    if replies is not None:
        out["examples"] = [r[:200] for r in replies[:3]]
    return out


def validate_manager(llm: Any, episodes: Sequence[ManagerEpisode], scorer: ManagerScorer) -> dict[str, Any]:
    """Greedy decisions of ``llm`` on ``episodes``, scored by the dense manager reward."""
    if not episodes:
        return {"all": {"n": 0}}
    replies = in_waves(MemoryManager(llm, None).ask, [(e.item, e.hits) for e in episodes], "validation (manager)")
    scores = [scorer.score(e, r) for e, r in zip(episodes, replies)]
    return manager_report(episodes, scores, replies)


def answer_report(episodes: Sequence[AnswerEpisode], replies: Sequence[str], metric: str = "f1") -> dict[str, Any]:
    scored = [score_answer_reply(r, e.shown, e.qa.answer, e.qa.question) for e, r in zip(episodes, replies, strict=True)]

    def block(idx: list[int]) -> dict[str, Any]:
        return {"n": len(idx), "f1": _mean([scored[i].f1 for i in idx]), "em": _mean([scored[i].em for i in idx]),
                "valid_rate": _mean([float(scored[i].valid) for i in idx]),
                "reward": _mean([answer_reward(scored[i], metric) for i in idx]),
                "quoted_recall": _mean([scored[i].quoted_recall for i in idx])}

    everything = list(range(len(episodes)))
    out: dict[str, Any] = {"all": block(everything)}
    for source in ("synthetic", "locomo"):
        idx = [i for i in everything if source_of(episodes[i].conversation_id) == source]
        if idx:
            out[source] = block(idx)
    current = [i for i in everything if "current" in episodes[i].qa.tags]
    if current:
        out["current"] = block(current)
    out["per_episode"] = [{"id": e.id, "conversation": e.conversation_id, "question": e.qa.question,
                           "f1": s.f1, "valid": s.valid, "tags": list(e.qa.tags)} for e, s in zip(episodes, scored)]
    out["examples"] = [r[:200] for r in replies[:3]]
    return out


def validate_answer(llm: Any, episodes: Sequence[AnswerEpisode], metric: str = "f1") -> dict[str, Any]:
    """Greedy replies of ``llm`` to the episodes' prompts, read and scored as the product reads them."""
    if not episodes:
        return {"all": {"n": 0}}
    replies = in_waves(AnswerAgent(llm, None).ask, [e.messages for e in episodes], "validation (answer)")
    return answer_report(episodes, replies, metric)
