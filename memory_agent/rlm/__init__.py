"""Recursive retrieval (RLM-style): the model explores a long context through a sandboxed REPL.

``RecursiveRetriever(llm).run(question, context)`` -> :class:`RLMResult`. The
context (raw history or a memory bank) never enters the root prompt; it is a
variable in a separate, OS-confined Python process (see ``sandbox.py`` and
``worker.py``), and sub-model calls are RPCs budgeted by the host. See
``docs/rlm.md``.
"""

from __future__ import annotations

from memory_agent.rlm.retriever import RecursiveRetriever, RLMLimits, RLMResult

__all__ = ["RecursiveRetriever", "RLMLimits", "RLMResult"]
