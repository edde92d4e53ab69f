"""Prompts of the recursive retriever: the root's REPL instructions and the sub-call template.

Why one module: the size check of a sub-call (``RLMLimits.max_subcall_chars``)
must be made on the exact text the sub-model will see, so the template lives
next to the function that measures it. Layout for backends with prefix
caching: the fixed system text comes first in every sub-call, and the root
conversation is append-only (older turns are dropped from the *middle* only
when it outgrows the root's window), so consecutive calls share a prefix.
"""

from __future__ import annotations

__all__ = [
    "ROOT_SYSTEM",
    "SUB_SYSTEM",
    "BEST_EFFORT",
    "describe_context",
    "root_messages",
    "sub_messages",
    "messages_chars",
    "template_chars",
    "format_cell_feedback",
]

ROOT_SYSTEM = """You answer a question about a long context that you cannot read directly.
The context is loaded in a Python REPL. Write Python code in ```repl blocks; you will see its printed output.
Available in the REPL:
- context: the data ({kind}); context_text: the same as one string (memories as "[#id time] text" lines)
- grep(pattern, max_hits=50) -> matching lines; peek(n=2000, start=0) -> part of context_text
- chunks(size) -> list of strings; llm(prompt, context_slice=None) -> a sub-model's answer about the slice
- llm_batch([(prompt, slice), ...]) -> answers in order (many sub-calls at once, much faster)
- map_reduce(question, chunk_chars=None) -> asks every chunk, combines the answers
- program(question) -> grep + verify + combine in one call
Each llm() slice must be under {max_chars} characters. Print only short things.
When you know the answer, write FINAL(your answer) or, in code, FINAL_VAR("variable_name")."""

SUB_SYSTEM = "Answer using only the text you are given. Be brief."

BEST_EFFORT = ("You have no steps left. Based on everything above, give your best final answer now, "
               "as FINAL(answer).")


def describe_context(context, flat: str, preview_chars: int = 300) -> str:
    """Type, size and the first few hundred characters: all the root ever sees of the context."""
    if isinstance(context, str):
        kind = f"a str of {len(context):,} characters"
    elif context and all(isinstance(c, dict) for c in context):
        kind = f"a list of {len(context):,} memory records (dicts with id, time, text); {len(flat):,} characters as text"
    else:
        kind = f"a list of {len(context):,} strings; {len(flat):,} characters as text"
    preview = flat[:preview_chars]
    more = "..." if len(flat) > preview_chars else ""
    return f"context is {kind}. It starts with:\n{preview}{more}"


def _kind(context) -> str:
    if isinstance(context, str):
        return "a str"
    if context and all(isinstance(c, dict) for c in context):
        return "a list of memory dicts with id, time, text"
    return "a list of str"


def root_messages(query: str, context, flat: str, max_chars: int) -> list[dict[str, str]]:
    system = ROOT_SYSTEM.format(kind=_kind(context), max_chars=max_chars)
    user = f"{describe_context(context, flat)}\n\nQuestion: {query}\nStart by writing a ```repl block."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def sub_messages(prompt: str, context_slice: str | None) -> list[dict[str, str]]:
    """A plain sub-call: system text, then the task, then the slice.

    The task goes *before* the slice so that the conversations of one
    ``llm_batch`` (same question, different slices) share a long token prefix,
    which a batching backend encodes once (TransformersLLM reuses its KV cache).
    """
    if not context_slice:
        user = prompt
    elif "{context}" in prompt:  # the caller chose where the slice goes (no str.format: braces are data)
        user = prompt.replace("{context}", context_slice, 1)
    else:
        user = f"{prompt}\n\nText:\n{context_slice}"
    return [{"role": "system", "content": SUB_SYSTEM}, {"role": "user", "content": user}]


def messages_chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def template_chars() -> int:
    """Characters a sub-call adds around prompt + slice (told to the REPL for chunk sizing)."""
    return messages_chars(sub_messages("", "x")) - 1


def format_cell_feedback(outputs: list[tuple[str, str, str | None]], max_chars: int) -> str:
    """The user turn after a reply with code: each cell's (truncated) output and error."""
    parts = []
    per_cell = max(200, max_chars // max(1, len(outputs)))
    for i, (_code, out, err) in enumerate(outputs, 1):
        text = out if not err else (out + ("\n" if out else "") + err)
        if len(text) > per_cell:
            text = text[: per_cell // 2] + f"\n... [{len(text) - per_cell:,} characters cut] ...\n" + text[-per_cell // 2:]
        parts.append(f"Output of block {i}:\n{text.strip() or '(no output)'}")
    return "\n\n".join(parts) + "\n\nContinue. Write FINAL(answer) when you know the answer."
