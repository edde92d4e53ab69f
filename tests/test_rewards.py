"""The GRPO rewards: table tests of the dense manager reward and the answer reward."""

from __future__ import annotations

import pytest

from data.synthetic import generate_dataset
from eval.scoring import MISSING_MARKER_PENALTY, QUOTE_BONUS, AnswerScore, answer_reward
from training.episodes import GoldReplay, answer_episodes, manager_episodes
from training.rewards import (
    DUPLICATE_PENALTY, GUARD_PENALTY, INVALID_REWARD, LOSS_PENALTY, STALE_PENALTY, AnswerReward, ManagerReward, ManagerScorer, RewardStats,
    completion_text, shuffled_within_groups,
)


@pytest.fixture(scope="module")
def episodes():
    from memory_store import HashingEmbedder

    return manager_episodes(generate_dataset(3, seed=1), GoldReplay(), HashingEmbedder(256))


def _first(episodes, kind, pred=lambda e: True):
    return next(e for e in episodes if e.kind == kind and pred(e))


@pytest.mark.parametrize("raw", ["", "   ", "I think we should remember this", "UPDATE 9: x", "DELETE 0\nDELETE 0",
                                 "ADD: the weather on Mars is cold and red"])
def test_invalid_output_is_minus_one(episodes, raw):
    e = _first(episodes, "change")
    s = ManagerScorer().score(e, raw)
    assert not s.valid and s.reward == INVALID_REWARD and s.error


def test_superseded_value_is_penalised(episodes):
    """A move ADDed next to the old city leaves "lives in <old>" shown to the "now" question."""
    e = _first(episodes, "change", lambda e: any(q.superseded_values for q in e.questions))
    scorer = ManagerScorer()
    gold = scorer.score(e, e.target())
    stale_add = scorer.score(e, "\n".join(f"ADD: {f}" for f in e.item.facts))
    noop = scorer.score(e, "NOOP")
    assert gold.valid and stale_add.valid and noop.valid
    assert gold.stale == 0 and stale_add.stale > 0 and noop.stale > 0
    assert stale_add.recall == pytest.approx(gold.recall)  # the same content is retrievable...
    assert stale_add.reward == pytest.approx(stale_add.recall - STALE_PENALTY * stale_add.stale)  # ...but stale
    assert gold.reward > stale_add.reward > noop.reward > INVALID_REWARD


def test_duplicate_add_is_penalised(episodes):
    e = _first(episodes, "repeat")
    scorer = ManagerScorer()
    noop, dup = scorer.score(e, "NOOP"), scorer.score(e, f"ADD: {e.item.facts[0]}")
    assert dup.duplicates == 1 and noop.duplicates == 0
    assert dup.reward == pytest.approx(noop.reward - DUPLICATE_PENALTY)
    shown = next(i for i, h in enumerate(e.hits) if h.text == e.item.facts[0])
    restated = scorer.score(e, f"UPDATE {shown}: {e.item.facts[0]}")  # a no-op edit
    assert restated.valid and restated.duplicates == 1
    assert restated.reward == pytest.approx(noop.reward - DUPLICATE_PENALTY)


def test_destroying_another_questions_answer_is_penalised(episodes):
    """UPDATE of a memory that holds another question's answer, with unrelated-but-grounded text."""
    scorer = ManagerScorer()
    for e in episodes:
        if not e.hits or e.kind != "new":
            continue
        for i, hit in enumerate(e.hits):
            fact_words = set(e.item.facts[0].split()) & set(hit.text.split())
            if not fact_words:
                continue
            s = scorer.score(e, f"UPDATE {i}: {e.item.facts[0]}")
            if s.valid and s.guard > 0:
                add = scorer.score(e, e.target())
                assert add.guard == 0 and add.reward > s.reward
                return
    pytest.fail("no destructive update found in the episodes")


def test_overwriting_a_memory_costs_the_content_it_destroys(episodes):
    """UPDATE of an unrelated memory with a new fact: retrievable, but what the old memory said is gone."""
    e = _first(episodes, "new", lambda e: len(e.hits) >= 2 and e.questions)
    scorer = ManagerScorer()
    add = scorer.score(e, e.target())
    for i in range(len(e.hits)):
        over = scorer.score(e, f"UPDATE {i}: {e.item.facts[0]}")
        if over.valid:
            assert over.lost > 0 and add.lost == 0
            assert over.reward == pytest.approx(max(-0.9, (over.recall or 0) - LOSS_PENALTY * over.lost
                                                    - GUARD_PENALTY * over.guard))
            assert add.reward > over.reward
            return
    pytest.fail("no valid overwrite in the episode")


def test_add_beats_noop_for_a_new_linked_fact(episodes):
    e = _first(episodes, "new", lambda e: e.questions and e.hits)
    scorer = ManagerScorer()
    add, noop = scorer.score(e, e.target()), scorer.score(e, "NOOP")
    assert add.recall > noop.recall and add.reward > noop.reward


def test_trl_reward_contract_and_stats(episodes):
    reward = ManagerReward(episodes)
    e = _first(episodes, "change")
    logged = {}
    completions = [[{"role": "assistant", "content": e.target()}], "garbage", "NOOP"]
    values = reward(completions, episode_id=[e.id] * 3, log_metric=lambda k, v: logged.setdefault(k, v))
    assert values[1] == INVALID_REWARD and values[0] > values[2] > values[1]
    assert logged["manager_dense/valid_rate"] == pytest.approx(2 / 3)
    window = reward.stats.window()
    assert window["valid_rate"] == pytest.approx(2 / 3) and window["ops_noop"] == pytest.approx(1 / 3)
    assert reward.stats.window() == {}  # a window is read once
    assert reward.stats.invalid == 1 and reward.stats.last_invalid == "garbage"
    with pytest.raises(ValueError, match="episode_id"):
        reward(["NOOP"])


@pytest.mark.parametrize(
    "score, metric, expected",
    [
        (AnswerScore("Paris", True, 1.0, 1.0, 1.0, 1), "f1", 1.0 + QUOTE_BONUS),
        (AnswerScore("Paris", True, 1.0, 1.0, 0.0, 0), "f1", 1.0),
        (AnswerScore("in Paris", True, 0.5, 0.0, 0.0, 1), "em", 0.0),
        (AnswerScore("in Paris", True, 0.5, 0.0, 0.5, 1), "f1", 0.5 + QUOTE_BONUS * 0.5),
        (AnswerScore("Paris", False, 1.0, 1.0, 0.0, 0), "f1", 1.0 - MISSING_MARKER_PENALTY),
        (AnswerScore("", False, 0.0, 0.0, 0.0, 0), "f1", -MISSING_MARKER_PENALTY),
    ],
)
def test_answer_reward_table(score, metric, expected):
    assert answer_reward(score, metric) == pytest.approx(expected)


def test_answer_reward_reads_replies_like_the_product(embedder):
    eps = answer_episodes(generate_dataset(1, seed=2), GoldReplay(), embedder, count_tokens=None)
    e = next(x for x in eps if x.qa.category == 4)
    gold = e.qa.answer
    holder = next((i for i, m in enumerate(e.shown) if gold.lower() in m.text.lower()), 0)
    reward = AnswerReward(eps)
    good = f"Relevant: [{holder}] {e.shown[holder].text}\n**Answer:** {gold}"
    values = reward([good, f"**Answer:** {gold}", gold, "Relevant: [0]\n**Answer:** banana"], episode_id=[e.id] * 4)
    assert values[0] > values[1] > values[2] and values[1] > values[3]
    assert values[2] == pytest.approx(1.0 - MISSING_MARKER_PENALTY)  # right answer, no marker: penalised, counted
    assert reward.stats.invalid == 1


def test_shuffled_control_keeps_each_groups_rewards():
    def reward(completions, **kw):
        return [float(i) for i in range(len(completions))]

    shuffled = shuffled_within_groups(reward, 4, seed=1)
    out = shuffled(list(range(8)))
    assert sorted(out[:4]) == [0, 1, 2, 3] and sorted(out[4:]) == [4, 5, 6, 7]
    assert out != [float(i) for i in range(8)]
    assert shuffled.__name__ == "reward_shuffled"
    with pytest.raises(ValueError):
        shuffled(list(range(6)))


def test_completion_text_and_stats():
    assert completion_text([{"role": "assistant", "content": "NOOP"}]) == "NOOP"
    assert completion_text({"content": "x"}) == "x" and completion_text(None) == ""
    stats = RewardStats()
    stats.record(True, recall=0.5)
    stats.record(False, "bad", recall=None)
    assert stats.window() == {"recall": 0.5, "valid_rate": 0.5} and stats.rate == 0.5
