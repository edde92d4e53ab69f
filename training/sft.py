"""Cold start: a short SFT on well-formed outputs before GRPO (TRL ``SFTTrainer``, LoRA).

GRPO learns from reward differences within a group; a 135M model that never
writes a valid operation list gives groups of identical (-1) rewards. So, as
in DeepSeek-R1, the policy first sees a few hundred well-formed targets:

* **manager**: the episode's gold decision (:meth:`ManagerEpisode.target`),
  which for the synthetic world includes UPDATE (moves, new jobs, changed
  tastes), DELETE (a break-up ends "is dating") and NOOP (a repeated fact);
  for LoCoMo observations, ADD what is not already stored verbatim;
* **answer**: ``Relevant: [i] <date>: <memory>`` quoting the shown memory that
  holds most of the gold answer's content, then ``**Answer:** <gold>``.

The SFT prompts are disjoint from the GRPO prompts (the run splits the
episodes) and the recipes train one epoch (``cold_start_epochs``), because a
policy that has memorised its targets samples the same completion eight times
and GRPO gets no spread (the first recipe's 5 epochs took the entropy to 0.02).

The result is a LoRA adapter (not merged): GRPO continues training the same
adapter, so the shipped policy is one small file over the embedded model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memory_agent.answer import display_date
from memory_agent.prompts import ANSWER_MARKER
from memory_agent.text import content_stems
from training.episodes import AnswerEpisode, ManagerEpisode

__all__ = ["manager_sft_rows", "answer_target", "answer_sft_rows", "run_sft"]


def manager_sft_rows(episodes: Sequence[ManagerEpisode]) -> list[dict[str, Any]]:
    """Prompt/completion rows from the episodes whose gold decision is known."""
    return [{"prompt": e.messages, "completion": [{"role": "assistant", "content": e.target()}]}
            for e in episodes if e.gold is not None]


def answer_target(answer: str, shown: Sequence[Any], question: str = "", max_quote_chars: int = 100) -> str:
    """The well-formed reply over ``shown`` (the prompt's memories, in prompt order).

    Quotes the one memory sharing most content with the gold answer (its
    shown date included, so "when" questions quote the memory of that day;
    ties go to the memory sharing most with the question), cut to
    ``max_quote_chars`` so the marker fits the 64-token answer budget.
    """
    gold, asked = content_stems(str(answer)), content_stems(question)
    best, key = None, (0, 0)
    for i, m in enumerate(shown):
        words = content_stems(f"{display_date(m)} {m.text}")
        score = (len(gold & words), len(asked & words))
        if score[0] > 0 and score > key:
            best, key = i, score
    if best is None:
        quoted = "none"
    else:
        m = shown[best]
        text = m.text if len(m.text) <= max_quote_chars else m.text[: max_quote_chars - 3].rstrip() + "..."
        quoted = f"[{best}] {display_date(m)}: {text}"
    return f"Relevant: {quoted}\n{ANSWER_MARKER} {answer}"


def answer_sft_rows(episodes: Sequence[AnswerEpisode]) -> list[dict[str, Any]]:
    return [{"prompt": e.messages,
             "completion": [{"role": "assistant", "content": answer_target(e.qa.answer, e.shown, e.qa.question)}]}
            for e in episodes]


def run_sft(base_path: str | Path, rows: Sequence[dict[str, Any]], out_dir: str | Path, *, lora: Any,
            epochs: float, learning_rate: float, batch_size: int = 4, seed: int = 0, device: str = "cpu",
            max_length: int = 2048, progress: Any = None) -> Path:
    """SFT a LoRA adapter on prompt/completion ``rows`` for ``epochs`` (<= 1 recommended); save it to ``out_dir``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from training.trainer import load_tokenizer, save_adapter

    out = Path(out_dir).resolve()
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    steps = max(1, math.ceil(epochs * len(rows) / batch_size))
    cpu = not device.startswith("cuda")
    args = SFTConfig(
        output_dir=str(out / "_sft"),
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        # One sequence per pass, accumulated: four 1,900-token answer prompts in one pass need
        # ~16 GB of activations on a CPU; the update is the same.
        per_device_train_batch_size=1,
        gradient_accumulation_steps=batch_size,
        seed=seed,
        logging_steps=max(1, steps // 10),
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
    tokenizer.padding_side = "right"  # training pads on the right; generation pads left
    trainer = SFTTrainer(model=str(base_path), args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora, callbacks=[progress] if progress is not None else None)
    trainer.train()
    tokenizer.padding_side = "left"
    save_adapter(trainer.model, tokenizer, out, base_path=base_path)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    (out / "cold_start.json").write_text(json.dumps(
        {"base": str(base_path), "examples": len(rows), "steps": steps, "epochs": epochs,
         "learning_rate": learning_rate, "loss_first": losses[0] if losses else None,
         "loss_last": losses[-1] if losses else None}, indent=2))
    return out
