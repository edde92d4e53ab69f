"""A scripted LLM double: replies from a queue, every prompt recorded.

Tests assert on what the model *sees* (``.prompts``) and drive the pipeline
with exact replies, including malformed ones. A reply may be a callable taking
the conversation, for replies that depend on the prompt.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from memory_agent.errors import BackendError
from memory_agent.llms.base import Messages, Usage, truncate_at_stop

__all__ = ["ScriptedLLM", "ScriptExhausted"]

Reply = str | Callable[[list[dict[str, str]]], str]


class ScriptExhausted(BackendError):
    """The scripted LLM was asked for more replies than it was given."""


class ScriptedLLM:
    """Canned replies, in order (the test double): ``LLM`` and ``UsageReporting`` (calls only);
    no tokenizer, so not ``TokenCounting``."""

    usage: Usage

    def __init__(self, replies: Iterable[Reply] = (), default: Reply | None = None):
        self.replies: deque[Reply] = deque(replies)
        self.default = default
        self.prompts: list[list[dict[str, str]]] = []
        self.calls: list[dict] = []  # generate() kwargs per call, for batching assertions
        self.usage = Usage()

    def generate(self, batch: list[Messages], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None) -> list[str]:
        self.calls.append({"n": len(batch), "max_new_tokens": max_new_tokens, "temperature": temperature, "stop": stop})
        self.usage.calls += 1
        out = []
        for messages in batch:
            self.prompts.append(messages)
            if self.replies:
                reply = self.replies.popleft()
            elif self.default is not None:
                reply = self.default
            else:
                raise ScriptExhausted(
                    f"ScriptedLLM has no reply left for prompt #{len(self.prompts)} "
                    f"(last message: {messages[-1]['content'][:120]!r}); pass more replies or default="
                )
            text = reply(messages) if callable(reply) else reply
            out.append(truncate_at_stop(text, stop))
        return out
