"""eval.scoring and eval.stats: the one scorer and the paired bootstrap, as tables."""

from __future__ import annotations

import pytest

from eval.scoring import answer_metrics, answer_recall, best_score, memory_view, score_answer_reply, states_superseded
from eval.stats import paired_bootstrap
from memory_store import MemoryRecord


def _m(text, when="2023-05-08T10:00:00"):
    return MemoryRecord(id=1, user_id="u", text=text, created_at=when, updated_at=when, hash="h")


@pytest.mark.parametrize(
    "gold, memories, expected",
    [
        ("Lisbon", ["Alice lives in Lisbon."], 1.0),
        ("Lisbon", ["Alice lives in Paris."], 0.0),
        ("a cat named Tom, a dog named Rex", ["Alice has a cat named Tom."], 0.6),  # cat named tom / dog rex
        ("No", ["anything"], None),  # no content word: says nothing about which memory matters
        ("8 May 2023", [_m("Alice ran a marathon")], 1.0),  # the shown date counts (may, 2023)
        ("adopting", ["She adopted a dog"], 1.0),  # five-letter stems
    ],
)
def test_answer_recall(gold, memories, expected):
    got = answer_recall(gold, memories)
    assert got is None if expected is None else got == pytest.approx(expected)


def test_memory_view_and_metrics():
    assert memory_view(_m("x")) == "8 May 2023: x" and memory_view("plain") == "plain"
    m = answer_metrics("in Paris", "Paris", 4)
    assert set(m) == {"f1_mem0", "f1_locomo", "bleu1", "em"} and m["em"] == 0 and 0 < m["f1_mem0"] < 1
    assert best_score("Paris", ["Rome", "paris"], "em") == 1.0
    with pytest.raises(ValueError):
        best_score("x", "y", "bleu")


@pytest.mark.parametrize(
    "memories, stale",
    [
        (["Alice lives in Lisbon."], True),
        (["Alice moved from Lisbon to Denver."], False),  # names the current value too
        (["Alice lives in Denver."], False),
        (["Alice visited Lisbonia."], False),  # whole words only
        ([], False),
    ],
)
def test_states_superseded(memories, stale):
    assert states_superseded(["Lisbon"], ["Denver"], memories) is stale


def test_score_answer_reply_reads_like_the_product():
    shown = [_m("Alice lives in Lisbon"), _m("Alice has a cat")]
    s = score_answer_reply("Relevant: [0] 8 May 2023: Alice lives in Lisbon\n**Answer:** Lisbon", shown, "Lisbon")
    assert s.valid and s.f1 == 1.0 and s.quoted == 1 and s.quoted_recall == 1.0
    s = score_answer_reply("Lisbon", shown, ["Lisbon", "Portugal"])
    assert not s.valid and s.f1 == 1.0 and s.quoted == 0  # the product's fallback answer, counted invalid


def test_paired_bootstrap():
    a = [0.0] * 50
    b = [1.0] * 25 + [0.0] * 25
    r = paired_bootstrap(a, b, seed=0)
    assert r["diff"] == 0.5 and r["low"] > 0 and r["excludes_zero"] and r["n"] == 50
    same = paired_bootstrap(b, b)
    assert same["diff"] == 0 and not same["excludes_zero"]
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
