"""The LoCoMo loader against the shared files, and its error handling."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from data.locomo import default_root, load_locomo, load_split, parse_sample
from data.schema import CATEGORIES, NOT_MENTIONED, DatasetError, parse_locomo_datetime

ROOT = default_root()
needs_data = pytest.mark.skipif(not (ROOT / "locomo_train.json").is_file(), reason="shared LoCoMo files not present")


def test_categories_pinned():
    assert CATEGORIES == {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


@pytest.mark.parametrize(
    "raw, iso",
    [
        ("1:56 pm on 8 May, 2023", "2023-05-08T13:56:00"),
        ("12:48 am on 1 February, 2023", "2023-02-01T00:48:00"),
        ("12:09 pm on 2 June, 2023", "2023-06-02T12:09:00"),
        ("10:37 am on 27 June, 2023", "2023-06-27T10:37:00"),
        ("2023-05-08T13:56:00", "2023-05-08T13:56:00"),
        ("8 May, 2023", "2023-05-08T00:00:00"),
    ],
)
def test_parse_datetime(raw, iso):
    assert parse_locomo_datetime(raw) == iso


def test_parse_datetime_rejects_garbage():
    with pytest.raises(ValueError):
        parse_locomo_datetime("sometime last spring")


@needs_data
def test_train_split_counts():
    (conv,) = load_split("train")
    assert conv.sample_id == "conv-26"
    counts = Counter(q.category for q in conv.questions())
    assert [counts[c] for c in (1, 2, 3, 4)] == [32, 37, 13, 70]
    assert len(conv.questions()) == 152
    assert 5 not in counts
    assert len(conv.questions(include_adversarial=True)) == 152 + 47


@needs_data
def test_val_and_dev_counts():
    (val,) = load_split("val")
    (dev,) = load_split("dev")
    assert (val.sample_id, len(val.questions())) == ("conv-30", 81)
    assert (dev.sample_id, len(dev.questions())) == ("conv-41", 152)
    assert [c.sample_id for c in load_split("all")] == ["conv-26", "conv-30", "conv-41"]


@needs_data
def test_quirks_of_the_release():
    (conv,) = load_split("train")
    # integer answers become strings
    assert any(q.answer == "2022" for q in conv.qa)
    assert all(isinstance(q.answer, str) for q in conv.qa)
    # conv-26 announces 35 session dates but has 19 dialogues: the empty ones are skipped
    assert len(conv.sessions) == 19
    assert [s.index for s in conv.sessions] == list(range(1, 20))
    assert conv.sessions[0].timestamp == "2023-05-08T13:56:00"
    assert conv.n_turns == sum(1 for _ in conv.turns()) == 419
    first_session, first_turn = next(conv.turns())
    assert (first_session.index, first_turn.dia_id) == (1, "D1:1")
    # adversarial questions keep the trap answer; gold is the file's or "not mentioned"
    adv = [q for q in conv.qa if q.category == 5]
    assert all(q.adversarial_answer for q in adv)
    assert any(q.answer == NOT_MENTIONED for q in adv)
    # "D8:6; D9:17" evidence is split
    assert all(";" not in e for q in conv.qa for e in q.evidence)
    assert conv.observations["D1:3"][0][0] == "Caroline"
    assert any(t.blip_caption for _, t in conv.turns())


@needs_data
def test_test_split_needs_full_release(tmp_path):
    with pytest.raises(DatasetError, match="locomo10.json"):
        load_split("test")
    # a full release (here: the three shared samples plus a fake fourth) selects by id
    samples = []
    for name in ("locomo_train.json", "locomo_val.json", "locomo_dev.json"):
        samples += json.loads((ROOT / name).read_text())
    extra = json.loads(json.dumps(samples[0]))
    extra["sample_id"] = "conv-99"
    full = tmp_path / "locomo10.json"
    full.write_text(json.dumps(samples + [extra]))
    assert [c.sample_id for c in load_split("test", full)] == ["conv-99"]
    assert [c.sample_id for c in load_split("paper-test", full)] == ["conv-41", "conv-99"]
    assert [c.sample_id for c in load_split("dev", tmp_path)] == ["conv-41"]
    assert len(load_split("all", full)) == 4


def test_errors_name_path_and_reason(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json.*not valid JSON"):
        load_locomo(bad)
    with pytest.raises(DatasetError, match="no such file"):
        load_locomo(tmp_path / "missing.json")
    bad.write_text(json.dumps([{"sample_id": "x", "conversation": {"speaker_a": "A"}}]))
    with pytest.raises(DatasetError, match="sample 0: x: conversation needs speaker_a and speaker_b"):
        load_locomo(bad)
    with pytest.raises(DatasetError, match="unknown split"):
        load_split("nope", tmp_path)


def test_parse_sample_minimal():
    conv = parse_sample(
        {
            "sample_id": "s",
            "conversation": {
                "speaker_a": "A", "speaker_b": "B",
                "session_1_date_time": "1:00 pm on 1 May, 2023",
                "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}],
                "session_2_date_time": "1:00 pm on 2 May, 2023",
                "session_2": [],
            },
            "qa": [{"question": "q?", "answer": 7, "evidence": ["D1:1"], "category": 1}],
        }
    )
    assert len(conv.sessions) == 1 and conv.qa[0].answer == "7"
    assert conv.qa[0].category_name == "multi-hop"
