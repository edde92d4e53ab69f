"""Replaying a conversation through the real pipeline, cached on disk.

The Memory Manager's episodes must start from the bank the *current*
pipeline builds (extraction, then the manager in use), and the Answer
Agent's from the bank the trained manager builds. This module runs the
pipeline's own steps - :func:`memory_agent.extraction.extract_facts` in one
batched call, then :class:`memory_agent.manager.MemoryManager` - on a
throw-away :class:`memory_store.MemoryStore`, and records a
:class:`~training.replay.TurnView` at every wanted turn.

Fidelity vs. speed: the pipeline decides turns in batched "waves" against
one snapshot. Here a wave is cut right before every wanted turn, so that
turn is decided on the bank built from *all* earlier turns, and its view
(bank, facts, the 10 related memories from ``MemoryManager.retrieve``) is
exactly the manager's prompt. Between wanted turns the waves batch as usual.

Replays cost many model calls on a CPU, so results are cached as JSON per
(conversation content, turn limit, wanted turns, extraction model, manager
model, embedder); a model folder is fingerprinted by its weight files'
sizes and times, so retraining a checkpoint invalidates its cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data.schema import Conversation
from training.bank import BankRecord, as_record
from training.replay import TurnView

__all__ = ["PipelineReplay", "model_fingerprint", "default_cache_dir", "CACHE_VERSION"]

log = logging.getLogger(__name__)

#: Bump when the replay logic changes, so stale caches are not reused.
CACHE_VERSION = 1
_USER = "replay"


def default_cache_dir() -> Path:
    from memory_agent.embedded import cache_dir

    return cache_dir() / "training" / "replay"


def model_fingerprint(spec: Any) -> str:
    """A string that changes when the model behind ``spec`` changes."""
    if not isinstance(spec, (str, Path)):
        return f"object:{type(spec).__name__}"
    path = Path(str(spec)).expanduser()
    if not path.is_dir():
        return str(spec)
    parts = [str(path.resolve())]
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".json") and f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)


class PipelineReplay:
    """:class:`~training.replay.Replay` through the product's extraction + Memory Manager."""

    name = "pipeline"

    def __init__(
        self,
        manager_llm: Any,
        embedder: Any,
        *,
        extract_llm: Any = None,
        model_key: Any = "default",
        extract_key: Any = None,
        embedder_key: str = "default",
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        top_k: int = 10,
        wave_size: int = 32,
    ):
        self.manager_llm = manager_llm
        self.extract_llm = extract_llm if extract_llm is not None else manager_llm
        self.embedder = embedder
        self.keys = {
            "manager": model_fingerprint(model_key),
            "extract": model_fingerprint(extract_key if extract_key is not None else model_key),
            "embedder": embedder_key,
            "top_k": top_k,
            "wave_size": wave_size,
            "version": CACHE_VERSION,
        }
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.use_cache = use_cache
        self.top_k = top_k
        self.wave_size = wave_size
        self.stats: dict[str, int] = {"replays": 0, "cache_hits": 0, "manager_skipped": 0, "extract_skipped": 0}

    # ------------------------------------------------------------------ cache
    def _key(self, conv: Conversation, max_turns: int | None, want: set[str] | None) -> str:
        blob = json.dumps(
            {
                "conv": hashlib.sha256(conv.model_dump_json().encode()).hexdigest(),
                "max_turns": max_turns,
                "want": sorted(want) if want is not None else None,
                **self.keys,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def _cached(self, conv: Conversation, max_turns: int | None, want: set[str] | None) -> dict[str, Any]:
        path = self.cache_dir / f"{conv.sample_id}-{self._key(conv, max_turns, want)}.json"
        if self.use_cache and path.is_file():
            self.stats["cache_hits"] += 1
            return json.loads(path.read_text())
        result = self._replay(conv, max_turns, want)
        if self.use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache
        return result

    # ------------------------------------------------------------------ Replay protocol
    def views(self, conv: Conversation, *, max_turns: int | None = None, want: set[str] | None = None) -> Iterator[TurnView]:
        for v in self._cached(conv, max_turns, want)["views"]:
            yield TurnView(
                dia_id=v["dia_id"],
                index=v["index"],
                timestamp=v["timestamp"],
                speaker=v["speaker"],
                text=v["text"],
                facts=tuple(v["facts"]),
                shown=tuple(as_record(r) for r in v["shown"]),
                bank=tuple(as_record(r) for r in v["bank"]),
            )

    def final_bank(self, conv: Conversation, *, max_turns: int | None = None) -> list[BankRecord]:
        return [as_record(r) for r in self._cached(conv, max_turns, set())["final"]]

    # ------------------------------------------------------------------ the replay
    def _replay(self, conv: Conversation, max_turns: int | None, want: set[str] | None) -> dict[str, Any]:
        from memory_agent.extraction import Turn, extract_facts
        from memory_agent.manager import MemoryManager, TurnFacts
        from memory_store import MemoryStore

        self.stats["replays"] += 1
        turns = []
        for i, (session, t) in enumerate(conv.turns()):
            if max_turns is not None and i >= max_turns:
                break
            turns.append(Turn(t.speaker, t.text, t.dia_id, t.blip_caption, session.timestamp))
        extraction = extract_facts(self.extract_llm, turns)
        self.stats["extract_skipped"] += len(extraction.invalid)
        views: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="memory-agent-replay-") as tmp:
            store = MemoryStore(Path(tmp) / "store", embedder=self.embedder)
            try:
                manager = MemoryManager(self.manager_llm, store, top_k=self.top_k, wave_size=self.wave_size)
                pending: list[Any] = []

                def flush() -> None:
                    if pending:
                        outcome = manager.manage(list(pending), _USER)
                        self.stats["manager_skipped"] += len(outcome.skipped)
                        pending.clear()

                for index, (turn, facts) in enumerate(zip(turns, extraction.facts, strict=True)):
                    if not facts:
                        continue
                    item = TurnFacts.from_facts(facts, turn.timestamp)
                    if want is not None and turn.dia_id in want:
                        flush()  # the wanted turn sees the bank of *all* earlier turns
                        shown = manager.retrieve([item], _USER)[0]
                        views.append(
                            {
                                "dia_id": turn.dia_id,
                                "index": index,
                                "timestamp": turn.timestamp,
                                "speaker": turn.speaker,
                                "text": turn.text,
                                "facts": list(item.facts),
                                "shown": [as_record(h).as_dict() for h in shown],
                                "bank": [as_record(r).as_dict() for r in store.list(_USER)],
                            }
                        )
                    pending.append(item)
                flush()
                final = [as_record(r).as_dict() for r in store.list(_USER)]
            finally:
                store.close()
        log.info("replayed %s (%d turns): %d views, %d memories", conv.sample_id, len(turns), len(views), len(final))
        return {"views": views, "final": final}
