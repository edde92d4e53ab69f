"""Datasets: typed conversation records, LoCoMo, the synthetic generator, JSONL.

Pure loaders and generators; this package imports nothing else of the project
(docs/architecture.md), so the training code and the demo can use it cheaply.
"""

from __future__ import annotations

from data.jsonl import load_jsonl, save_jsonl
from data.locomo import SPLITS, default_root, load_locomo, load_split
from data.schema import CATEGORIES, QA, Conversation, DatasetError, MemoryEdit, Session, Turn
from data.specs import load_spec
from data.synthetic import generate, generate_dataset

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
