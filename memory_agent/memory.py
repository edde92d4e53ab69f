"""The public facade: ``Memory.open(path)`` then ``add``, ``search``, ``answer``.

``Memory`` wires the three pipeline steps (extraction -> Memory Manager ->
Answer Agent) to one :class:`memory_store.MemoryStore`. Each step can use its
own model (``extract_llm``, ``manager_llm``, ``answer_llm``; all default to
``llm``) so a trained manager or answer checkpoint slots in alone. Model specs
are resolved lazily: opening a memory to ``search`` or read ``history`` never
loads a language model.

Bad model output never corrupts the store and is never silent: every skipped
turn is in ``AddResult.skipped`` (with the raw output) and counted in
``Memory.stats``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.dates import parse_date
from memory_agent.answer import Answer, AnswerAgent, check_retrieval
from memory_agent.defaults import ANSWER_K, ANSWER_RETRIEVAL, EMBEDDER_NAMES, MANAGER_TOP_K, WAVE_SIZE
from memory_agent.errors import ConfigError, InvalidInput
from memory_agent.extraction import Fact, Turn, extract_facts
from memory_agent.llms.base import LLM, Usage, UsageReporting
from memory_agent.llms.spec import resolve_llm
from memory_agent.manager import AppliedChange, ManageOutcome, MemoryManager, Skipped, TurnFacts
from memory_agent.policies import role_specs

__all__ = ["Memory", "AddResult", "EMBEDDER_NAMES", "embedder_name", "resolve_embedder"]


@dataclass
class AddResult:
    applied: list[AppliedChange] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    turns: int = 0
    noops: int = 0
    extract_s: float = 0.0
    manage_s: float = 0.0
    manager_calls: int = 0
    decisions: int = 0
    direct_turns: int = 0
    redecided: int = 0
    already_applied: int = 0  # turns skipped because their receipt was held (a resumed ingestion)
    usage: dict[str, dict[str, float]] = field(default_factory=dict)  # per role, the delta of llm.usage

    def counts(self) -> dict[str, int]:
        ops = Counter(a.op for a in self.applied)
        stages = Counter(s.stage for s in self.skipped)
        return {
            "turns": self.turns,
            "facts": len(self.facts),
            "add": ops["ADD"],
            "update": ops["UPDATE"],
            "delete": ops["DELETE"],
            "noop": self.noops,
            "skipped_extract": stages["extract"],
            "skipped_manage": stages["manage"],
            "skipped_apply": stages["apply"],
        }


def embedder_name(spec: Any) -> Any:
    """The canonical name of an embedder name (``minilm`` is ``default``); anything else as it is."""
    return "default" if spec == "minilm" else spec


def resolve_embedder(spec: Any):
    """The one embedder resolver: a name of :data:`EMBEDDER_NAMES` (``None`` is ``default``) or an object.

    ``default``/``minilm`` -> SentenceTransformerEmbedder(), ``hashing`` -> HashingEmbedder(384).
    """
    from memory_store import HashingEmbedder, SentenceTransformerEmbedder

    spec = embedder_name(spec)
    if spec is None or spec == "default":
        return SentenceTransformerEmbedder()
    if spec == "hashing":
        return HashingEmbedder(384)
    if isinstance(spec, str):
        raise ConfigError(f"unknown embedder {spec!r}; use one of {', '.join(EMBEDDER_NAMES)}")
    if not callable(getattr(spec, "embed", None)):
        raise ConfigError(f"not an embedder: {spec!r}")
    return spec


class Memory:
    """Remember dialogue and answer from it (see the module docstring).

    ``policy`` picks the trained Memory Manager and Answer Agent when ``llm`` is
    the embedded default: ``"default"`` (the adapters shipped in
    :mod:`memory_agent.policies`), ``None`` (the untrained model everywhere) or a
    folder with ``manager/`` and ``answer/`` adapters. Explicit ``manager_llm`` /
    ``answer_llm`` override it.

    ``retrieval`` is how the Answer Agent searches (``hybrid``, ``vector`` or
    ``keyword``; see :meth:`search`), ``reranker`` an optional
    :class:`~memory_agent.answer.Reranker` applied to its hits.
    """

    def __init__(
        self,
        store: Any,
        llm: str | LLM = "default",
        *,
        extract_llm: str | LLM | None = None,
        manager_llm: str | LLM | None = None,
        answer_llm: str | LLM | None = None,
        policy: Any = "default",
        top_k: int = MANAGER_TOP_K,
        answer_k: int = ANSWER_K,
        wave_size: int = WAVE_SIZE,
        retrieval: str = ANSWER_RETRIEVAL,
        reranker: Any = None,
    ):
        check_retrieval(retrieval)
        self.store = store
        manager_llm, answer_llm = role_specs(llm, manager_llm, answer_llm, policy)
        self._specs = {
            "extract": extract_llm if extract_llm is not None else llm,
            "manager": manager_llm if manager_llm is not None else llm,
            "answer": answer_llm if answer_llm is not None else llm,
        }
        self._llms: dict[str, LLM] = {}
        self.top_k = top_k
        self.answer_k = answer_k
        self.wave_size = wave_size
        self.retrieval = retrieval
        self.reranker = reranker
        self.stats: Counter[str] = Counter()

    @classmethod
    def open(cls, path: str | Path, llm: str | LLM = "default", embedder: Any = "default", *, index: str = "flat", **kwargs: Any) -> "Memory":
        """A Memory over the store at ``path``: a folder (SQLite + FAISS) or a ``postgresql://`` URL."""
        from memory_store import open_store

        return cls(open_store(path, embedder=resolve_embedder(embedder), index=index), llm, **kwargs)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ models
    def _llm(self, role: str) -> LLM:
        if role not in self._llms:
            spec = self._specs[role]
            # Roles with the same spec share one instance (also for uncached specs
            # such as scripted:..., whose reply queue must be shared).
            same = [r for r, s in self._specs.items() if r in self._llms and isinstance(s, str) and s == spec]
            self._llms[role] = self._llms[same[0]] if same else resolve_llm(spec)
        return self._llms[role]

    @property
    def extract_llm(self) -> LLM:
        return self._llm("extract")

    @property
    def manager_llm(self) -> LLM:
        return self._llm("manager")

    @property
    def answer_llm(self) -> LLM:
        return self._llm("answer")

    # ------------------------------------------------------------ writing
    def add(self, turns: Sequence[dict | Turn], user_id: str, timestamp: Any = None, *,
            receipt: str | None = None) -> AddResult:
        """Remember dialogue turns (dicts with speaker, text, dia_id, blip_caption).

        ``receipt`` makes a retried call exactly-once: turn ``i`` is recorded in
        the store as ``f"{receipt}:{i}"`` in the same transaction as its changes,
        and a call with the same receipt skips the turns already recorded
        (counted in ``AddResult.already_applied``).
        """
        return self.add_sessions([(turns, timestamp)], user_id=user_id, receipt=receipt)

    def add_sessions(self, sessions: Iterable[tuple[Sequence[dict | Turn], Any]], user_id: str, *,
                     receipt: str | None = None) -> AddResult:
        """Remember several sessions ``[(turns, session_timestamp), ...]`` in dialogue order.

        Extraction for all of them is one batched model call; the manager then
        works through the turns in order (in batched waves, see manager.py).
        This is the fast path for ingesting a whole LoCoMo conversation.
        ``receipt``: as in :meth:`add`, turns numbered across all sessions.
        """
        turns: list[Turn] = []
        for session_turns, ts in sessions:
            iso = _iso(ts)
            for t in session_turns:
                turn = t if isinstance(t, Turn) else Turn.from_dict(t, iso)
                turns.append(Turn(turn.speaker, turn.text, turn.dia_id, turn.blip_caption, _iso(turn.timestamp) or iso))
        keys: list[str | None] = [f"{receipt}:{i}" for i in range(len(turns))] if receipt else [None] * len(turns)
        result = AddResult(turns=len(turns))
        if receipt and turns:
            held = self.store.receipts(user_id, keys)
            result.already_applied = len(held)
            kept = [i for i, k in enumerate(keys) if k not in held]
            turns, keys = [turns[i] for i in kept], [keys[i] for i in kept]
        if not turns:
            return result
        before = self._usage_snapshot()

        t0 = time.perf_counter()
        extraction = extract_facts(self.extract_llm, turns)
        result.extract_s = time.perf_counter() - t0
        for i, exc in extraction.invalid:
            result.skipped.append(Skipped("extract", turns[i].dia_id, exc.args[0], exc.raw))
        items = []
        for turn, facts, key in zip(turns, extraction.facts, keys):
            result.facts.extend(facts)
            if facts:
                items.append(TurnFacts.from_facts(facts, turn.timestamp, key))

        t0 = time.perf_counter()
        manager_llm = self.manager_llm if items and self.store.count(user_id) else _Lazy(self, "manager")
        outcome: ManageOutcome = MemoryManager(
            manager_llm, self.store, top_k=self.top_k, wave_size=self.wave_size
        ).manage(items, user_id)
        result.manage_s = time.perf_counter() - t0

        result.applied, result.noops = outcome.applied, outcome.noops
        result.skipped.extend(outcome.skipped)
        result.manager_calls, result.decisions = outcome.model_calls, outcome.decisions
        result.direct_turns, result.redecided = outcome.direct_turns, outcome.redecided
        if receipt:
            # turns that changed nothing (no facts, NOOP, refused output) are done too
            done = self.store.receipts(user_id, keys)
            rest = [k for k in keys if k not in done]
            if rest:
                self.store.apply([], user_id, receipts=rest)
        result.usage = self._usage_delta(before)
        self.stats.update({k: v for k, v in result.counts().items()})
        self.stats["manager_calls"] += outcome.model_calls
        self.stats["redecided"] += outcome.redecided
        return result

    # ------------------------------------------------------------ reading
    def search(self, query: str, user_id: str, k: int = 5, *, mode: str | None = None,
               filters: Any = None) -> list[Any]:
        """The user's k best memories for ``query``.

        ``mode``: ``hybrid`` (keyword and vector fused), ``vector`` or
        ``keyword``; default: this memory's ``retrieval``. ``filters``: the
        store's filter language, e.g. ``{"speaker": "Caroline"}`` or
        ``{"created_at": {"$gte": "2023-05-01"}}`` (:mod:`memory_store.filters`).
        """
        return self.store.search(query, user_id=user_id, k=k, mode=mode or self.retrieval, filters=filters)

    def answer(self, question: str, user_id: str, *, strategy: str = "memory", k: int | None = None) -> Answer:
        if strategy == "rlm":
            return self._answer_rlm(question, user_id)
        if strategy != "memory":
            raise ConfigError(f"unknown answer strategy {strategy!r}; use 'memory' or 'rlm'")
        return self.answer_many([question], user_id, k=k)[0]

    def answer_many(self, questions: Sequence[str], user_id: str, *, k: int | None = None) -> list[Answer]:
        """Several questions, one batched model call (evaluation uses this)."""
        agent = AnswerAgent(self.answer_llm, self.store, k=k or self.answer_k, retrieval=self.retrieval,
                            reranker=self.reranker)
        answers = agent.answer_many(questions, user_id)
        self.stats["answers"] += len(answers)
        self.stats["answers_invalid"] += sum(not a.valid for a in answers)
        return answers

    def _answer_rlm(self, question: str, user_id: str) -> Answer:
        from memory_agent.rlm import RecursiveRetriever  # optional subsystem: import on use

        records = self.store.list(user_id)
        context = [{"id": r.id, "time": r.updated_at, "text": r.text} for r in records]
        result = RecursiveRetriever(self.answer_llm).run(question, context=context)
        by_id = {r.id: r for r in records}
        cited = [by_id[i] for i in (result.cited_ids or []) if i in by_id]
        text = (result.answer or "").strip()
        self.stats["answers"] += 1
        self.stats["answers_invalid"] += not text
        extra = {"usage": result.usage, "trajectory": result.trajectory}
        return Answer(text, cited, records, result.answer or "", bool(text), question=question, strategy="rlm", extra=extra)

    # ------------------------------------------------------------ direct edits
    def get(self, memory_id: int, user_id: str):
        return self.store.get(memory_id, user_id=user_id)

    def update(self, memory_id: int, text: str, user_id: str):
        return self.store.update(memory_id, text, user_id=user_id, actor="user")

    def delete(self, memory_id: int, user_id: str):
        return self.store.delete(memory_id, user_id=user_id, actor="user")

    def history(self, memory_id: int, user_id: str):
        return self.store.history(memory_id, user_id=user_id)

    def list(self, user_id: str):
        return self.store.list(user_id=user_id)

    # ------------------------------------------------------------ usage
    def _usage_snapshot(self) -> dict[str, dict[str, float]]:
        out = {}
        for role, llm in self._llms.items():
            if isinstance(llm, UsageReporting) and isinstance(llm.usage, Usage):
                out[role] = llm.usage.as_dict()
        return out

    def _usage_delta(self, before: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        after = self._usage_snapshot()
        seen: set[int] = set()
        out = {}
        for role, now in after.items():
            if id(self._llms[role]) in seen:  # one model in several roles: count it once
                continue
            seen.add(id(self._llms[role]))
            prev = before.get(role, {})
            out[role] = {k: now[k] - prev.get(k, 0) for k in now}
        return out


class _Lazy:
    """Resolves the manager model only if the manager really calls it.

    A first ingest into an empty store ADDs directly, so it should not pay for
    loading a manager model it never uses.
    """

    def __init__(self, memory: Memory, role: str):
        self._memory, self._role = memory, role

    def generate(self, batch, **kwargs):
        return self._memory._llm(self._role).generate(batch, **kwargs)


def _iso(value: Any) -> str | None:
    """Session dates to ISO-8601 (LoCoMo's "1:56 pm on 8 May, 2023" included)."""
    if value is None:
        return None
    when = parse_date(value)
    if when is None:
        raise InvalidInput(f"unreadable session timestamp {value!r}; use ISO-8601 like 2024-05-08T13:56")
    return when.isoformat()
