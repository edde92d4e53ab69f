"""Loader for the LoCoMo benchmark (Maharana et al., ACL 2024) and its splits.

Reads the layout of the public ``locomo10.json`` (a JSON list of samples with
``conversation``, ``qa`` and ``observation``) into the typed records of
:mod:`data.schema`. The quirks of the release are handled here, once:

* ``session_N_date_time`` keys without a ``session_N`` dialogue are skipped;
* integer answers (``2022``) become strings;
* category 5 (adversarial) questions carry ``adversarial_answer``; their gold
  ``answer`` is the file's when present, else "Not mentioned in the conversation"
  (what LoCoMo's own scorer expects);
* evidence such as ``"D8:6; D9:17"`` is split into separate dialogue ids.

Splits follow Memory-R1 (arXiv:2508.19828): train = conv-26, validation =
conv-30; conv-41 is this project's development test (``dev``); ``test`` is the
seven remaining conversations of the public release and ``paper-test`` the eight
conversations Memory-R1 reports on (everything but train and validation, 1307
non-adversarial questions; it contains ``dev``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from data.schema import (
    ADVERSARIAL,
    NOT_MENTIONED,
    QA,
    Conversation,
    DatasetError,
    Session,
    Turn,
    parse_locomo_datetime,
)

__all__ = [
    "SPLITS",
    "SPLIT_FILES",
    "SPLIT_IDS",
    "FULL_FILE",
    "default_root",
    "load_locomo",
    "load_split",
    "parse_sample",
]

TRAIN_ID, VAL_ID, DEV_ID = "conv-26", "conv-30", "conv-41"
#: Split name -> file name in the shared dataset folder.
SPLIT_FILES: dict[str, str] = {
    "train": "locomo_train.json",
    "val": "locomo_val.json",
    "dev": "locomo_dev.json",
}
#: Split name -> sample ids, when selecting from the full ``locomo10.json``.
SPLIT_IDS: dict[str, frozenset[str]] = {
    "train": frozenset({TRAIN_ID}),
    "val": frozenset({VAL_ID}),
    "dev": frozenset({DEV_ID}),
}
#: Name of the full public release, looked for next to the split files.
FULL_FILE = "locomo10.json"
SPLITS = ("dev", "val", "train", "test", "paper-test", "all")

_SESSION_KEY = re.compile(r"^session_(\d+)$")


def default_root() -> Path:
    """``$MEMORY_AGENT_LOCOMO`` or ``<repo>/../shared/datasets/locomo``."""
    env = os.environ.get("MEMORY_AGENT_LOCOMO")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parent.parent
    return repo_root.parent / "shared" / "datasets" / "locomo"


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DatasetError(path, "no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"not valid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"not UTF-8 text ({exc})") from exc


def _parse_turn(raw: Any, where: str) -> Turn:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a turn must be an object")
    missing = [k for k in ("speaker", "dia_id", "text") if k not in raw]
    if missing:
        raise ValueError(f"{where}: turn lacks {', '.join(missing)}")
    caption = raw.get("blip_caption")
    return Turn(
        dia_id=str(raw["dia_id"]),
        speaker=str(raw["speaker"]),
        text=str(raw["text"]),
        blip_caption=str(caption) if caption else None,
    )


def _parse_qa(raw: Any, where: str) -> QA:
    if not isinstance(raw, dict) or "question" not in raw or "category" not in raw:
        raise ValueError(f"{where}: a QA item needs 'question' and 'category'")
    category = int(raw["category"])
    adversarial = raw.get("adversarial_answer")
    answer = raw.get("answer")
    if answer is None:
        if category != ADVERSARIAL:
            raise ValueError(f"{where}: question {raw['question']!r} has no answer")
        answer = NOT_MENTIONED
    evidence: list[str] = []
    for item in raw.get("evidence") or []:
        evidence.extend(part.strip() for part in str(item).split(";") if part.strip())
    return QA(
        question=str(raw["question"]),
        answer=str(answer),
        evidence=tuple(evidence),
        category=category,
        adversarial_answer=None if adversarial is None else str(adversarial),
    )


def parse_sample(raw: Any) -> Conversation:
    """One element of ``locomo10.json`` -> :class:`Conversation`.

    Raises ``ValueError`` (or pydantic's ``ValidationError``) with the reason;
    :func:`load_locomo` adds the path.
    """
    if not isinstance(raw, dict) or "conversation" not in raw:
        raise ValueError("a sample must be an object with a 'conversation'")
    sample_id = str(raw.get("sample_id", "?"))
    conv = raw["conversation"]
    if not isinstance(conv, dict) or "speaker_a" not in conv or "speaker_b" not in conv:
        raise ValueError(f"{sample_id}: conversation needs speaker_a and speaker_b")
    indices = sorted(int(m.group(1)) for k in conv if (m := _SESSION_KEY.match(k)))
    sessions = []
    for n in indices:
        turns_raw = conv[f"session_{n}"]
        if not turns_raw:  # an announced session with no dialogue
            continue
        date_time = conv.get(f"session_{n}_date_time")
        if not date_time:
            raise ValueError(f"{sample_id}: session_{n} has no session_{n}_date_time")
        turns = tuple(_parse_turn(t, f"{sample_id} session_{n}[{i}]") for i, t in enumerate(turns_raw))
        sessions.append(
            Session(
                index=n,
                date_time=str(date_time),
                timestamp=parse_locomo_datetime(str(date_time)),
                turns=turns,
            )
        )
    if not sessions:
        raise ValueError(f"{sample_id}: no session has any dialogue")
    qa = tuple(_parse_qa(q, f"{sample_id} qa[{i}]") for i, q in enumerate(raw.get("qa") or []))
    observations: dict[str, list[tuple[str, str]]] = {}
    for per_session in (raw.get("observation") or {}).values():
        if not isinstance(per_session, dict):
            continue
        for speaker, facts in per_session.items():
            for fact in facts or []:
                if isinstance(fact, list | tuple) and len(fact) >= 2:
                    for dia_id in str(fact[1]).split(";"):
                        observations.setdefault(dia_id.strip(), []).append((str(speaker), str(fact[0])))
    return Conversation(
        sample_id=sample_id,
        speaker_a=str(conv["speaker_a"]),
        speaker_b=str(conv["speaker_b"]),
        sessions=tuple(sessions),
        qa=qa,
        observations={k: tuple(v) for k, v in observations.items()},
    )


def load_locomo(path: str | os.PathLike[str]) -> list[Conversation]:
    """Load a file with the ``locomo10.json`` layout. Raises :class:`DatasetError`."""
    path = Path(path)
    raw = _read_json(path)
    if isinstance(raw, dict) and "conversation" in raw:  # a single sample
        raw = [raw]
    if not isinstance(raw, list):
        raise DatasetError(path, "expected a JSON list of LoCoMo samples")
    conversations = []
    for i, sample in enumerate(raw):
        try:
            conversations.append(parse_sample(sample))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise DatasetError(path, f"sample {i}: {exc}") from exc
    return conversations


def _select(conversations: Iterable[Conversation], keep) -> list[Conversation]:
    return [c for c in conversations if keep(c.sample_id)]


def load_split(name: str, root: str | os.PathLike[str] | None = None) -> list[Conversation]:
    """Load a split: ``dev``, ``val``, ``train``, ``test``, ``paper-test`` or ``all``.

    ``root`` is a folder holding ``locomo_{train,val,dev}.json`` (and optionally
    the full ``locomo10.json``), or the path of a full ``locomo10.json`` from which
    the split is selected by sample id. Default: :func:`default_root`.
    ``test`` and ``paper-test`` need the full release.
    """
    if name not in SPLITS:
        raise DatasetError(root or default_root(), f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
    root = Path(root) if root is not None else default_root()
    held_out = SPLIT_IDS["train"] | SPLIT_IDS["val"] | SPLIT_IDS["dev"]
    if root.is_file():
        full = load_locomo(root)
    elif (root / FULL_FILE).is_file():
        full = load_locomo(root / FULL_FILE)
    elif root.is_dir():
        full = None
    else:
        raise DatasetError(root, "no such file or folder")
    if full is not None:
        if name in SPLIT_IDS:
            return _select(full, SPLIT_IDS[name].__contains__)
        if name == "test":
            return _select(full, lambda sid: sid not in held_out)
        if name == "paper-test":
            return _select(full, lambda sid: sid not in SPLIT_IDS["train"] | SPLIT_IDS["val"])
        return list(full)
    if name in SPLIT_FILES:
        return load_locomo(root / SPLIT_FILES[name])
    if name == "all":
        return [c for split in ("train", "val", "dev") for c in load_locomo(root / SPLIT_FILES[split])]
    raise DatasetError(
        root,
        f"split {name!r} needs the full public release: pass the path of locomo10.json "
        f"(or put it in this folder as {FULL_FILE})",
    )
