"""memory-agent: long-lived memory for LLM assistants.

``from memory_agent import Memory`` is the whole product for most users. Names
are imported lazily so that ``import memory_agent`` (and the CLI's ``--help``)
does not pay for torch or transformers until a model is actually used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Memory",
    "AddResult",
    "Answer",
    "LLM",
    "ScriptedLLM",
    "TransformersLLM",
    "OpenAICompatibleLLM",
    "resolve_llm",
    "RecursiveRetriever",
    "RLMLimits",
]

_LAZY = {
    "Memory": "memory_agent.memory",
    "AddResult": "memory_agent.memory",
    "Answer": "memory_agent.answer",
    "LLM": "memory_agent.llms",
    "ScriptedLLM": "memory_agent.llms",
    "TransformersLLM": "memory_agent.llms",
    "OpenAICompatibleLLM": "memory_agent.llms",
    "resolve_llm": "memory_agent.llms",
    "RecursiveRetriever": "memory_agent.rlm",
    "RLMLimits": "memory_agent.rlm",
}

if TYPE_CHECKING:  # pragma: no cover
    from memory_agent.answer import Answer
    from memory_agent.llms import LLM, OpenAICompatibleLLM, ScriptedLLM, TransformersLLM, resolve_llm
    from memory_agent.memory import AddResult, Memory
    from memory_agent.rlm import RecursiveRetriever, RLMLimits


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memory_agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
