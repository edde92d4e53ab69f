"""Table tests for the metrics, with hand-computed values."""

from __future__ import annotations

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from eval.metrics import (
    bleu1,
    exact_match,
    f1_for,
    judge,
    judge_many,
    judge_messages,
    locomo_f1,
    locomo_normalize,
    mem0_tokens,
    parse_judge_label,
    token_f1,
)
from memory_agent.errors import InvalidModelOutput


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("Paris", "Paris", 1.0),
        ("paris.", "Paris", 1.0),  # case and punctuation
        ("PARIS!?", "paris", 1.0),
        ("", "Paris", 0.0),  # empty prediction
        ("Paris", "", 0.0),  # empty gold
        ("...", "Paris", 0.0),  # only punctuation
        ("the cat sat", "the cat", 0.8),  # P = 2/3, R = 1
        ("cat cat cat", "cat dog", 2 * 1 * 0.5 / 1.5),  # sets: {cat} vs {cat, dog}
        ("7 May 2023", "May 7, 2023", 1.0),  # order does not matter for sets
        ("London", "Paris", 0.0),
        ("dogs", "dog", 0.0),  # no stemming in the Mem0 metric
    ],
)
def test_token_f1(pred, gold, expected):
    assert token_f1(pred, gold) == pytest.approx(expected)


def test_mem0_tokens_replace_punctuation_with_space():
    assert mem0_tokens("Hello,world! It's 5.30?") == ["hello", "world", "it's", "5", "30"]


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("the cat sat on the mat", "the cat is on the mat"),
        ("Paris", "Paris France"),
        ("a b c d e f", "a"),
        ("Yes, she went to the beach twice.", "twice"),
        ("x", "y"),
    ],
)
def test_bleu1_parity_with_nltk(pred, gold):
    direct = sentence_bleu(
        [mem0_tokens(gold)], mem0_tokens(pred), weights=(1, 0, 0, 0), smoothing_function=SmoothingFunction().method1
    )
    assert bleu1(pred, gold) == pytest.approx(direct)


def test_bleu1_values():
    assert bleu1("Paris", "Paris") == pytest.approx(1.0)
    assert bleu1("", "Paris") == 0.0 and bleu1("Paris", "") == 0.0
    # precision 1, brevity penalty exp(1 - 2/1)
    assert bleu1("Paris", "Paris France") == pytest.approx(0.36787944, rel=1e-6)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The cat, and a dog!", "cat dog"),
        ("An apple", "apple"),
        ("  Lots   of  space ", "lots of space"),
        ("there", "there"),  # "the" only as a word
    ],
)
def test_locomo_normalize(text, expected):
    assert locomo_normalize(text) == expected


@pytest.mark.parametrize(
    "pred, gold, category, expected",
    [
        ("running", "runs", 4, 1.0),  # Porter stems both to "run"
        ("The dogs", "dog", 4, 1.0),
        ("cat cat", "cat", 4, 2 * 0.5 * 1 / 1.5),  # multiset: P = 1/2, R = 1
        ("", "cat", 4, 0.0),
        ("cat", "", 4, 0.0),
        # multi-hop: gold parts take their best predicted part, then the mean
        ("dog, cat", "cat, dog", 1, 1.0),
        ("dog", "cat, dog", 1, 0.5),
        ("dog, fish", "cat, dog, fish", 1, 2 / 3),
        ("a red car, blue bike", "red car", 1, 1.0),
        # open-domain: the gold keeps what precedes the first ";"
        ("Likely yes", "Likely yes; she loves hiking", 3, 1.0),
        # adversarial: "not mentioned" / "no information available"
        ("That is not mentioned in the conversation.", "Not mentioned", 5, 1.0),
        ("No information available", "x", 5, 1.0),
        ("Paris", "Not mentioned", 5, 0.0),
    ],
)
def test_locomo_f1(pred, gold, category, expected):
    assert locomo_f1(pred, gold, category) == pytest.approx(expected)


def test_locomo_f1_differs_from_mem0_f1():
    # commas split in multi-hop; the Mem0 metric sees one bag of tokens
    assert locomo_f1("dog", "cat, dog", 1) == pytest.approx(0.5)
    assert token_f1("dog", "cat, dog") == pytest.approx(2 / 3)
    assert f1_for("mem0")("dog", "cat, dog", 1) == pytest.approx(2 / 3)
    assert f1_for("locomo")("dog", "cat, dog", 1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        f1_for("rouge")


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("Paris", "paris", 1.0),
        ("The Paris.", "paris", 1.0),
        ("Paris, France", "Paris France", 1.0),
        ("Paris France", "Paris", 0.0),
        ("", "Paris", 0.0),
        ("running", "run", 0.0),  # no stemming in EM
    ],
)
def test_exact_match(pred, gold, expected):
    assert exact_match(pred, gold) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"label": "CORRECT"}', True),
        ('{"label": "WRONG"}', False),
        ('  {"label":"CORRECT"}\n', True),
        ('```json\n{"label": "WRONG"}\n```', False),
    ],
)
def test_parse_judge_label(raw, expected):
    assert parse_judge_label(raw) is expected


@pytest.mark.parametrize(
    "raw",
    ["CORRECT", '{"label": "correct"}', '{"label": "MAYBE"}', '{"label": "CORRECT", "why": "x"}', "[]", ""],
)
def test_parse_judge_label_strict(raw):
    with pytest.raises(InvalidModelOutput):
        parse_judge_label(raw)


class _Fake:
    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def generate(self, batch, *, max_new_tokens=256, temperature=0.0, stop=None):
        self.prompts.extend(batch)
        return [self.replies.pop(0) for _ in batch]


def test_judge_and_judge_many():
    llm = _Fake(['{"label": "CORRECT"}', '{"label": "WRONG"}', "garbage"])
    assert judge("When?", "7 May 2023", "May 7th, 2023", llm) is True
    assert judge_many([("q", "g", "p"), ("q2", "g2", "p2")], llm) == [False, None]
    messages = llm.prompts[0]
    assert messages[0]["role"] == "system" and "generous" in messages[0]["content"]
    assert "May 7th, 2023" in messages[1]["content"]
    assert judge_messages("q", "g", "p")[1]["content"].startswith("Question: q")
    with pytest.raises(InvalidModelOutput):
        judge("q", "g", "p", _Fake(["nope"]))
