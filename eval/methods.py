"""The compared methods: one memory strategy each, all answering with the same LLM.

* ``memory-r1``: the full pipeline (extraction -> Memory Manager -> Answer Agent)
  through :class:`memory_agent.memory.Memory`.
* ``add-all``: the same extraction, but every fact is ADDed (no manager, so no
  UPDATE or DELETE); answers with the same Answer Agent. The ablation that
  shows what memory management buys.
* ``rag``: no extraction; every raw turn (``"speaker: text"``, dated with its
  session's time) is embedded into a :class:`~memory_store.MemoryStore` and the
  same Answer Agent retrieves the top-k turns (k = 60, as for memories).
* ``full-context``: the whole conversation in the prompt, cut from the OLDEST end
  to fit the model's window (counted with the tokenizer when there is one, else
  characters / 4).
* ``rlm``: the Memory-R1 memory, answered by the recursive retriever
  (``Memory.answer(strategy="rlm")``).

A method handles one conversation at a time: :meth:`Method.ingest` builds its
memory in a folder (the harness caches it), :meth:`Method.load` reopens it,
:meth:`Method.answer_many` answers a batch of questions (one model call: batching
is what makes a CPU fast enough). ``METHODS`` maps CLI names to classes.
The user id of a conversation is its ``sample_id``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from data.schema import Conversation, Session
from memory_agent.answer import AnswerAgent, display_date, parse_answer, shown_messages
from eval.scoring import memory_source, memory_view
from memory_agent.defaults import ANSWER_K, ANSWER_MAX_NEW_TOKENS, ANSWER_RETRIEVAL
from memory_agent.errors import ConfigError
from memory_agent.llms.base import TokenCounting, prompt_tokens
from memory_agent.memory import Memory
from memory_agent.prompts import answer_messages, format_turn

__all__ = [
    "MethodConfig",
    "Prediction",
    "IngestStats",
    "Method",
    "MemoryR1Method",
    "AddAllMethod",
    "RagMethod",
    "FullContextMethod",
    "RLMMethod",
    "METHODS",
    "make_method",
    "store_turns",
    "count_tokens",
    "context_window",
]

Progress = Callable[[int], None]


@dataclass
class MethodConfig:
    """What every method is built from. ``llm`` is the default for every role."""

    llm: Any
    embedder: Any
    manager_llm: Any = None
    answer_llm: Any = None
    top_k: int = ANSWER_K  # memories (or turns, for rag) the Answer Agent retrieves per question
    context_window: int | None = None  # full-context: tokens; None = the model's own
    retrieval: str = ANSWER_RETRIEVAL  # how the Answer Agent searches: hybrid, vector or keyword

    @property
    def answerer(self) -> Any:
        return self.answer_llm if self.answer_llm is not None else self.llm


@dataclass
class Prediction:
    """One answer plus what it cost. ``retrieved`` are memory ids or dialogue ids."""

    text: str
    valid: bool = True
    raw: str = ""
    retrieved: list[Any] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)
    shown: list[str] | None = None  # what the Answer Agent was shown ("date: text"); None: not a memory list
    ranked: list[str] | None = None  # the top-k retrieved, best first ("date: text"); None: no retrieval
    ranked_sources: list[str | None] | None = None  # dialogue ids of ``ranked`` (evidence recall@k)
    shown_sources: list[str | None] | None = None  # dialogue ids of what was shown
    search_ms: float | None = None
    answer_ms: float | None = None
    context_tokens: int | None = None


@dataclass
class IngestStats:
    """What building one conversation's memory did (saved as the ingest marker)."""

    sample_id: str
    turns: int = 0
    facts: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # turns skipped per stage (invalid model output)
    invalid_outputs: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IngestStats:
        return cls(**d)


class Method(Protocol):
    name: ClassVar[str]
    uses_retrieval: ClassVar[bool]  # declared: whether --retrieval/top_k change its answers

    def ingest(self, conversation: Conversation, store_dir: Path, *, progress: Progress | None = None) -> IngestStats: ...
    def load(self, conversation: Conversation, store_dir: Path) -> None: ...
    def answer_many(self, questions: Sequence[str]) -> list[Prediction]: ...
    def answer(self, question: str) -> Prediction: ...
    def close(self) -> None: ...


class _Base:
    """``answer`` for one question, on top of each method's batched ``answer_many``."""

    def answer_many(self, questions: Sequence[str]) -> list[Prediction]:  # pragma: no cover - overridden
        raise NotImplementedError

    def answer(self, question: str) -> Prediction:
        return self.answer_many([question])[0]


# ------------------------------------------------------------------ helpers


def store_turns(store: Any, session: Session, user_id: str) -> int:
    """Store a session's raw turns as ``rag`` keeps them (``"speaker: text"``, session time, source turn)."""
    turns = [t for t in session.turns if t.text.strip()]
    if turns:
        store.add_many([format_turn(t.speaker, t.text, t.blip_caption) for t in turns], user_id,
                       metadatas=[{"speaker": t.speaker, "source": t.dia_id} for t in turns],
                       timestamps=[session.timestamp] * len(turns), actor="agent", source="rag")
    return len(turns)


def count_tokens(llm: Any, messages: list[dict[str, str]]) -> int:
    """Prompt tokens with the model's tokenizer when it counts tokens, else ~4 characters a token."""
    return prompt_tokens(llm, messages)


def context_window(llm: Any, default: int = 8192) -> int:
    """The model's context length in tokens when it states one (``TokenCounting``), else ``default``."""
    n = llm.context_window if isinstance(llm, TokenCounting) else None
    return n if n is not None else default


def _ask_many(llm: Any, prompts: list[tuple[list[dict[str, str]], int]]) -> tuple[list[tuple[str, str, bool]], float]:
    """One batched Answer Agent call over ``(messages, n_shown)`` pairs.

    Returns ``(answer, raw, valid)`` per prompt, parsed by the pipeline's own
    rule, and the call's time in ms divided by the batch size (amortised: a
    batch is what makes a CPU fast enough).
    """
    start = time.perf_counter()
    raws = llm.generate([m for m, _ in prompts], max_new_tokens=ANSWER_MAX_NEW_TOKENS, temperature=0.0)
    ms = (time.perf_counter() - start) * 1000 / max(1, len(prompts))
    out = []
    for raw, (_, n_shown) in zip(raws, prompts):
        text, _, valid = parse_answer(raw, n_shown)
        out.append((text, raw, valid))
    return out, ms


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000


def _turn_dicts(session: Session) -> list[dict[str, Any]]:
    return [
        {"speaker": t.speaker, "text": t.text, "dia_id": t.dia_id, "blip_caption": t.blip_caption}
        for t in session.turns
        if t.text.strip()  # the pipeline refuses empty turns; there is nothing in them to remember
    ]


def _count_result(stats: IngestStats, result: Any) -> None:
    """Fold one ``AddResult`` (or an add-all result) into ``stats``."""
    counts = result.counts()
    ops = Counter(stats.ops)
    for key in ("add", "update", "delete", "noop"):
        ops[key.upper()] += counts.get(key, 0)
    stats.ops = dict(ops)
    skipped = Counter(stats.skipped)
    for key, value in counts.items():
        if key.startswith("skipped_"):
            skipped[key.removeprefix("skipped_")] += value
    stats.skipped = dict(skipped)
    stats.invalid_outputs = sum(stats.skipped.values())
    stats.facts += counts.get("facts", 0)


# ------------------------------------------------------------------ methods


class MemoryR1Method(_Base):
    """The full pipeline through :class:`memory_agent.memory.Memory`."""

    name: ClassVar[str] = "memory-r1"
    strategy: ClassVar[str] = "memory"
    uses_retrieval: ClassVar[bool] = True  # answers from a search: --retrieval and top_k apply

    def __init__(self, config: MethodConfig):
        self.config = config
        self.mem: Any = None
        self.user_id = ""

    def _open(self, store_dir: Path) -> Any:
        c = self.config
        return Memory.open(store_dir, llm=c.llm, embedder=c.embedder, manager_llm=c.manager_llm,
                           answer_llm=c.answer_llm, answer_k=c.top_k, retrieval=c.retrieval)

    def _add(self, session: Session) -> Any:
        return self.mem.add(_turn_dicts(session), user_id=self.user_id, timestamp=session.timestamp)

    def ingest(self, conversation: Conversation, store_dir: Path, *, progress: Progress | None = None) -> IngestStats:
        # One call per session, in order, as the conversation happened: the Memory
        # Manager sees everything earlier sessions stored. (``Memory.add_sessions``,
        # which `bench ingest` uses, is faster but decides up to ``wave_size`` turns
        # against one snapshot; on a fresh store its whole first wave is ADDed
        # without a model call. On conv-41 that path kept 134 memories, this one 39.)
        self.load(conversation, store_dir)
        stats = IngestStats(conversation.sample_id)
        start = time.perf_counter()
        for session in conversation.sessions:
            _count_result(stats, self._add(session))
            stats.turns += len(session.turns)
            if progress:
                progress(len(session.turns))
        stats.seconds = round(time.perf_counter() - start, 3)
        return stats

    def load(self, conversation: Conversation, store_dir: Path) -> None:
        self.close()
        self.mem, self.user_id = self._open(store_dir), conversation.sample_id

    def _answers(self, questions: Sequence[str]) -> tuple[list[Any], list[float]]:
        """The facade's answers and the ms per question (amortised over a batched call)."""
        if self.strategy == "memory":
            answers, ms = _timed(lambda: self.mem.answer_many(list(questions), self.user_id))
            return answers, [ms / max(1, len(questions))] * len(questions)
        timed = [_timed(lambda q=q: self.mem.answer(q, self.user_id, strategy=self.strategy)) for q in questions]
        return [a for a, _ in timed], [t for _, t in timed]  # the recursive retriever: one at a time

    def answer_many(self, questions: Sequence[str]) -> list[Prediction]:
        # search_ms is the Answer Agent's own retrieval of each question (timed inside it);
        # the answer time is end to end, retrieval included, as in Mem0's tables.
        answers, answer_ms = self._answers(questions)
        out = []
        for question, ans, a_ms in zip(questions, answers, answer_ms):
            shown = list(ans.retrieved or [])  # everything the model was shown
            memory = ans.strategy == "memory"
            out.append(Prediction(
                text=str(ans.text),
                valid=bool(ans.valid),
                raw=str(ans.raw),
                retrieved=[getattr(m, "id", None) for m in shown],
                memories=[str(m.text) for m in (ans.memories or [])],
                shown=[memory_view(m) for m in shown] if memory else None,
                ranked=[memory_view(m) for m in ans.ranked] if memory else None,
                ranked_sources=[memory_source(m) for m in ans.ranked] if memory else None,
                shown_sources=[memory_source(m) for m in (shown if memory else ans.memories or [])],
                search_ms=ans.search_ms,
                answer_ms=a_ms,
                # the Answer Agent's prompt rebuilt from what it was shown: the whole prompt, as for every method
                context_tokens=count_tokens(self.mem.answer_llm, shown_messages(question, shown)),
            ))
        return out

    def close(self) -> None:
        if self.mem is not None:
            self.mem.close()
            self.mem = None


class AddAllMethod(MemoryR1Method):
    """The pipeline's extraction, then every fact ADDed: no Memory Manager.

    ``Memory`` has no switch for this, so it is built here from the pipeline's
    own parts: :func:`memory_agent.extraction.extract_facts` with the memory's
    extraction model, then ``store.add_many`` with the metadata the Memory
    Manager writes (speaker, source turn), so the Answer Agent retrieves and
    prompts exactly as for ``memory-r1``.
    """

    name: ClassVar[str] = "add-all"

    def _add(self, session: Session) -> Any:
        from memory_agent.extraction import Turn as PipelineTurn
        from memory_agent.extraction import extract_facts

        turns = [PipelineTurn(d["speaker"], d["text"], d["dia_id"], d["blip_caption"], session.timestamp)
                 for d in _turn_dicts(session)]
        outcome = extract_facts(self.mem.extract_llm, turns)
        facts = [f for per_turn in outcome.facts for f in per_turn]
        if facts:
            self.mem.store.add_many(
                [f.text for f in facts], self.user_id, timestamps=[f.timestamp for f in facts],
                metadatas=[{"speaker": f.speaker, **({"source": f.dia_id} if f.dia_id else {})} for f in facts],
                actor="agent", source="add-all",
            )
        return _Counts({"turns": len(turns), "facts": len(facts), "add": len(facts),
                        "skipped_extract": len(outcome.invalid)})


@dataclass
class _Counts:
    values: dict[str, int]

    def counts(self) -> dict[str, int]:
        return self.values


class RLMMethod(MemoryR1Method):
    """The Memory-R1 memory, answered by the recursive retriever."""

    name: ClassVar[str] = "rlm"
    strategy: ClassVar[str] = "rlm"
    uses_retrieval: ClassVar[bool] = False  # the recursive retriever explores the whole bank itself

    def __init__(self, config: MethodConfig):
        super().__init__(config)
        try:
            from memory_agent.rlm import RecursiveRetriever  # noqa: F401  # what Memory.answer(strategy="rlm") uses
        except ImportError as exc:
            raise ConfigError(f"method 'rlm' needs the recursive retriever (memory_agent.rlm.RecursiveRetriever), "
                              f"which is not available: {exc}") from exc


class RagMethod(_Base):
    """Raw dialogue turns in a vector store, retrieved and answered by the Answer Agent.

    The same :class:`~memory_agent.answer.AnswerAgent` as Memory-R1 (same k, the
    same per-speaker split, token budget, prompt and parser): only the memory
    differs. Turns are stored as ``"speaker: text"`` with the session time as
    the record timestamp, which the Answer Agent prints before each memory.
    """

    name: ClassVar[str] = "rag"
    uses_retrieval: ClassVar[bool] = True

    def __init__(self, config: MethodConfig):
        self.config = config
        self.store: Any = None
        self.agent: AnswerAgent | None = None
        self.user_id = ""
        self.speakers: list[str] = []

    def _open(self, conversation: Conversation, store_dir: Path) -> None:
        from memory_store import MemoryStore

        self.close()
        self.store = MemoryStore(store_dir, embedder=self.config.embedder)
        self.agent = AnswerAgent(self.config.answerer, self.store, k=self.config.top_k,
                                 retrieval=self.config.retrieval)
        self.user_id = conversation.sample_id
        self.speakers = [conversation.speaker_a, conversation.speaker_b]

    def ingest(self, conversation: Conversation, store_dir: Path, *, progress: Progress | None = None) -> IngestStats:
        self._open(conversation, store_dir)
        stats = IngestStats(conversation.sample_id)
        start = time.perf_counter()
        for session in conversation.sessions:
            added = store_turns(self.store, session, self.user_id)
            stats.turns += len(session.turns)
            stats.ops["ADD"] = stats.ops.get("ADD", 0) + added
            if progress:
                progress(len(session.turns))
        stats.seconds = round(time.perf_counter() - start, 3)
        return stats

    def load(self, conversation: Conversation, store_dir: Path) -> None:
        self._open(conversation, store_dir)

    def answer_many(self, questions: Sequence[str]) -> list[Prediction]:
        prepared = self.agent.prepare(questions, self.user_id, self.speakers)  # the Answer Agent's own prompts
        answers, gen_ms = _ask_many(self.config.answerer, [(p.messages, len(p.shown)) for p in prepared])
        return [
            Prediction(text=text, valid=valid, raw=raw, retrieved=[memory_source(h) for h in p.shown],
                       memories=[h.text for h in p.shown], shown=[memory_view(h) for h in p.shown],
                       ranked=[memory_view(h) for h in p.ranked], ranked_sources=[memory_source(h) for h in p.ranked],
                       shown_sources=[memory_source(h) for h in p.shown], search_ms=p.search_ms,
                       answer_ms=p.search_ms + gen_ms, context_tokens=count_tokens(self.config.answerer, p.messages))
            for (text, raw, valid), p in zip(answers, prepared)
        ]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store, self.agent = None, None


class FullContextMethod(_Base):
    """The whole conversation in the prompt, oldest turns dropped to fit the window."""

    name: ClassVar[str] = "full-context"
    uses_retrieval: ClassVar[bool] = False

    def __init__(self, config: MethodConfig):
        self.config = config
        self.memories: list[tuple[str, str]] = []
        self.sources: list[str | None] = []  # dialogue id of each of ``memories``

    def ingest(self, conversation: Conversation, store_dir: Path, *, progress: Progress | None = None) -> IngestStats:
        self.load(conversation, store_dir)
        if progress:
            progress(conversation.n_turns)
        return IngestStats(conversation.sample_id, turns=conversation.n_turns)

    def load(self, conversation: Conversation, store_dir: Path) -> None:
        # (date, "speaker: text"), dated like the Answer Agent's memories
        turns = [(s, t) for s, t in conversation.turns() if t.text.strip()]
        self.memories = [(display_date(s.timestamp), format_turn(t.speaker, t.text, t.blip_caption)) for s, t in turns]
        self.sources = [t.dia_id for _, t in turns]

    def _fit(self, question: str) -> int:
        """How many of the most recent turns fit the window (binary search on the count)."""
        llm = self.config.answerer
        budget = (self.config.context_window or context_window(llm)) - ANSWER_MAX_NEW_TOKENS
        lo, hi = 0, len(self.memories)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(llm, answer_messages(question, self.memories[-mid:])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def answer_many(self, questions: Sequence[str]) -> list[Prediction]:
        prompts, fit_ms, windows = [], [], []
        for q in questions:
            keep, ms = _timed(lambda q=q: self._fit(q))
            kept = self.memories[len(self.memories) - keep:]
            prompts.append((answer_messages(q, kept), len(kept)))
            windows.append(self.sources[len(self.sources) - keep:] if keep else [])
            fit_ms.append(ms)  # the "search" of this method: fitting the window
        answers, gen_ms = _ask_many(self.config.answerer, prompts)
        # retrieved stays empty: "everything since turn N" would bloat predictions.jsonl
        return [
            Prediction(text=text, valid=valid, raw=raw, retrieved=[], memories=[], shown_sources=window,
                       search_ms=f_ms, answer_ms=f_ms + gen_ms,
                       context_tokens=count_tokens(self.config.answerer, messages))
            for (text, raw, valid), f_ms, window, (messages, _) in zip(answers, fit_ms, windows, prompts)
        ]

    def close(self) -> None:
        self.memories, self.sources = [], []


#: CLI name -> method class.
METHODS: dict[str, type] = {
    "memory-r1": MemoryR1Method,
    "add-all": AddAllMethod,
    "rag": RagMethod,
    "full-context": FullContextMethod,
    "rlm": RLMMethod,
}


def make_method(name: str, config: MethodConfig) -> Method:
    """Build the method called ``name``; unknown names raise :class:`ConfigError`."""
    cls = METHODS.get(name)
    if cls is None:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return cls(config)
