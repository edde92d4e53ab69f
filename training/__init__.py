"""GRPO training of the Memory Manager and the Answer Agent (Memory-R1, arXiv:2508.19828).

Two stages, as in the paper: the manager is trained with the Answer Agent
frozen inside its reward, then the Answer Agent over banks built by the
trained manager. TRL's ``GRPOTrainer`` does the optimisation; this package
builds what it needs:

* :mod:`training.episodes`, :mod:`training.replay`, :mod:`training.pipeline_replay`:
  prompts and reward data from conversations with QA;
* :mod:`training.rewards` (with :mod:`training.bank`): TRL-style reward callables;
* :mod:`training.pipeline`: the one place that mirrors the inference pipeline;
* :mod:`training.config`, :mod:`training.trainer`, :mod:`training.callbacks`,
  :mod:`training.sft`, :mod:`training.run`: configuration, the trainer, metrics,
  the optional SFT cold start and the end-to-end stages (``memory-agent train``).

Submodules are imported on use: ``import training`` does not load torch or trl.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AnswerReward",
    "ManagerReward",
    "OutputCounter",
    "MemoryGRPOConfig",
    "load_config",
    "train",
]

_LAZY = {
    "AnswerReward": "training.rewards",
    "ManagerReward": "training.rewards",
    "OutputCounter": "training.rewards",
    "MemoryGRPOConfig": "training.config",
    "load_config": "training.config",
    "train": "training.run",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
