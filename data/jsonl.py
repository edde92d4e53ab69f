"""A plain JSONL format for evaluating on your own conversations.

One JSON object per line; ``type`` says what the line is. Lines of several
conversations may be mixed; ``sample_id`` ties them together and the file
order of turns is the conversation order.

``conversation`` (optional header; without it the speakers are the first two
names seen)::

    {"type": "conversation", "sample_id": "c1", "speaker_a": "Ann", "speaker_b": "Bo"}

``turn`` (required: ``sample_id``, ``session``, ``date_time``, ``speaker``, ``text``)::

    {"type": "turn", "sample_id": "c1", "session": 1, "date_time": "1:56 pm on 8 May, 2023",
     "speaker": "Ann", "text": "I moved to Lyon last week.",
     "dia_id": "D1:1", "blip_caption": null, "timestamp": "2023-05-08T13:56:00"}

``date_time`` is LoCoMo's form or ISO-8601; every turn of a session carries the
same one. ``dia_id`` defaults to ``D<session>:<n>``; ``timestamp`` defaults to
``date_time`` parsed.

``qa`` (required: ``sample_id``, ``question``, ``answer``)::

    {"type": "qa", "sample_id": "c1", "question": "Where does Ann live?", "answer": "Lyon",
     "category": 4, "evidence": ["D1:1"], "adversarial_answer": null, "tags": ["current"]}

``category`` defaults to 4 (single-hop); see :data:`data.schema.CATEGORIES`.

``observation`` (optional: a fact derived from a turn, for extraction training)::

    {"type": "observation", "sample_id": "c1", "dia_id": "D1:1", "speaker": "Ann", "fact": "Ann lives in Lyon."}

``edit`` (optional: what a perfect Memory Manager does with a turn's fact, for
manager training; ``target`` is the dia_id whose memory it changes)::

    {"type": "edit", "sample_id": "c1", "dia_id": "D3:2", "op": "UPDATE", "text": "Ann moved to Paris.",
     "target": "D1:1"}

A ``qa`` line may carry ``superseded_values`` and ``current_values`` (see
:class:`data.schema.QA`).

Unknown keys are refused (they are usually typos); errors name the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from data.schema import QA, Conversation, DatasetError, MemoryEdit, Session, Turn, parse_locomo_datetime

__all__ = ["load_jsonl", "save_jsonl", "conversation_lines"]

_KEYS: dict[str, tuple[set[str], set[str]]] = {  # type -> (required, optional)
    "conversation": ({"sample_id"}, {"speaker_a", "speaker_b"}),
    "turn": ({"sample_id", "session", "date_time", "speaker", "text"}, {"dia_id", "blip_caption", "timestamp"}),
    "qa": ({"sample_id", "question", "answer"},
           {"category", "evidence", "adversarial_answer", "tags", "superseded_values", "current_values"}),
    "observation": ({"sample_id", "dia_id", "speaker", "fact"}, set()),
    "edit": ({"sample_id", "dia_id", "op"}, {"text", "target"}),
}


class _Builder:
    def __init__(self, sample_id: str):
        self.sample_id = sample_id
        self.speakers: list[str] = []
        self.header: dict[str, Any] = {}
        self.sessions: dict[int, dict[str, Any]] = {}
        self.qa: list[QA] = []
        self.observations: dict[str, list[tuple[str, str]]] = {}
        self.edits: dict[str, list[MemoryEdit]] = {}

    def build(self) -> Conversation:
        speaker_a = self.header.get("speaker_a") or (self.speakers[0] if self.speakers else "")
        speaker_b = self.header.get("speaker_b") or (self.speakers[1] if len(self.speakers) > 1 else "")
        if not self.sessions:
            raise ValueError(f"conversation {self.sample_id!r} has no turns")
        sessions = tuple(
            Session(index=i, date_time=s["date_time"], timestamp=s["timestamp"], turns=tuple(s["turns"]))
            for i, s in sorted(self.sessions.items())
        )
        return Conversation(
            sample_id=self.sample_id,
            speaker_a=speaker_a,
            speaker_b=speaker_b,
            sessions=sessions,
            qa=tuple(self.qa),
            observations={k: tuple(v) for k, v in self.observations.items()},
            edits={k: tuple(v) for k, v in self.edits.items()},
        )


def _add_line(builder: _Builder, kind: str, obj: dict[str, Any]) -> None:
    if kind == "conversation":
        builder.header = obj
    elif kind == "turn":
        index = int(obj["session"])
        date_time = str(obj["date_time"])
        timestamp = obj.get("timestamp") or parse_locomo_datetime(date_time)
        session = builder.sessions.setdefault(index, {"date_time": date_time, "timestamp": timestamp, "turns": []})
        if session["date_time"] != date_time:
            raise ValueError(f"session {index} has two date_time values: {session['date_time']!r} and {date_time!r}")
        speaker = str(obj["speaker"])
        if speaker not in builder.speakers:
            builder.speakers.append(speaker)
        dia_id = obj.get("dia_id") or f"D{index}:{len(session['turns']) + 1}"
        session["turns"].append(
            Turn(dia_id=str(dia_id), speaker=speaker, text=str(obj["text"]), blip_caption=obj.get("blip_caption"))
        )
    elif kind == "qa":
        builder.qa.append(
            QA(
                question=str(obj["question"]),
                answer=str(obj["answer"]),
                category=int(obj.get("category", 4)),
                evidence=tuple(str(e) for e in obj.get("evidence") or ()),
                adversarial_answer=obj.get("adversarial_answer"),
                tags=tuple(str(t) for t in obj.get("tags") or ()),
                superseded_values=tuple(str(v) for v in obj.get("superseded_values") or ()),
                current_values=tuple(str(v) for v in obj.get("current_values") or ()),
            )
        )
    elif kind == "edit":
        edit = MemoryEdit(op=obj["op"], text=obj.get("text"), target=obj.get("target"))
        builder.edits.setdefault(str(obj["dia_id"]), []).append(edit)
    else:  # observation
        builder.observations.setdefault(str(obj["dia_id"]), []).append((str(obj["speaker"]), str(obj["fact"])))


def load_jsonl(path: str | os.PathLike[str]) -> list[Conversation]:
    """Read the format above. Raises :class:`DatasetError` naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "no such file")
    builders: dict[str, _Builder] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("a line must be a JSON object")
                kind = obj.pop("type", None)
                if kind not in _KEYS:
                    raise ValueError(f"'type' must be one of {', '.join(_KEYS)}, got {kind!r}")
                required, optional = _KEYS[kind]
                missing = required - obj.keys()
                unknown = obj.keys() - required - optional
                if missing:
                    raise ValueError(f"{kind} line lacks {', '.join(sorted(missing))}")
                if unknown:
                    raise ValueError(f"{kind} line has unknown keys {', '.join(sorted(unknown))}")
                sid = str(obj["sample_id"])
                _add_line(builders.setdefault(sid, _Builder(sid)), kind, obj)
            except ValueError as exc:  # JSONDecodeError and pydantic errors are ValueErrors
                raise DatasetError(path, f"{where}: {exc}") from exc
    if not builders:
        raise DatasetError(path, "no conversations in file")
    out = []
    for builder in builders.values():
        try:
            out.append(builder.build())
        except ValueError as exc:
            raise DatasetError(path, str(exc)) from exc
    return out


def conversation_lines(conv: Conversation) -> Iterable[dict[str, Any]]:
    """The JSONL objects of one conversation, in file order."""
    sid = conv.sample_id
    yield {"type": "conversation", "sample_id": sid, "speaker_a": conv.speaker_a, "speaker_b": conv.speaker_b}
    for session, turn in conv.turns():
        line = {
            "type": "turn", "sample_id": sid, "session": session.index, "date_time": session.date_time,
            "timestamp": session.timestamp, "dia_id": turn.dia_id, "speaker": turn.speaker, "text": turn.text,
        }
        if turn.blip_caption is not None:
            line["blip_caption"] = turn.blip_caption
        yield line
    for qa in conv.qa:
        yield {
            "type": "qa", "sample_id": sid, "question": qa.question, "answer": qa.answer,
            "category": qa.category, "evidence": list(qa.evidence),
            "adversarial_answer": qa.adversarial_answer, "tags": list(qa.tags),
            **({"superseded_values": list(qa.superseded_values), "current_values": list(qa.current_values)}
               if qa.superseded_values or qa.current_values else {}),
        }
    for dia_id, facts in conv.observations.items():
        for speaker, fact in facts:
            yield {"type": "observation", "sample_id": sid, "dia_id": dia_id, "speaker": speaker, "fact": fact}
    for dia_id, edits in conv.edits.items():
        for edit in edits:
            yield {"type": "edit", "sample_id": sid, "dia_id": dia_id, "op": edit.op, "text": edit.text,
                   "target": edit.target}


def save_jsonl(conversations: Iterable[Conversation], path: str | os.PathLike[str]) -> None:
    """Write ``conversations`` in the format above (UTF-8, one object per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for conv in conversations:
            for obj in conversation_lines(conv):
                fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
