"""Step 2: the Memory Manager turns each turn's facts into store operations.

For every turn with facts we retrieve the user's ``top_k`` (10) most related
memories, show them numbered 0..n-1 (small per-call ids; database ids and
other users' rows are never visible to the model), ask for ADD/UPDATE/DELETE/
NOOP, map the small ids back to this user's database ids and apply the turn's
operations with ONE ``store.apply`` call (one transaction, ``source=<dia_id>``
so ``history`` shows which turn did what). A turn whose output is invalid is
skipped entirely and counted; nothing of it is applied.

Speed (batching "waves"). Calling the model turn by turn is ~10x slower on a
CPU than batching, so up to ``wave_size`` pending turns are decided in one
``generate`` call, all against the same snapshot of the store, then applied in
dialogue order. A decision is applied unless it UPDATEs or DELETEs a memory
that an earlier turn of the same wave already changed: then its view of that
memory is stale and the turn is asked again in the next wave, on fresh data
(the first turn of a wave always applies, so this terminates). Decisions that
cannot conflict - different memories, or only ADD/NOOP - batch freely.
(An earlier version re-asked every turn that was merely *shown* a changed
memory; with top-10 retrieval over a small store that re-asked nearly the
whole wave after each UPDATE and made ingestion quadratic.)

Validation beyond parsing (:func:`memory_agent.operations.check_grounded`):
written text must come from the turn's facts or the replaced memory, must not
be a generation loop, and an UPDATE must share a content word with the memory
it replaces; otherwise the turn is rejected as invalid output - small models
otherwise overwrite good facts with invented text.

The steps are public so that training scores the product's own behaviour:
:meth:`MemoryManager.retrieve` (what is shown), :meth:`MemoryManager.messages`
(the prompt), :meth:`MemoryManager.decide` (stop rule, parser, grounding) and
:meth:`MemoryManager.apply_decision` (small ids -> database ids, one
``store.apply``). The GRPO reward calls them on an
:class:`~memory_store.InMemoryStore` fork; ingestion calls them on the real
store. Any :class:`~memory_store.MemoryBackend` works.

Documented shortcut: when a turn retrieves nothing (the user has no memories
yet), its facts are ADDed without a model call - there is nothing to update,
delete or duplicate. Turns without facts never reach the manager.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memory_agent.defaults import MANAGER_MAX_NEW_TOKENS, MANAGER_STOP, MANAGER_TOP_K, WAVE_SIZE
from memory_agent.errors import ConfigError, InvalidInput, InvalidModelOutput, MemoryNotFound, StoreError
from memory_agent.extraction import Fact
from memory_agent.llms.base import LLM, truncate_at_stop
from memory_agent.operations import AddOp, DeleteOp, NoopOp, UpdateOp, check_grounded, parse_operations
from memory_agent.prompts import Messages, manager_messages

__all__ = ["TurnFacts", "AppliedChange", "Skipped", "ManageOutcome", "MemoryManager", "Decision"]


@dataclass(frozen=True)
class TurnFacts:
    """The facts of one dialogue turn, ready for the manager."""

    dia_id: str | None
    speaker: str
    timestamp: str | None  # ISO-8601 session date
    facts: tuple[str, ...]
    receipt: str | None = None  # recorded with the turn's changes: a resumed ingestion skips it

    @classmethod
    def from_facts(cls, facts: Sequence[Fact], timestamp: str | None, receipt: str | None = None) -> "TurnFacts":
        first = facts[0]
        return cls(first.dia_id, first.speaker, timestamp, tuple(f.text for f in facts), receipt)


@dataclass(frozen=True)
class AppliedChange:
    op: str  # ADD / UPDATE / DELETE
    id: int
    old_text: str | None
    new_text: str | None
    source: str | None
    direct: bool = False  # ADDed without a model call (the user had no memories)


@dataclass(frozen=True)
class Skipped:
    stage: str  # "extract" | "manage" | "apply"
    source: str | None
    reason: str
    raw: str | None = None


@dataclass
class ManageOutcome:
    applied: list[AppliedChange] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    noops: int = 0
    model_calls: int = 0  # generate() calls
    decisions: int = 0  # conversations sent to the model
    direct_turns: int = 0
    waves: int = 0
    redecided: int = 0  # turns re-asked because an earlier turn of the wave changed what they saw


Decision = list[AddOp | UpdateOp | DeleteOp | NoopOp]


class MemoryManager:
    """Decides and applies memory operations, turn by turn, in batched waves."""

    def __init__(
        self,
        llm: LLM | None,
        store: Any,
        *,
        top_k: int = MANAGER_TOP_K,
        wave_size: int = WAVE_SIZE,
        max_new_tokens: int = MANAGER_MAX_NEW_TOKENS,
        actor: str = "agent",
    ):
        if top_k < 1 or wave_size < 1:
            raise ValueError("top_k and wave_size must be >= 1")
        self.llm = llm  # None: scoring only (retrieve/messages/decide/apply_decision), no manage()
        self.store = store
        self.top_k = top_k
        self.wave_size = wave_size
        self.max_new_tokens = max_new_tokens
        self.actor = actor

    # ------------------------------------------------------------ the steps
    def retrieve(self, items: Sequence[TurnFacts], user_id: str) -> list[list[Any]]:
        """Top-k related memories per turn: each fact searched, best score kept per memory."""
        texts = [f for it in items for f in it.facts]
        if not texts:
            return [[] for _ in items]
        if self.store.embedder is None:
            raise StoreError("the Memory Manager searches by vector: open the store with an embedder")
        vecs = self.store.embedder.embed(texts)  # one batched embed call for the whole wave
        out: list[list[Any]] = []
        pos = 0
        for it in items:
            best: dict[int, Any] = {}
            for _fact in it.facts:
                for h in self.store.search_vector(vecs[pos], user_id=user_id, k=self.top_k):
                    if h.id not in best or h.score > best[h.id].score:
                        best[h.id] = h
                pos += 1
            out.append(sorted(best.values(), key=lambda h: -h.score)[: self.top_k])
        return out

    @staticmethod
    def messages(item: TurnFacts, hits: Sequence[Any]) -> Messages:
        """The manager's prompt for one turn: its facts and the shown memories numbered 0..n-1."""
        return manager_messages(item.facts, [h.text for h in hits])

    @staticmethod
    def decide(item: TurnFacts, hits: Sequence[Any], raw: str) -> Decision:
        """Read a completion as the product does: cut at the stop string, parse, check grounding.

        Raises :class:`InvalidModelOutput` (with the raw text) for anything the
        product would skip; never returns a guessed NOOP for garbage.
        """
        text = truncate_at_stop(raw or "", list(MANAGER_STOP))
        ops = parse_operations(text, len(hits))
        check_grounded(ops, item.facts, [h.text for h in hits], text)
        return ops

    def apply_decision(self, item: TurnFacts, ops: Decision, hits: Sequence[Any], user_id: str) -> list[Any]:
        """Apply decided ops in one ``store.apply`` (small id ``i`` -> ``hits[i]``'s database id).

        Returns the store's ``AppliedOp`` list (empty for a NOOP decision);
        raises the store's ``MemoryNotFound``/``InvalidInput`` with nothing applied.
        """
        from memory_store import Add, Delete, Update

        metadata: dict[str, Any] = {"speaker": item.speaker}
        if item.dia_id:
            metadata["source"] = item.dia_id
        store_ops = []
        for op in ops:
            if isinstance(op, AddOp):
                store_ops.append(Add(text=op.text, metadata=metadata))
            elif isinstance(op, UpdateOp):
                store_ops.append(Update(id=hits[op.id].id, text=op.text))
            elif isinstance(op, DeleteOp):
                store_ops.append(Delete(id=hits[op.id].id))
            elif not isinstance(op, NoopOp):
                raise TypeError(f"not a memory operation: {op!r}")
        if not store_ops:
            return []
        return self.store.apply(store_ops, user_id=user_id, actor=self.actor, source=item.dia_id,
                                timestamp=item.timestamp, receipts=[item.receipt] if item.receipt else [])

    def ask(self, prompts: Sequence[tuple[TurnFacts, Sequence[Any]]]) -> list[str]:
        """The model's raw decisions for ``(turn, shown memories)`` pairs: one batched, greedy call
        with the product's budget and stop strings (what ingestion sends; validation reuses it)."""
        if self.llm is None:
            raise ConfigError("this MemoryManager has no model: it can score decisions, not make them")
        if not prompts:
            return []
        return self.llm.generate([self.messages(item, hits) for item, hits in prompts],
                                 max_new_tokens=self.max_new_tokens, temperature=0.0, stop=list(MANAGER_STOP))

    # ------------------------------------------------------------ main loop
    def manage(self, items: Sequence[TurnFacts], user_id: str) -> ManageOutcome:
        outcome = ManageOutcome()
        pending = [it for it in items if it.facts]
        while pending:
            wave, rest = pending[: self.wave_size], pending[self.wave_size :]
            outcome.waves += 1
            retry = self._run_wave(wave, user_id, outcome)
            pending = retry + rest
        return outcome

    def _run_wave(self, wave: list[TurnFacts], user_id: str, outcome: ManageOutcome) -> list[TurnFacts]:
        shown = self.retrieve(wave, user_id)
        asked = [i for i, s in enumerate(shown) if s]
        replies: dict[int, str] = {}
        if asked:
            replies = dict(zip(asked, self.ask([(wave[i], shown[i]) for i in asked])))
            outcome.model_calls += 1
            outcome.decisions += len(asked)
        changed: set[int] = set()  # db ids updated/deleted by earlier turns of this wave
        retry: list[TurnFacts] = []
        for i, item in enumerate(wave):
            hits = shown[i]
            if hits:
                raw = replies[i]
                try:
                    ops = self.decide(item, hits, raw)
                except InvalidModelOutput as exc:
                    outcome.skipped.append(Skipped("manage", item.dia_id, exc.args[0], raw))
                    continue
                targets = {hits[op.id].id for op in ops if isinstance(op, (UpdateOp, DeleteOp))}
                if targets & changed:
                    # It would edit a memory an earlier turn of this wave already changed:
                    # its view is stale, so ask again next wave with fresh memories.
                    retry.append(item)
                    outcome.redecided += 1
                    continue
            else:
                ops = [AddOp(text=f) for f in item.facts]
                outcome.direct_turns += 1
            changed |= self._apply(item, ops, hits, user_id, outcome, direct=not hits)
        return retry

    def _apply(self, item: TurnFacts, ops: Decision, hits: list, user_id: str, outcome: ManageOutcome, *,
               direct: bool) -> set[int]:
        try:
            applied = self.apply_decision(item, ops, hits, user_id)
        except (MemoryNotFound, InvalidInput) as exc:
            # The store validated and refused the whole batch; nothing was applied.
            outcome.skipped.append(Skipped("apply", item.dia_id, str(exc), None))
            return set()
        if not applied:
            outcome.noops += 1
            return set()
        touched: set[int] = set()
        for a in applied:
            if a.op == "NOOP" or a.id is None:
                continue
            outcome.applied.append(AppliedChange(a.op, a.id, a.old_text, a.new_text, item.dia_id, direct))
            if a.op in ("UPDATE", "DELETE"):
                touched.add(a.id)
        return touched
