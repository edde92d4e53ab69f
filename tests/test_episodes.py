"""Episode building with the product's own manager and answer code (hashing embedder, no model)."""

from __future__ import annotations

import pytest

from data.schema import QA, Conversation, Session, Turn
from data.synthetic import generate, generate_dataset
from memory_agent.answer import AnswerAgent
from memory_agent.errors import ConfigError
from memory_agent.manager import MemoryManager
from memory_agent.operations import AddOp, DeleteOp, NoopOp, UpdateOp
from training.episodes import (
    GoldReplay, TurnsReplay, answer_episodes, balanced, check_not_dev, load_conversations, manager_episodes, split_episodes,
    to_dataset,
)


@pytest.fixture(scope="module")
def synthetic():
    return generate_dataset(3, seed=1)


@pytest.fixture(scope="module")
def episodes(synthetic):
    from memory_store import HashingEmbedder

    return manager_episodes(synthetic, GoldReplay(), HashingEmbedder(256))


def test_synthetic_episodes_need_every_operation(episodes):
    kinds = {e.kind for e in episodes}
    assert {"new", "change", "repeat"} <= kinds
    ops = {type(op) for e in episodes for op in e.gold}
    assert {AddOp, UpdateOp, DeleteOp, NoopOp} <= ops


def test_gold_targets_are_what_the_product_accepts(episodes):
    """Every gold decision passes the product's parser and grounding check, on its own prompt."""
    for e in episodes:
        ops = MemoryManager.decide(e.item, e.hits, e.target())
        assert ops == e.gold


def test_change_targets_name_the_superseded_memory(episodes):
    for e in episodes:
        for op in e.gold:
            if isinstance(op, UpdateOp):
                old, new = e.hits[op.id].text, op.text
                assert old != new and set(old.lower().split()) & set(new.lower().split())
            if isinstance(op, DeleteOp):
                assert "dating" in e.hits[op.id].text  # the break-up ends the relationship memory
            if isinstance(op, NoopOp) and e.kind == "repeat":
                assert any(h.text == e.item.facts[0] for h in e.hits)


def test_episode_bank_is_the_bank_before_the_turn(episodes, synthetic):
    conv = next(c for c in synthetic if c.sample_id == episodes[0].conversation_id)
    for e in (x for x in episodes if x.conversation_id == conv.sample_id):
        stored = [r.text for r in e.store.list(e.user_id)]
        assert {h.id for h in e.hits} <= {r.id for r in e.store.list(e.user_id)}
        if e.kind == "new":
            assert not set(e.item.facts) & set(stored)  # the turn's own fact is not in the bank yet
        assert e.messages == MemoryManager.messages(e.item, e.hits)
        # the hits are what the product's manager retrieves on that bank
        assert [h.id for h in MemoryManager(None, e.store).retrieve([e.item], e.user_id)[0]] == [h.id for h in e.hits]


def test_linked_questions_and_guards(episodes, synthetic):
    change = next(e for e in episodes if e.kind == "change" and any(q.superseded_values for q in e.questions))
    conv = next(c for c in synthetic if c.sample_id == change.conversation_id)
    targets = {x.target for x in conv.edits[change.item.dia_id] if x.target}
    assert all(set(q.evidence) & ({change.item.dia_id} | targets) for q in change.questions)
    assert not {q.question for q in change.questions} & {q.question for q in change.guards}
    assert change.guards  # the rest of the conversation's questions guard against destructive edits


def _tiny_locomo() -> Conversation:
    turns = (Turn(dia_id="D1:1", speaker="Ann", text="I adopted a cat named Tom."),
             Turn(dia_id="D1:2", speaker="Bo", text="Nice! I started pottery."),
             Turn(dia_id="D1:3", speaker="Ann", text="Tom loves pottery too."))
    session = Session(index=1, date_time="1:00 pm on 1 May, 2023", timestamp="2023-05-01T13:00:00", turns=turns)
    return Conversation(sample_id="conv-x", speaker_a="Ann", speaker_b="Bo", sessions=(session,),
                        qa=(QA(question="What is Ann's cat called?", answer="Tom", evidence=("D1:1",), category=4),
                            QA(question="What did Bo start?", answer="pottery", evidence=("D1:2",), category=4)),
                        observations={"D1:1": (("Ann", "Ann adopted a cat named Tom."),),
                                      "D1:2": (("Bo", "Bo started pottery."),),
                                      "D1:3": (("Ann", "Ann adopted a cat named Tom."),)})


def test_observation_episodes_add_what_is_new_and_noop_repeats(embedder):
    eps = manager_episodes([_tiny_locomo()], GoldReplay(), embedder)
    # D1:1 goes into an empty bank (ADDed without the model, as the product does); D1:2 is linked;
    # D1:3 repeats D1:1's fact verbatim but is linked to no question and has no gold edit: no episode.
    assert [e.item.dia_id for e in eps] == ["D1:2"]
    assert eps[0].gold == [AddOp(text="Bo started pottery.")] and eps[0].kind == "new"
    turns = manager_episodes([_tiny_locomo()], TurnsReplay(), embedder)
    assert turns and turns[0].item.facts == ("Bo: Nice! I started pottery.",)


def test_answer_episodes_are_the_answer_agents_prompt(embedder, synthetic):
    eps = answer_episodes(synthetic[:1], GoldReplay(), embedder, count_tokens=None)
    assert len(eps) == len(synthetic[0].questions())
    # the final bank holds the updated facts, not the superseded ones
    texts = {m.text for e in eps for m in e.shown}
    assert any("moved from" in t for t in texts) and not any(t.endswith("is dating " + t.split()[-1]) for t in texts
                                                              if "dating" in t)
    e = eps[0]
    assert e.messages[-1]["content"].endswith(f"Question: {e.qa.question}")
    assert len(e.shown) == e.messages[-1]["content"].count("\n[")


def test_split_is_disjoint_and_seeded(episodes):
    a, b = split_episodes(episodes, 10, seed=3)
    assert len(a) == 10 and len(a) + len(b) == len(episodes)
    assert not {e.id for e in a} & {e.id for e in b}
    assert [e.id for e in a] == [e.id for e in split_episodes(episodes, 10, seed=3)[0]]
    assert [e.id for e in a] != [e.id for e in split_episodes(episodes, 10, seed=4)[0]]


def test_balanced_follows_the_kind_weights(episodes):
    from collections import Counter

    kinds = Counter(e.kind for e in episodes)
    n = 2 * min(kinds["new"], kinds["change"])
    even = Counter(e.kind for e in balanced(episodes, n, weights={"new": 1, "change": 1, "repeat": 0}))
    assert even == {"new": n // 2, "change": n // 2}
    skewed = Counter(e.kind for e in balanced(episodes, 8, weights={"new": 3, "change": 1, "repeat": 0}))
    assert skewed == {"new": 6, "change": 2}
    assert {e.kind for e in balanced(episodes, len(episodes), weights={"new": 1, "change": 0, "repeat": 0})} == {"new"}
    half = balanced(episodes, None, share=0.5)
    assert all(c <= max(1, kinds[k] // 2) for k, c in Counter(e.kind for e in half).items())


def test_dataset_rows(episodes):
    ds = to_dataset(episodes[:5])
    assert ds.column_names == ["prompt", "episode_id"]
    assert ds[0]["episode_id"] == episodes[0].id and ds[0]["prompt"] == episodes[0].messages
    with pytest.raises(ConfigError):
        to_dataset([])


def test_dev_is_refused_and_specs_load():
    with pytest.raises(ConfigError, match="conv-41"):
        check_not_dev([generate(0).model_copy(update={"sample_id": "conv-41"})])
    convs = load_conversations("synthetic:2:5")
    assert [c.sample_id for c in convs] == ["synthetic-500015", "synthetic-500016"]
    assert all(c.edits for c in convs)


def test_answer_agent_prompt_is_reused_not_copied(embedder, synthetic):
    """The episode prompt equals what the product's AnswerAgent builds on the same bank."""
    from memory_store import InMemoryStore

    eps = answer_episodes(synthetic[:1], GoldReplay(), embedder, count_tokens=None)
    # rebuild the final bank with the replay and ask the product directly
    from training.episodes import _walk

    bank = _walk(synthetic[0], GoldReplay(), embedder, None)
    assert isinstance(bank.store, InMemoryStore)
    messages, shown = AnswerAgent(None, bank.store).prompt(eps[3].qa.question, bank.user_id)
    assert messages == eps[3].messages and [m.id for m in shown] == [m.id for m in eps[3].shown]
