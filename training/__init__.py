"""GRPO training of the Memory Manager and the Answer Agent (Memory-R1, arXiv:2508.19828).

Two stages, as in the paper: the manager is trained with the Answer Agent
frozen inside its reward, then the Answer Agent over banks built by the
trained manager. TRL's ``GRPOTrainer`` does the optimisation; this package
builds what it needs:

* :mod:`training.episodes`: prompts and reward data from conversations with QA,
  built by the product's own manager and answer code on in-memory stores;
* :mod:`training.rewards`: TRL-style rewards (the dense manager reward, the answer reward);
* :mod:`training.validate`, :mod:`training.compare`, :mod:`training.proxy`: greedy
  validation, policy comparisons with paired bootstrap intervals, and the check
  that the dense reward ranks decisions as the Answer Agent's F1 does;
* :mod:`training.config`, :mod:`training.trainer`, :mod:`training.callbacks`,
  :mod:`training.sft`, :mod:`training.run`: configuration, the trainer, metrics,
  the SFT cold start and the end-to-end stages (``memory-agent train``).

Nothing here re-implements a pipeline step: training calls the product's
``MemoryManager`` and ``AnswerAgent`` and scores with :mod:`eval.scoring`.

Submodules are imported on use: ``import training`` does not load torch or trl.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AnswerReward",
    "ManagerReward",
    "RewardStats",
    "MemoryGRPOConfig",
    "load_config",
    "train",
]

_LAZY = {
    "AnswerReward": "training.rewards",
    "ManagerReward": "training.rewards",
    "RewardStats": "training.rewards",
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
