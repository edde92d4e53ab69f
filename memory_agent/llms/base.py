"""The LLM protocol every backend implements, and the token-usage record.

One method, batched: the pipeline's speed on a CPU comes from generating many
conversations in one call, so the protocol takes a batch of chat
conversations (lists of ``{"role", "content"}`` dicts) and returns one string
per conversation, in order. Backends are passed through constructors, never
looked up globally, so tests use :class:`~memory_agent.llms.ScriptedLLM`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

__all__ = ["LLM", "Messages", "Usage", "truncate_at_stop"]

Messages = list[dict[str, str]]


@runtime_checkable
class LLM(Protocol):
    def generate(
        self,
        batch: list[list[dict[str, str]]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> list[str]: ...


@dataclass
class Usage:
    """Token and time counters a backend accumulates (benchmarks report tokens/s)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __getitem__(self, key: str):  # dict-style access: llm.usage["completion_tokens"]
        return getattr(self, key)


def truncate_at_stop(text: str, stop: list[str] | None) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string (the stop string is dropped)."""
    if not stop:
        return text
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
