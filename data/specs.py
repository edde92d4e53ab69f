"""Dataset specs: the one parser of the strings commands accept for data.

``memory-agent eval --data``, ``memory-agent train --data/--val`` and the
Python API all take the same forms:

* ``locomo:<split>`` - a LoCoMo split (``train``, ``val``, ``dev``, ``test``,
  ``paper-test``) from the shared folder (or ``$MEMORY_AGENT_LOCOMO``);
* ``synthetic:<n>[:<seed>]`` - ``n`` generated conversations with changing
  facts, all their questions (:func:`data.synthetic.generate_dataset`);
  different seeds give disjoint conversations;
* a path: a ``.jsonl`` file of :mod:`data.jsonl`, a LoCoMo-layout ``.json``
  file, or a folder holding the split files (then ``split`` picks one);
* several of these joined with ``+`` (``synthetic:64:1+locomo:train``).

Anything else is a :class:`~data.schema.DatasetError` naming the spec.
"""

from __future__ import annotations

import os
from pathlib import Path

from data.jsonl import load_jsonl
from data.locomo import SPLITS, default_root, load_locomo, load_split
from data.schema import Conversation, DatasetError
from data.synthetic import generate_dataset

__all__ = ["load_spec", "SPEC_HELP"]

SPEC_HELP = ("locomo:<split>, synthetic:<n>[:<seed>], a .json (LoCoMo layout) or .jsonl file, a LoCoMo folder, "
             "or several joined with '+'")


def _synthetic(spec: str) -> list[Conversation]:
    parts = spec.split(":")[1:]
    try:
        n = int(parts[0]) if parts and parts[0] else 1
        seed = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise DatasetError(spec, "expected synthetic:<n> or synthetic:<n>:<seed> with integers") from None
    if len(parts) > 2 or n < 1 or seed < 0:
        raise DatasetError(spec, "expected synthetic:<n>[:<seed>] with n >= 1 and seed >= 0")
    return generate_dataset(n, seed=seed)


def _one(spec: str, split: str | None, root: str | os.PathLike[str] | None) -> list[Conversation]:
    if spec == "synthetic" or spec.startswith("synthetic:"):
        if split:
            raise DatasetError(spec, "a split (--split) applies to LoCoMo data, not to generated conversations")
        return _synthetic(spec)
    if spec.startswith("locomo:") or spec == "locomo":
        own = spec.partition(":")[2]
        if own and split and split != own:
            raise DatasetError(spec, f"the spec names the split {own!r}; --split {split} would be ignored")
        name = own or split or "dev"
        if name not in SPLITS:
            raise DatasetError(spec, f"unknown LoCoMo split {name!r}; choose from {', '.join(SPLITS)}")
        return load_split(name, root)
    path = Path(spec).expanduser()
    if path.suffix == ".jsonl":
        if split:
            raise DatasetError(path, "a split (--split) applies to LoCoMo data, not to a JSONL file")
        return load_jsonl(path)
    if path.is_file():
        if split:
            raise DatasetError(path, "a split (--split) applies to a LoCoMo folder, not to one file")
        return load_locomo(path)
    if path.is_dir():
        return load_split(split or "dev", path)
    raise DatasetError(spec, f"no such file or folder (a dataset is {SPEC_HELP})")


def load_spec(spec: str | os.PathLike[str] | None, *, split: str | None = None,
              root: str | os.PathLike[str] | None = None) -> list[Conversation]:
    """Conversations for ``spec`` (see the module docstring); ``None`` is the LoCoMo folder.

    ``split`` picks a LoCoMo split when ``spec`` is a folder (or ``None``);
    ``root`` overrides where ``locomo:<split>`` is read from.
    """
    if spec is None:
        return load_split(split or "dev", root if root is not None else default_root())
    text = str(spec).strip()
    if not text:
        raise DatasetError(spec, f"empty dataset spec (expected {SPEC_HELP})")
    parts = [p.strip() for p in text.split("+")] if "+" in text and not Path(text).exists() else [text]
    if any(not p for p in parts):
        raise DatasetError(spec, f"empty part in {text!r} (expected {SPEC_HELP})")
    if split and len(parts) > 1:
        raise DatasetError(spec, "a split (--split) applies to one LoCoMo source; name it in each part instead "
                                 "(locomo:val+synthetic:8)")
    out: list[Conversation] = []
    for part in parts:
        out.extend(_one(part, split, root))
    ids = [c.sample_id for c in out]
    if len(set(ids)) != len(ids):
        raise DatasetError(spec, "the same conversation appears twice")
    return out
