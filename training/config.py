"""Training configuration: TRL's ``GRPOConfig`` plus the Memory-R1 specifics.

:class:`MemoryGRPOConfig` *is* a ``GRPOConfig`` (so it goes straight to
``GRPOTrainer``) with extra fields for what TRL does not know about: which
agent is trained, which models play the frozen parts, how episodes are built,
LoRA, the optional SFT cold start and the quick validation pass. A recipe is
a YAML file of field values (``training/recipes/*.yaml``); the CLI overrides
a few of them.

Device handling lives here too (:func:`resolve_device`): ``auto`` picks CUDA
with bf16 when there is a GPU and plain float32 on the CPU (TRL defaults to
bf16, which is slow or unsupported on most CPUs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import GRPOConfig

from memory_agent.errors import ConfigError

__all__ = ["MemoryGRPOConfig", "TASKS", "EXTRA_FIELDS", "load_config", "read_recipe", "resolve_device", "RECIPES_DIR"]

TASKS = ("manager", "answer")
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass
class MemoryGRPOConfig(GRPOConfig):
    """``GRPOConfig`` + Memory-R1 fields. Every extra field has a CPU-friendly default."""

    # -- what is trained, and with which frozen partners -------------------------
    task: str = field(default="answer", metadata={"help": "manager | answer"})
    model: str | None = field(
        default=None,
        metadata={
            "help": "Policy to start from: 'default' (embedded SmolLM2) or a folder (full model or LoRA adapter). "
            "Unset: manager_model when training the manager, answer_model when training the answer agent."
        },
    )
    manager_model: str = field(
        default="default",
        metadata={"help": "Manager used to build the memory banks (resolve_llm spec; a trained checkpoint for stage 2)."},
    )
    answer_model: str = field(
        default="default", metadata={"help": "Frozen Answer Agent of the manager reward (resolve_llm spec)."}
    )
    embedder: str = field(
        default="default",
        metadata={"help": "'default'/'minilm' (the pipeline's MiniLM), 'hashing' (fast, for tests and CPU runs)."},
    )
    reward_metric: str = field(default="em", metadata={"help": "em (Memory-R1's choice) | f1 (partial credit)."})
    # Not ``device``: TrainingArguments already has a ``device`` property.
    target_device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})

    cpu_threads: int | None = field(
        default=None,
        metadata={"help": "torch CPU threads (None: torch's default). On a shared box 1 is often fastest."},
    )

    # -- episodes ----------------------------------------------------------------
    bank_source: str = field(
        default="pipeline",
        metadata={
            "help": "How earlier turns become a bank: 'pipeline' (the real extraction+manager, cached on disk), "
            "'observations' (LoCoMo's annotated facts, no LLM) or 'turns' (each turn verbatim)."
        },
    )
    max_conversations: int | None = field(default=None, metadata={"help": "Use only the first N conversations."})
    max_turns: int | None = field(default=None, metadata={"help": "Replay at most N turns per conversation."})
    max_episodes: int | None = field(default=None, metadata={"help": "Stop after N episodes (in dataset order)."})
    retrieve_k: int = field(default=60, metadata={"help": "Memories retrieved per question (Memory-R1: 60)."})
    include_adversarial: bool = field(default=False, metadata={"help": "Keep LoCoMo category-5 questions."})
    episode_cache_dir: str | None = field(
        default=None, metadata={"help": "Where built banks/episodes are cached (default: <memory-agent cache>/training)."}
    )
    answer_max_new_tokens: int = field(default=64, metadata={"help": "Frozen Answer Agent's budget in the manager reward."})

    # -- LoRA ----------------------------------------------------------------------
    use_lora: bool = field(default=True, metadata={"help": "LoRA through peft (False: full fine-tuning)."})
    lora_r: int = field(default=16)
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.0)
    lora_target_modules: list[str] | str | None = field(
        default="all-linear", metadata={"help": "peft target_modules ('all-linear' or a list of module names)."}
    )
    merge_adapter: bool = field(default=False, metadata={"help": "Save merged full weights instead of the adapter."})

    # -- cold start (SFT on well-formed outputs before RL) ---------------------------
    cold_start: bool = field(default=False)
    cold_start_max_steps: int = field(default=30)
    cold_start_learning_rate: float = field(default=2e-4)
    cold_start_examples: int = field(default=64)
    cold_start_probe: int = field(default=8, metadata={"help": "Prompts sampled to measure the valid-output rate."})

    # -- validation --------------------------------------------------------------------
    val_limit: int = field(default=20, metadata={"help": "At most N validation questions/episodes per pass."})

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.reward_metric not in ("em", "f1"):
            raise ConfigError(f"reward_metric must be em or f1, got {self.reward_metric!r}")
        if self.bank_source not in ("pipeline", "observations", "turns"):
            raise ConfigError(f"bank_source must be pipeline, observations or turns, got {self.bank_source!r}")
        if self.embedder not in ("default", "minilm", "hashing"):
            raise ConfigError(f"embedder must be default, minilm or hashing, got {self.embedder!r}")
        super().__post_init__()

    @property
    def policy_spec(self) -> str:
        """The model the policy starts from (see ``model``)."""
        if self.model:
            return self.model
        return self.manager_model if self.task == "manager" else self.answer_model


EXTRA_FIELDS = frozenset(f.name for f in dataclasses.fields(MemoryGRPOConfig)) - frozenset(
    f.name for f in dataclasses.fields(GRPOConfig)
)


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _device_defaults(device: str) -> dict[str, Any]:
    """Settings that follow from the device unless the recipe sets them itself."""
    if device.startswith("cuda"):
        # bf16 weights (half the memory) and bf16 autocast; TRL would load float32 otherwise.
        return {"bf16": True, "use_cpu": False, "model_init_kwargs": {"dtype": "bfloat16"}}
    # float32 on CPU; checkpointing only costs time on a 135M model; no pinned memory.
    return {
        "bf16": False,
        "fp16": False,
        "use_cpu": True,
        "gradient_checkpointing": False,
        "dataloader_pin_memory": False,
    }


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The field values of a YAML recipe (a path, or a file name in ``training/recipes``).

    Unknown keys are a :class:`ConfigError` rather than silently dropped: a
    typo in a recipe would otherwise train with a default nobody asked for.
    """
    p = Path(path)
    if not p.is_file() and (RECIPES_DIR / p.name).is_file():
        p = RECIPES_DIR / p.name
    if not p.is_file():
        raise ConfigError(f"no config file {path}")
    loaded = yaml.safe_load(p.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: a recipe is a mapping of field: value")
    _check_fields(loaded, where=str(p))
    return loaded


def _check_fields(values: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(MemoryGRPOConfig) if f.init} | {"device"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown config field(s): {', '.join(unknown)}")


def load_config(path: str | Path | None = None, **overrides: Any) -> MemoryGRPOConfig:
    """A config from a YAML recipe (optional) plus keyword overrides (``None`` values are ignored)."""
    values: dict[str, Any] = read_recipe(path) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    _check_fields(values, where="config")
    if "device" in values:  # the CLI's and recipes' natural spelling
        values["target_device"] = values.pop("device")
    device = resolve_device(str(values.get("target_device", "auto")))
    values["target_device"] = device
    for key, value in _device_defaults(device).items():
        values.setdefault(key, value)
    values.setdefault("output_dir", "memory-agent-train")
    values.setdefault("report_to", "none")
    values.setdefault("save_strategy", "no")  # the CLI saves the final checkpoint itself
    values.setdefault("logging_steps", 1)
    try:
        return MemoryGRPOConfig(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad training config: {exc}") from exc
