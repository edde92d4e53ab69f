"""LLM backends behind one small protocol.

``TransformersLLM`` runs local models (the embedded SmolLM2 by default),
``OpenAICompatibleLLM`` talks to any ``/v1/chat/completions`` server,
``ScriptedLLM`` is the test double, and ``resolve_llm`` turns a spec string
(``default``, a folder, a ``.gguf`` file, ``openai:MODEL@URL``) into one.
Backends import torch/httpx lazily so ``import memory_agent.llms`` is cheap.
"""

from __future__ import annotations

from memory_agent.llms.base import (
    LLM,
    TokenCounting,
    Usage,
    UsageReporting,
    approx_tokens,
    prompt_tokens,
    text_tokens,
    truncate_at_stop,
)
from memory_agent.llms.scripted import ScriptedLLM, ScriptExhausted

__all__ = [
    "LLM",
    "Usage",
    "TokenCounting",
    "UsageReporting",
    "approx_tokens",
    "prompt_tokens",
    "text_tokens",
    "truncate_at_stop",
    "ScriptedLLM",
    "ScriptExhausted",
    "TransformersLLM",
    "OpenAICompatibleLLM",
    "resolve_llm",
    "BACKENDS",
    "clear_cache",
]


def __getattr__(name: str):
    # The heavy backends are imported on first use only.
    if name == "TransformersLLM":
        from memory_agent.llms.transformers_backend import TransformersLLM

        return TransformersLLM
    if name == "OpenAICompatibleLLM":
        from memory_agent.llms.openai_backend import OpenAICompatibleLLM

        return OpenAICompatibleLLM
    if name in ("resolve_llm", "BACKENDS", "clear_cache"):
        from memory_agent.llms import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'memory_agent.llms' has no attribute {name!r}")
