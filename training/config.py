"""Training configuration: TRL's ``GRPOConfig`` plus what TRL does not know about.

:class:`MemoryGRPOConfig` *is* a ``GRPOConfig`` (it goes straight to
``GRPOTrainer``) with fields for which agent is trained, where its episodes
come from, LoRA, the cold start and the gate before GRPO. A recipe is a YAML
file of field values (``training/recipes/``); :func:`default_recipe` picks
the one for the device (``cpu-manager.yaml`` on a CPU, ``gpu-manager.yaml``
with CUDA) and CLI flags override single fields.

:func:`load_config` also applies what every run needs for a learning signal
unless a recipe says otherwise: the product's generation budget and stop
strings (:mod:`memory_agent.defaults`), ``loss_type="dr_grpo"`` with
``scale_rewards="none"`` (no division by a group's near-zero std, no length
bias), clip-higher (``epsilon_high=0.28``), a constant learning rate and
masked truncated completions. Device handling lives here too
(:func:`resolve_device`): CUDA with bf16 when there is a GPU, float32 on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import GRPOConfig

from memory_agent.defaults import ANSWER_MAX_NEW_TOKENS, EMBEDDER_NAMES, MANAGER_MAX_NEW_TOKENS, MANAGER_STOP
from memory_agent.errors import ConfigError
from training.episodes import KIND_WEIGHTS

__all__ = ["MemoryGRPOConfig", "TASKS", "EXTRA_FIELDS", "BANK_SOURCES", "load_config", "read_recipe",
           "default_recipe", "resolve_device", "RECIPES_DIR"]

TASKS = ("manager", "answer")
BANK_SOURCES = ("gold", "turns", "pipeline")
EMBEDDERS = EMBEDDER_NAMES  # the product's names, resolved by memory_agent.memory.resolve_embedder
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


@dataclass
class MemoryGRPOConfig(GRPOConfig):
    """``GRPOConfig`` + memory-agent fields. Every extra field has a CPU-friendly default."""

    # -- what is trained ------------------------------------------------------------
    task: str = field(default="manager", metadata={"help": "manager | answer"})
    model: str = field(default="default", metadata={"help": "Base model: 'default' (embedded SmolLM2) or a folder."})
    embedder: str = field(default="default", metadata={"help": "default/minilm (the product's) | hashing (tests)."})
    reward_metric: str = field(default="f1", metadata={"help": "Answer reward: f1 (partial credit) | em."})
    target_device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    cpu_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (None: torch's default)."})

    # -- episodes --------------------------------------------------------------------
    data: str | None = field(default=None, metadata={"help": "Training data spec (data.specs); None: locomo:train."})
    val: str | None = field(default=None, metadata={"help": "Held-out data spec for the gate and validation."})
    bank_source: str = field(default="gold", metadata={
        "help": "How earlier turns become the bank: gold (the data's facts and edits), turns (verbatim), "
                "pipeline (the product's extraction + manager_model, slow on a CPU)."})
    manager_model: str = field(default="default", metadata={"help": "The manager of the pipeline bank source."})
    max_conversations: int | None = field(default=None, metadata={"help": "Use only the first N conversations."})
    max_turns: int | None = field(default=None, metadata={"help": "Replay at most N turns per conversation."})
    max_episodes: int | None = field(default=None, metadata={
        "help": "At most N GRPO episodes (seeded; decision kinds in the kind_weights shares where possible)."})
    val_limit: int = field(default=64, metadata={"help": "At most N validation episodes (seeded sample)."})
    kind_weights: dict[str, int] = field(default_factory=lambda: dict(KIND_WEIGHTS), metadata={
        "help": "Shares of the manager's decision kinds (new / change / repeat) in the cold start and the GRPO "
                "prompts, where the data allows."})

    # -- LoRA --------------------------------------------------------------------------
    lora_r: int = field(default=8)
    lora_alpha: int = field(default=16)
    lora_dropout: float = field(default=0.0)
    lora_target_modules: list[str] | str | None = field(default="all-linear")
    lora_top_layers: int | None = field(default=None, metadata={
        "help": "Adapt only the top N decoder layers (None: all); about 2x faster steps on a CPU."})

    # -- cold start and the gate ---------------------------------------------------------
    cold_start: bool = field(default=True, metadata={"help": "SFT on gold targets before GRPO (own prompts)."})
    cold_start_examples: int = field(default=160, metadata={
        "help": "SFT examples, split off the GRPO episodes (decision kinds in the kind_weights shares where possible)."})
    cold_start_epochs: float = field(default=1.0, metadata={"help": "Passes over the SFT examples (<= 1 advised)."})
    cold_start_learning_rate: float = field(default=2e-4)
    cold_start_batch_size: int = field(default=4)
    validate_cold_start: bool = field(default=True, metadata={
        "help": "Validate after the cold start too (costly for the Answer Agent's long prompts on a CPU)."})
    gate_prompts: int = field(default=8, metadata={"help": "Held-out prompts sampled for the gate before GRPO."})
    gate_min_valid_rate: float = field(default=0.5, metadata={"help": "Gate: share of valid samples needed."})
    gate_min_distinct: float = field(default=1.5, metadata={"help": "Gate: distinct decisions per group needed."})
    shuffle_rewards: bool = field(default=False, metadata={
        "help": "Control run: permute rewards within each group (a policy trained on this must not gain)."})

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.reward_metric not in ("em", "f1"):
            raise ConfigError(f"reward_metric must be em or f1, got {self.reward_metric!r}")
        if self.bank_source not in BANK_SOURCES:
            raise ConfigError(f"bank_source must be one of {BANK_SOURCES}, got {self.bank_source!r}")
        if self.embedder not in EMBEDDERS:
            raise ConfigError(f"embedder must be one of {EMBEDDERS}, got {self.embedder!r}")
        if set(self.kind_weights) - set(KIND_WEIGHTS) or any(
                not isinstance(w, int) or w < 0 for w in self.kind_weights.values()):
            raise ConfigError(f"kind_weights takes {sorted(KIND_WEIGHTS)} with whole numbers >= 0, "
                              f"got {self.kind_weights!r}")
        if not 0 < self.cold_start_epochs <= 4:
            raise ConfigError(f"cold_start_epochs must be in (0, 4], got {self.cold_start_epochs}")
        super().__post_init__()


EXTRA_FIELDS = frozenset(f.name for f in dataclasses.fields(MemoryGRPOConfig)) - frozenset(
    f.name for f in dataclasses.fields(GRPOConfig))


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_recipe(task: str, device: str = "auto") -> Path:
    """The recipe for ``task`` on ``device``: ``cpu-<task>.yaml`` or ``gpu-<task>.yaml``."""
    kind = "gpu" if resolve_device(device).startswith("cuda") else "cpu"
    return RECIPES_DIR / f"{kind}-{task}.yaml"


def _device_defaults(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        return {"bf16": True, "use_cpu": False}
    return {"bf16": False, "fp16": False, "use_cpu": True, "gradient_checkpointing": False,
            "dataloader_pin_memory": False}


def _signal_defaults(task: str) -> dict[str, Any]:
    """What a run needs to learn (module docstring); a recipe may override each."""
    out: dict[str, Any] = {
        "loss_type": "dr_grpo",
        "scale_rewards": "none",
        "epsilon_high": 0.28,
        "mask_truncated_completions": True,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "num_generations": 8,
        "beta": 0.0,
    }
    if task == "manager":
        out["max_completion_length"] = MANAGER_MAX_NEW_TOKENS
        out["generation_kwargs"] = {"stop_strings": list(MANAGER_STOP)}
    else:
        out["max_completion_length"] = ANSWER_MAX_NEW_TOKENS
    return out


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The field values of a YAML recipe (a path, or a file name in ``training/recipes``).

    Unknown keys are a :class:`ConfigError`: a typo would otherwise train with
    a default nobody asked for.
    """
    p = Path(path)
    if not p.is_file() and (RECIPES_DIR / p.name).is_file():
        p = RECIPES_DIR / p.name
    if not p.is_file():
        known = ", ".join(sorted(f.name for f in RECIPES_DIR.glob("*.yaml")))
        raise ConfigError(f"no config file {path} (recipes: {known})")
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
    task = values.get("task", "manager")
    for key, value in {**_device_defaults(device), **_signal_defaults(task)}.items():
        values.setdefault(key, value)
    values.setdefault("output_dir", "memory-agent-train")
    values.setdefault("report_to", "none")
    values.setdefault("save_strategy", "no")  # the run saves the final adapter itself
    values.setdefault("logging_steps", 1)
    values.setdefault("disable_tqdm", True)  # our callback prints one line per step with an ETA
    try:
        return MemoryGRPOConfig(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad training config: {exc}") from exc
