"""The pipeline's numbers, defined once.

Memory shown to each agent, generation budgets and stop strings decide what
the agents see and write. The product, the GRPO rewards, training episodes,
validation and the evaluation harness all read them from here, so a change
reaches every one of them at once (a copy "for training" drifts).
"""

from __future__ import annotations

__all__ = [
    "MANAGER_TOP_K",
    "MANAGER_MAX_NEW_TOKENS",
    "MANAGER_STOP",
    "ANSWER_K",
    "ANSWER_RETRIEVAL",
    "ANSWER_MAX_PROMPT_TOKENS",
    "ANSWER_MAX_NEW_TOKENS",
    "WAVE_SIZE",
    "EMBEDDER_NAMES",
    "DEFAULT_MODEL_NAMES",
]

#: Related memories shown to the Memory Manager per turn.
MANAGER_TOP_K = 10
#: The manager's generation budget: a few operation lines.
MANAGER_MAX_NEW_TOKENS = 64
#: The manager's output ends at a blank line; text after it is never read.
MANAGER_STOP: tuple[str, ...] = ("\n\n",)
#: Memories retrieved for the Answer Agent (Memory-R1's 60; 30 per speaker with two speakers).
ANSWER_K = 60
#: How the Answer Agent and the ``rag`` method search: keyword and vector lists fused (memory_store.keyword).
ANSWER_RETRIEVAL = "hybrid"
#: The Answer Agent's prompt budget: the embedded model's 2,048-token window minus the reply.
ANSWER_MAX_PROMPT_TOKENS = 1900
#: The Answer Agent's generation budget (distilled memories, then the short answer).
ANSWER_MAX_NEW_TOKENS = 64
#: Turns the manager decides in one batched call against one snapshot of the store.
WAVE_SIZE = 32


# The names the two resolvers accept, listed here (stdlib only) so the CLI's
# choices, the training config and the product read one table.
#: Embedders (memory_agent.memory.resolve_embedder): ``default`` and its alias ``minilm``
#: (the shipped all-MiniLM-L6-v2), ``hashing`` (no model: tests and smoke runs).
EMBEDDER_NAMES: tuple[str, ...] = ("default", "minilm", "hashing")
#: Names of the embedded SmolLM2-135M-Instruct (memory_agent.llms.spec.resolve_llm, training's base model).
DEFAULT_MODEL_NAMES: tuple[str, ...] = ("default", "smollm2", "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
