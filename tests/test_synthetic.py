"""The synthetic generator: determinism, coverage, shape; and the JSONL round trip."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from data.jsonl import load_jsonl, save_jsonl
from data.schema import CATEGORIES, DatasetError
from data.synthetic import format_date, generate, generate_dataset


def test_same_seed_same_output_different_seed_differs():
    assert generate(7) == generate(7)
    assert generate(7).model_dump_json() == generate(7).model_dump_json()
    assert generate(7) != generate(8)
    assert generate_dataset(3, seed=1) == generate_dataset(3, seed=1)
    assert generate_dataset(3, seed=1) != generate_dataset(3, seed=2)


@pytest.mark.parametrize("seed", range(12))
def test_every_category_and_current_questions(seed):
    conv = generate(seed)
    assert len(conv.qa) == 8
    assert {q.category for q in conv.qa} == set(CATEGORIES)
    assert any("current" in q.tags for q in conv.qa)
    assert all(q.category in CATEGORIES for q in conv.qa)


def test_default_is_small_and_well_formed():
    conv = generate(0)
    assert len(conv.sessions) == 4
    assert 4 <= conv.n_turns / len(conv.sessions) <= 11
    dia_ids = [t.dia_id for _, t in conv.turns()]
    assert len(set(dia_ids)) == len(dia_ids)
    for qa in conv.qa:
        assert set(qa.evidence) <= set(dia_ids)
    # turns alternate between the two speakers
    for session in conv.sessions:
        speakers = [t.speaker for t in session.turns]
        assert all(a != b for a, b in zip(speakers, speakers[1:]))
        assert set(speakers) <= {conv.speaker_a, conv.speaker_b}
    stamps = [datetime.fromisoformat(s.timestamp) for s in conv.sessions]
    assert stamps == sorted(stamps)


def test_full_pool_and_relative_dates_resolved():
    for seed in range(20):
        conv = generate(seed, n_questions=0)
        assert len(conv.qa) == 17
        turn_text = {t.dia_id: (s, t.text) for s, t in conv.turns()}
        for qa in conv.qa:
            if qa.category != 2:
                continue
            session, text = turn_text[qa.evidence[0]]
            day = datetime.fromisoformat(session.timestamp)
            gold = datetime.strptime(qa.answer, "%d %B %Y")
            assert (day - gold).days in range(1, 8), (text, session.date_time, qa.answer)
            assert format_date(gold) == qa.answer
            if "yesterday" in text:
                assert (day.date() - gold.date()).days == 1
            if "last Saturday" in text:
                assert gold.weekday() == 5


def test_changes_come_after_the_fact_they_change():
    for seed in range(20):
        conv = generate(seed, n_questions=0)
        order = {t.dia_id: i for i, (_, t) in enumerate(conv.turns())}
        history = {q.question: q for q in conv.qa if "history" in q.tags and q.category == 1}
        for qa in history.values():
            first, second = qa.evidence
            assert order[first] < order[second]


def test_many_and_one_session():
    assert len(generate(1, n_sessions=1).sessions) == 1
    conv = generate(2, n_sessions=12)
    assert len(conv.sessions) == 12 and all(s.turns for s in conv.sessions)
    with pytest.raises(ValueError):
        generate(0, n_sessions=0)


def test_jsonl_round_trip(tmp_path):
    convs = generate_dataset(3, seed=5)
    path = tmp_path / "convs.jsonl"
    save_jsonl(convs, path)
    assert load_jsonl(path) == convs
    assert all(json.loads(line)["type"] for line in path.read_text().splitlines())


def test_jsonl_minimal_and_errors(tmp_path):
    path = tmp_path / "mine.jsonl"
    lines = [
        {"type": "turn", "sample_id": "c1", "session": 1, "date_time": "2023-05-08T13:56:00", "speaker": "Ann", "text": "I moved to Lyon."},
        {"type": "turn", "sample_id": "c1", "session": 1, "date_time": "2023-05-08T13:56:00", "speaker": "Bo", "text": "Nice!"},
        {"type": "qa", "sample_id": "c1", "question": "Where does Ann live?", "answer": "Lyon"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    (conv,) = load_jsonl(path)
    assert (conv.speaker_a, conv.speaker_b) == ("Ann", "Bo")
    assert [t.dia_id for _, t in conv.turns()] == ["D1:1", "D1:2"]
    assert conv.qa[0].category == 4
    path.write_text(json.dumps({**lines[0], "txt": "typo"}) + "\n")
    with pytest.raises(DatasetError, match="line 1: .*unknown keys txt"):
        load_jsonl(path)
    path.write_text(json.dumps({**lines[2], "category": 9}) + "\n")
    with pytest.raises(DatasetError, match="line 1"):
        load_jsonl(path)
    path.write_text("nope\n")
    with pytest.raises(DatasetError, match="mine.jsonl: line 1"):
        load_jsonl(path)
