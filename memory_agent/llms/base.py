"""The LLM protocol every backend implements, and the token-usage record.

``generate`` is the one method every backend has. What some backends can also
do is declared, not probed: :class:`TokenCounting` (a backend that knows its
tokenizer counts prompt and text tokens and states its context window) and
:class:`UsageReporting` (a ``usage`` record of tokens and time). Code asks
``isinstance(llm, TokenCounting)``; a backend without a tokenizer is budgeted
with :func:`approx_tokens`, the one characters-per-token estimate.

One method, batched: the pipeline's speed on a CPU comes from generating many
conversations in one call, so the protocol takes a batch of chat
conversations (lists of ``{"role", "content"}`` dicts) and returns one string
per conversation, in order. Backends are passed through constructors, never
looked up globally, so tests use :class:`~memory_agent.llms.ScriptedLLM`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

__all__ = ["LLM", "Messages", "Usage", "TokenCounting", "UsageReporting", "approx_tokens", "text_tokens",
           "prompt_tokens", "truncate_at_stop"]

Messages = list[dict[str, str]]


@runtime_checkable
class LLM(Protocol):
    def generate(self, batch: list[Messages], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None) -> list[str]: ...


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


@runtime_checkable
class TokenCounting(Protocol):
    """A backend that counts tokens with its own tokenizer (prompts are budgeted with these counts)."""

    #: The model's context length in tokens, None when the backend cannot tell.
    context_window: int | None

    def count_tokens(self, messages: Messages) -> int:
        """Prompt length in tokens, as the model will see ``messages`` (chat template included)."""
        ...

    def count_text_tokens(self, text: str) -> int:
        """Tokens of plain ``text`` (no special tokens)."""
        ...


@runtime_checkable
class UsageReporting(Protocol):
    """A backend that accumulates its token and time counters in ``usage``."""

    usage: Usage


def approx_tokens(text: str) -> int:
    """Tokens of ``text`` for a backend that does not count them: ~4 characters a token (English), at least 1."""
    return len(text) // 4 + 1


def text_tokens(llm: object, text: str) -> int:
    """Tokens of plain ``text``: the backend's count (:class:`TokenCounting`), else :func:`approx_tokens`."""
    if isinstance(llm, TokenCounting):
        return llm.count_text_tokens(text)
    return approx_tokens(text)


def prompt_tokens(llm: object, messages: Messages) -> int:
    """Prompt tokens of ``messages``: the backend's count, else :func:`approx_tokens` of their contents."""
    if isinstance(llm, TokenCounting):
        return int(llm.count_tokens(messages))
    return approx_tokens("".join(m["content"] for m in messages))


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
