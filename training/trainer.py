"""Building and running TRL's ``GRPOTrainer`` for one of the two agents.

We never write the GRPO loop ourselves: this module only prepares what
``GRPOTrainer`` needs (a policy as a *path* so saved adapters name a loadable
base, the tokenizer, a peft ``LoraConfig`` or full fine-tuning, our reward
callables, the metrics callback) and saves the result where ``resolve_llm``
can load it:

* LoRA (default): ``adapter_config.json`` + ``adapter_model.safetensors`` +
  tokenizer, with ``base_model_name_or_path`` forced to the *absolute* path of
  the base folder (the embedded SmolLM2 cache folder by default), so
  ``resolve_llm(out_dir)`` works offline from any working directory;
* full fine-tuning, or ``merge_adapter``: a plain model folder.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory_agent.errors import ModelNotFound
from training.callbacks import MetricsCallback
from training.config import MemoryGRPOConfig

__all__ = [
    "resolve_model_path",
    "materialize_base",
    "load_tokenizer",
    "lora_config",
    "build_grpo_trainer",
    "TrainResult",
    "run_grpo",
    "save_checkpoint",
]


def resolve_model_path(spec: str | Path) -> Path:
    """``default`` -> the embedded SmolLM2 safetensors folder; else an existing folder."""
    if str(spec) in ("default", "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        from memory_agent.embedded import ensure_smollm2

        return Path(ensure_smollm2()).resolve()
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelNotFound(f"no model folder {spec} (training needs a local model folder or 'default')")
    return path.resolve()


def materialize_base(spec: str | Path, work_dir: Path) -> Path:
    """A plain model folder to train from.

    A LoRA adapter folder (e.g. the stage-1 manager, or a cold-started
    policy) is merged into its base and saved under ``work_dir`` first: a
    new adapter must sit on a base that loads by path alone.
    """
    path = resolve_model_path(spec)
    if not (path / "adapter_config.json").is_file():
        return path
    from memory_agent.llms import TransformersLLM

    llm = TransformersLLM(path, device="cpu")
    merged = llm.model.merge_and_unload()
    target = (work_dir / "merged_base").resolve()
    merged.save_pretrained(target, safe_serialization=True)
    llm.tokenizer.save_pretrained(target)
    return target


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left", truncation_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def lora_config(config: MemoryGRPOConfig, base_path: str | Path | None):
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(base_path) if base_path is not None else None,
    )


def build_grpo_trainer(
    config: MemoryGRPOConfig,
    train_dataset: Any,
    reward_funcs: Sequence[Callable],
    *,
    model: Any = None,
    tokenizer: Any = None,
    callbacks: Sequence[Any] = (),
    eval_dataset: Any = None,
):
    """A ``trl.GRPOTrainer``. ``model`` may be a folder path, or an in-memory model (tests)."""
    from trl import GRPOTrainer

    if model is None:
        model = str(resolve_model_path(config.policy_spec))
    base_path = model if isinstance(model, (str, Path)) else getattr(model, "name_or_path", None)
    if tokenizer is None:
        if base_path is None:
            raise ModelNotFound("an in-memory model needs its tokenizer")
        tokenizer = load_tokenizer(base_path)
    peft_config = lora_config(config, base_path if isinstance(model, (str, Path)) else None) if config.use_lora else None
    if isinstance(model, (str, Path)):
        model = str(model)
    return GRPOTrainer(
        model=model,
        reward_funcs=list(reward_funcs),
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        peft_config=peft_config,
    )


def save_checkpoint(trainer: Any, out_dir: str | Path, *, base_path: str | Path | None, merge: bool = False) -> Path:
    """Save the policy so that ``resolve_llm(out_dir)`` loads it (see module docstring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    tokenizer = trainer.processing_class
    is_peft = hasattr(model, "peft_config")
    if is_peft and merge:
        model = model.merge_and_unload()
        is_peft = False
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if is_peft and base_path is not None:
        # peft writes whatever name the base was loaded under; pin the absolute path.
        cfg_path = out / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(Path(base_path).resolve())
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return out


@dataclass
class TrainResult:
    """What a GRPO run produced, for ``train_summary.json``."""

    steps: int
    wall_seconds: float
    step_seconds: list[float]
    rows: list[dict[str, Any]]
    checkpoint: str
    counters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        def first_last(key: str) -> tuple[Any, Any]:
            values = [r[key] for r in self.rows if r.get(key) is not None]
            return (values[0], values[-1]) if values else (None, None)

        reward_first, reward_last = first_last("reward")
        valid_first, valid_last = first_last("valid_rate")
        entropy_first, entropy_last = first_last("entropy")
        return {
            "steps": self.steps,
            "wall_seconds": round(self.wall_seconds, 2),
            "seconds_per_step_mean": round(statistics.fmean(self.step_seconds), 2) if self.step_seconds else None,
            "seconds_per_step_median": round(statistics.median(self.step_seconds), 2) if self.step_seconds else None,
            "reward_first": reward_first,
            "reward_last": reward_last,
            "reward_mean": statistics.fmean([r["reward"] for r in self.rows if r.get("reward") is not None])
            if any(r.get("reward") is not None for r in self.rows)
            else None,
            "valid_rate_first": valid_first,
            "valid_rate_last": valid_last,
            "entropy_first": entropy_first,
            "entropy_last": entropy_last,
            "checkpoint": self.checkpoint,
            "counters": self.counters,
        }


def run_grpo(
    config: MemoryGRPOConfig,
    train_dataset: Any,
    reward_funcs: Sequence[Callable],
    out_dir: str | Path,
    *,
    counters: Mapping[str, Any] | None = None,
    model: Any = None,
    tokenizer: Any = None,
    extra_callbacks: Sequence[Any] = (),
) -> tuple[Any, TrainResult]:
    """Train, save the checkpoint and metrics into ``out_dir``; returns (trainer, result)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = MetricsCallback(out, counters)
    if model is None:
        model = str(resolve_model_path(config.policy_spec))
    base_path = model if isinstance(model, (str, Path)) else None
    trainer = build_grpo_trainer(
        config, train_dataset, reward_funcs, model=model, tokenizer=tokenizer, callbacks=[metrics, *extra_callbacks]
    )
    # transformers prints raw log dicts to stdout when tqdm is off; our callback prints
    # one line per step to stderr instead, so stdout stays clean for --json.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    checkpoint = save_checkpoint(trainer, out, base_path=base_path, merge=config.merge_adapter)
    result = TrainResult(
        steps=int(trainer.state.global_step),
        wall_seconds=wall,
        step_seconds=metrics.step_seconds,
        rows=metrics.rows,
        checkpoint=str(checkpoint),
        counters={name: c.as_dict() for name, c in (counters or {}).items()},
    )
    return trainer, result
