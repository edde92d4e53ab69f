"""Every prompt the pipeline sends, in one place.

The embedded model has 135M parameters and a 2048-token window, so prompts
are short, carry one worked example as a real user/assistant exchange (small
models copy formats far better than they follow instructions), and ask for
line formats rather than JSON. Larger models follow the same prompts fine.
Date arithmetic is *not* asked of the model: extraction keeps "yesterday" as
written and :mod:`memory_agent.extraction` resolves it in code.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "Messages",
    "EXTRACT_SYSTEM",
    "EXTRACT_EXAMPLE",
    "MANAGER_SYSTEM",
    "MANAGER_EXAMPLE",
    "ANSWER_SYSTEM",
    "ANSWER_MARKER",
    "extraction_messages",
    "manager_messages",
    "answer_messages",
    "format_turn",
]

Messages = list[dict[str, str]]

EXTRACT_SYSTEM = (
    "List the personal facts in the message, one per line starting with '- '. "
    "Name the speaker in each fact. Keep dates as written. "
    "Write NONE if there is no fact."
)
# (user message, assistant reply) pairs shown before the real turn.
EXTRACT_EXAMPLE: list[tuple[str, str]] = [
    (
        "Priya: Just got back from a road trip with my kids yesterday! I love driving.",
        "- Priya went on a road trip with her kids yesterday\n- Priya loves driving",
    ),
    ("Priya: Haha, thanks! How are you?", "NONE"),
]

MANAGER_SYSTEM = (
    "You update a memory list with new facts. For each fact write one line: "
    "ADD: <fact> if it is new; UPDATE <id>: <merged fact> if it changes memory <id>; "
    "DELETE <id> if it makes memory <id> false; NOOP if it is already known."
)
# Two single-operation examples (one ADD, one UPDATE): with one example holding
# both, the 135M model copied its shape and emitted UPDATE+ADD for every fact.
# The shared prefix is KV-cached by the backend, so examples cost little.
# ADD comes last on purpose: the model leans towards the last example's shape,
# and a wrong ADD (a duplicate) is far less harmful than a wrong UPDATE.
MANAGER_EXAMPLE: list[tuple[str, str]] = [
    (
        "Memories:\n0. Bob works as a chef\n1. Bob likes jazz\nNew facts:\n- Bob now works as a pilot",
        "UPDATE 0: Bob works as a pilot",
    ),
    (
        "Memories:\n0. Alice lives in Paris\n1. Alice likes tea\nNew facts:\n- Alice has a dog named Rex",
        "ADD: Alice has a dog named Rex",
    ),
]

ANSWER_MARKER = "**Answer:**"
ANSWER_SYSTEM = (
    "Answer the question from the memories. First copy the memory lines that "
    f"answer it after 'Relevant:', then write {ANSWER_MARKER} and a short answer of a few words."
)
# The distilled memories are quoted with their text, not as bare numbers: with
# numbers only, the 135M model echoed "[3]" as its answer. Two examples of
# different answer types keep it from copying one example's answer.
ANSWER_EXAMPLE: list[tuple[str, str]] = [
    (
        "Memories:\n[0] 1 May 2023: Bob adopted a cat named Tom\n[1] 2 June 2023: Bob moved to Rome\n"
        "Question: Where does Bob live?",
        f"Relevant: [1] 2 June 2023: Bob moved to Rome\n{ANSWER_MARKER} Rome",
    ),
    (
        "Memories:\n[0] 10 March 2022: Ann ran a marathon\n[1] 2 April 2022: Ann likes tea\n"
        "Question: When did Ann run a marathon?",
        f"Relevant: [0] 10 March 2022: Ann ran a marathon\n{ANSWER_MARKER} 10 March 2022",
    ),
]


def _shots(system: str, examples: Sequence[tuple[str, str]], final: str) -> Messages:
    messages = [{"role": "system", "content": system}]
    for user, assistant in examples:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    messages.append({"role": "user", "content": final})
    return messages


def format_turn(speaker: str, text: str, caption: str | None = None) -> str:
    """One dialogue turn as the extractor sees it (an image becomes its caption)."""
    line = f"{speaker}: {text.strip()}"
    if caption:
        line += f" [shares a photo of {caption.strip()}]"
    return line


def extraction_messages(speaker: str, text: str, caption: str | None = None) -> Messages:
    return _shots(EXTRACT_SYSTEM, EXTRACT_EXAMPLE, format_turn(speaker, text, caption))


def manager_messages(facts: Sequence[str], shown: Sequence[str]) -> Messages:
    """``shown`` are the retrieved memories' texts, numbered 0..n-1 in this order."""
    memories = "\n".join(f"{i}. {t}" for i, t in enumerate(shown)) or "(none)"
    new = "\n".join(f"- {f}" for f in facts)
    return _shots(MANAGER_SYSTEM, MANAGER_EXAMPLE, f"Memories:\n{memories}\nNew facts:\n{new}")


def answer_messages(question: str, memories: Sequence[tuple[str, str]]) -> Messages:
    """``memories``: (timestamp, text) pairs, already in display order; numbered 0..n-1."""
    lines = "\n".join(f"[{i}] {ts}: {text}" for i, (ts, text) in enumerate(memories)) or "(no memories)"
    return _shots(ANSWER_SYSTEM, ANSWER_EXAMPLE, f"Memories:\n{lines}\nQuestion: {question.strip()}")
