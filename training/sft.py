"""Optional cold start: a small SFT on well-formed outputs before GRPO.

GRPO learns only from reward *differences* within a group. A 135M model
that almost never writes a parseable operation list (or the ``**Answer:**``
marker) gives groups of all-zero rewards, i.e. no signal. DeepSeek-R1's
recipe fixes this with a short supervised warm-up on well-formed outputs;
this module does that with TRL's ``SFTTrainer``:

* Memory Manager targets come from LoCoMo's ``observation`` annotations of
  the *training* conversations: the prompt shows the turn's annotated facts
  and the related memories, the target ADDs each new fact, NOOPs one that is
  already stored verbatim and UPDATEs a memory the fact extends.
* Answer Agent targets are ``Relevant: [i, ...]`` (memories sharing words
  with the gold answer) and ``**Answer:** <gold>``.

The warm-up trains a LoRA adapter, merges it and saves a plain model folder
(``<out>/cold_start``) that GRPO then starts from, so the final adapter's
base is a real folder. :func:`valid_rate` measures the share of parseable
outputs before and after; ``train_summary.json`` reports both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memory_agent.answer import display_date
from memory_agent.errors import InvalidModelOutput
from training import pipeline
from training.bank import BankRecord
from training.episodes import AnswerEpisode
from training.replay import TurnView

__all__ = [
    "manager_target",
    "manager_sft_rows",
    "answer_target",
    "answer_sft_rows",
    "is_valid_manager",
    "is_valid_answer",
    "valid_rate",
    "run_sft",
]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "a", "an", "and", "of", "to", "in", "on", "at", "is", "was", "her", "his", "she", "he", "for"}


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.casefold()) if w not in _STOP}


def manager_target(facts: Sequence[str], shown: Sequence[BankRecord]) -> str:
    """Well-formed manager output for ``facts`` given the ``shown`` memories (small ids = positions)."""
    from memory_agent.operations import AddOp, NoopOp, UpdateOp

    ops: list[Any] = []
    updated: set[int] = set()
    for fact in facts:
        key = fact.casefold().strip()
        same = [i for i, m in enumerate(shown) if m.text.casefold().strip() == key]
        if same:
            continue  # already known: nothing to do for this fact
        # The fact restates a shown memory and adds to it: UPDATE that memory.
        extends = [
            i
            for i, m in enumerate(shown)
            if i not in updated and m.text.casefold().strip() in key and len(m.text) >= 12
        ]
        if extends:
            updated.add(extends[0])
            ops.append(UpdateOp(id=extends[0], text=fact))
        else:
            ops.append(AddOp(text=fact))
    return pipeline.render_manager_ops(ops or [NoopOp()])


def manager_sft_rows(views: Sequence[TurnView]) -> list[dict[str, Any]]:
    """Prompt/completion rows from observation-replay views (facts = annotated observations)."""
    rows = []
    for view in views:
        if not view.facts:
            continue
        rows.append(
            {
                "prompt": pipeline.manager_messages(view.facts, view.shown),
                "completion": [{"role": "assistant", "content": manager_target(view.facts, view.shown)}],
                "n_shown": len(view.shown),
            }
        )
    return rows


def answer_target(answer: str, shown: Sequence[BankRecord], max_refs: int = 1, max_quote_chars: int = 100,
                  question: str = "") -> str:
    """The well-formed reply for ``shown`` (the memories in prompt order): the
    memory sharing most words with the gold answer, quoted as the prompt shows
    it (its date included, cut to ``max_quote_chars``), then the marker and the
    answer. Date words count, so "When did Jon lose his job?" (gold "19 January,
    2023") quotes a memory dated that day; ties go to the memory sharing most
    words with the question.

    One short quote by default: the pipeline gives the Answer Agent 64 new
    tokens, and a target that quotes three long memories would teach the model
    to run out of tokens before the marker."""
    gold, asked = _words(str(answer)), _words(question)
    scored = []
    for i, m in enumerate(shown):
        words = _words(f"{display_date(m)} {m.text}")
        scored.append((len(gold & words), len(asked & words), i))
    best = sorted(scored, key=lambda t: (-t[0], -t[1], t[2]))[:max_refs]
    refs = sorted(i for score, _, i in best if score > 0)
    quoted = "\n".join(_quote(i, shown[i], max_quote_chars) for i in refs) or "none"
    return f"Relevant: {quoted}\n{pipeline.ANSWER_MARKER} {answer}"


def _quote(i: int, record: BankRecord, max_chars: int) -> str:
    date = display_date(record)
    text = record.text if len(record.text) <= max_chars else record.text[: max_chars - 3].rstrip() + "..."
    return f"[{i}] {date}: {text}" if date else f"[{i}] {text}"


def answer_sft_rows(episodes: Sequence[AnswerEpisode], tokenizer: Any = None) -> list[dict[str, Any]]:
    rows = []
    for e in episodes:
        messages, shown = pipeline.answer_prompt(e.question, e.memories, tokenizer=tokenizer)
        rows.append({"prompt": messages, "completion": [{"role": "assistant", "content": answer_target(e.answer, shown, question=e.question)}]})
    return rows


def is_valid_manager(text: str, n_shown: int, facts: Sequence[str] | None = None,
                     shown: Sequence[Any] | None = None) -> bool:
    try:
        pipeline.parse_manager_ops(text, n_shown, facts, shown)
    except InvalidModelOutput:
        return False
    return True


def is_valid_answer(text: str) -> bool:
    return pipeline.parse_answer(text) is not None


def valid_rate(
    llm: Any,
    prompts: Sequence[list[dict[str, str]]],
    check: Callable[[int, str], bool],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
) -> float | None:
    """Share of ``prompts`` whose completion passes ``check(index, text)``."""
    if not prompts:
        return None
    replies = llm.generate(list(prompts), max_new_tokens=max_new_tokens, temperature=temperature)
    return sum(check(i, r) for i, r in enumerate(replies)) / len(replies)


def run_sft(
    base_path: str | Path,
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    max_steps: int,
    learning_rate: float,
    seed: int = 0,
    use_lora: bool = True,
    lora: Any = None,
    device: str = "cpu",
    batch_size: int = 4,
    max_length: int = 2048,
) -> Path:
    """SFT ``base_path`` on prompt/completion ``rows``; save merged full weights to ``out_dir``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training.trainer import load_tokenizer

    out = Path(out_dir).resolve()
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    cpu = not device.startswith("cuda")
    args = SFTConfig(
        output_dir=str(out / "_sft"),
        max_steps=max_steps,
        learning_rate=learning_rate,
        # One sequence per forward pass, accumulated to ``batch_size``: answer prompts with 60
        # memories are ~1,900 tokens, and four of them in one pass need ~16 GB of activations
        # on a CPU (the first CPU run was OOM-killed); the update is the same.
        per_device_train_batch_size=1,
        gradient_accumulation_steps=batch_size,
        seed=seed,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        use_cpu=cpu,
        bf16=not cpu,
        fp16=False,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        max_length=max_length,
        packing=False,
        completion_only_loss=True,
        disable_tqdm=True,
    )
    tokenizer = load_tokenizer(base_path)
    tokenizer.padding_side = "right"  # training pads on the right; generation later pads left
    trainer = SFTTrainer(
        model=str(base_path),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora if use_lora else None,
    )
    trainer.train()
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out)
    (out / "cold_start.json").write_text(
        json.dumps({"base": str(base_path), "examples": len(rows), "max_steps": max_steps}, indent=2)
    )
    return out
