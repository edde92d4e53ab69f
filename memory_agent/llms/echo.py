"""``echo``: a deterministic rule-following model for demos, service tests and benchmarks.

It reads the product's own prompts (``memory_agent.prompts``) and answers the
way a perfect copy-editor would: extraction returns the turn's text as its one
fact, the manager ADDs every new fact, the Answer Agent quotes the first
memory shown. No weights, microseconds per call, so ``memory-agent bench
serve`` measures the service and not a model. ``echo:0.05`` waits 50 ms per
``generate`` call, to stand for a model's latency (crash tests need a queue
that is still running when the process is killed). Like the hashing embedder
it is a real backend with a declared behaviour, not a stand-in for a trained model.
"""

from __future__ import annotations

import re
import time

from memory_agent.llms.base import Messages, Usage, truncate_at_stop
from memory_agent.prompts import ANSWER_MARKER, ANSWER_SYSTEM, EXTRACT_SYSTEM, MANAGER_SYSTEM

__all__ = ["EchoLLM"]

_SHOWN = re.compile(r"^\[0\] (.*)$", re.MULTILINE)


class EchoLLM:
    name = "echo"
    usage: Usage  # UsageReporting (calls and seconds); no tokenizer, so not TokenCounting

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.usage = Usage()

    def generate(self, batch: list[Messages], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 stop: list[str] | None = None) -> list[str]:
        self.usage.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return [truncate_at_stop(self._reply(messages), stop) for messages in batch]

    @staticmethod
    def _reply(messages: list[dict[str, str]]) -> str:
        system, last = messages[0]["content"], messages[-1]["content"]
        if system == EXTRACT_SYSTEM:
            text = last.split(": ", 1)[1] if ": " in last else last
            return "- " + text.split(" [shares a photo of ")[0].strip()
        if system == MANAGER_SYSTEM:
            facts = last.split("New facts:\n", 1)[-1].splitlines()
            return "\n".join("ADD: " + f[2:] for f in facts if f.startswith("- "))
        if system == ANSWER_SYSTEM:
            m = _SHOWN.search(last)
            if m is None:
                return f"Relevant: none\n{ANSWER_MARKER} unknown"
            return f"Relevant: [0] {m.group(1)}\n{ANSWER_MARKER} {m.group(1).split(': ', 1)[-1]}"
        return ""
