"""Datasets: typed conversation records, LoCoMo, the synthetic generator, JSONL.

Pure loaders and generators; this package imports nothing else of the project
(docs/architecture.md), so the training code and the demo can use it cheaply.
Names load on first use, so the product's ``import data.dates`` does not pay
for the pydantic records.
"""

from __future__ import annotations

__all__ = [
    "CATEGORIES",
    "QA",
    "Conversation",
    "DatasetError",
    "Session",
    "Turn",
    "MemoryEdit",
    "load_spec",
    "SPLITS",
    "default_root",
    "load_locomo",
    "load_split",
    "load_jsonl",
    "save_jsonl",
    "generate",
    "generate_dataset",
]

_HOMES = {
    "load_jsonl": "data.jsonl", "save_jsonl": "data.jsonl",
    "SPLITS": "data.locomo", "default_root": "data.locomo", "load_locomo": "data.locomo", "load_split": "data.locomo",
    "CATEGORIES": "data.schema", "QA": "data.schema", "Conversation": "data.schema", "DatasetError": "data.schema",
    "MemoryEdit": "data.schema", "Session": "data.schema", "Turn": "data.schema",
    "load_spec": "data.specs",
    "generate": "data.synthetic", "generate_dataset": "data.synthetic",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
