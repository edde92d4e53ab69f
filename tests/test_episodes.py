"""Episode building on a tiny synthetic set (hashing embedder; scripted LLM for the pipeline replay)."""

from __future__ import annotations

import json

import pytest

from data.synthetic import generate
from memory_agent.errors import ConfigError
from training import pipeline
from training.bank import BankRecord, load_records
from training.episodes import (
    answer_episodes,
    check_not_dev,
    linked_questions,
    load_conversations,
    manager_episodes,
    to_dataset,
)
from training.replay import ObservationReplay, TurnsReplay
from training.rewards import ManagerReward
from training.sft import answer_target, manager_target


@pytest.fixture(scope="module")
def convs():
    return [generate(0, n_sessions=2, n_questions=4), generate(1, n_sessions=2, n_questions=4)]


def test_linked_questions(convs):
    linked = linked_questions(convs[0])
    assert ("When did Maya move to Lyon?", "26 June 2023") in linked["D2:10"]
    assert len(linked["D2:10"]) == 3  # three questions cite that turn
    assert all(q for qs in linked.values() for q, _ in qs)


def test_manager_episodes_from_observations(convs, embedder):
    replay = ObservationReplay(embedder)
    episodes = manager_episodes(convs[:1], replay)
    linked = linked_questions(convs[0])
    assert [e.dia_id for e in episodes] == ["D1:3", "D2:6", "D2:10"]  # linked turns, in order
    for e in episodes:
        assert e.questions == [q for q, _ in linked[e.dia_id]]
        assert e.facts == e.observations  # observation replay: facts are the annotations
        bank_ids = {r.id for r in e.bank}
        assert {r.id for r in e.shown} <= bank_ids  # shown memories come from the bank
        assert all(f not in {r.text for r in e.bank} for f in e.facts)  # the bank is *before* the turn
    first = episodes[0]
    assert [r.text for r in first.bank] == ["Nikhil took up pottery."]  # D1:2's observation only
    last = episodes[-1]
    assert "Maya lives in Bologna." in [r.text for r in last.shown]  # related memory retrieved


def test_manager_rows_are_the_pipeline_prompt(convs, embedder):
    (e, *_) = manager_episodes(convs[:1], ObservationReplay(embedder), max_episodes=1)
    row = e.row()
    assert row["prompt"] == pipeline.manager_messages(e.facts, [r.text for r in e.shown])
    shown = json.loads(row["shown"])
    assert [m["text"] for m in shown] == [r.text for r in e.shown]
    assert load_records(row["bank"]) == e.bank
    assert row["questions"] == e.questions and row["answers"] == e.answers


def test_max_turns_and_max_episodes(convs, embedder):
    replay = ObservationReplay(embedder)
    assert [e.dia_id for e in manager_episodes(convs[:1], replay, max_turns=12)] == ["D1:3"]
    assert len(manager_episodes(convs, replay, max_episodes=2)) == 2


def test_turns_replay_uses_the_turn_text(convs, embedder):
    episodes = manager_episodes(convs[:1], TurnsReplay(embedder), max_episodes=1)
    assert episodes[0].facts == ["Maya: That's great! I've been living in Bologna for a few years now."]
    assert len(episodes[0].bank) == 2  # D1:1 and D1:2 verbatim


def test_answer_episodes(convs, embedder):
    episodes = answer_episodes(convs, ObservationReplay(embedder), embedder, retrieve_k=4)
    n_questions = sum(len(c.questions()) for c in convs)
    assert len(episodes) == n_questions
    e = episodes[1]
    assert e.question == "When did Maya move to Lyon?" and e.answer == "26 June 2023"
    assert len(e.memories) == 4
    assert sorted(m.speaker for m in e.memories) == ["Maya", "Maya", "Nikhil", "Nikhil"]  # k/2 per speaker
    assert any("Lyon" in m.text for m in e.memories)
    row = e.row()
    assert row["prompt"] == pipeline.answer_messages(e.question, e.memories)
    assert "Question: When did Maya move to Lyon?" in row["prompt"][-1]["content"]
    # with max_turns, questions whose evidence lies later are dropped
    early = answer_episodes(convs[:1], ObservationReplay(embedder), embedder, max_turns=12)
    assert early == []  # every question of conv 0 cites session 2


def test_to_dataset_and_reward_end_to_end(convs, embedder, scripted):
    episodes = manager_episodes(convs[:1], ObservationReplay(embedder))
    ds = to_dataset(episodes)
    assert {"prompt", "shown", "bank", "questions", "answers", "timestamp"} <= set(ds.column_names)
    row = ds[len(ds) - 1]  # D2:10, "moved from Bologna to Lyon"
    llm = scripted(default=lambda m: "**Answer:** Lyon" if "Lyon" in m[-1]["content"] else "**Answer:** ?")
    reward = ManagerReward(llm, embedder=embedder, metric="f1")
    assert row["speaker"] == "Maya"  # ADDed memories get the turn's speaker, as in the pipeline
    cols = {k: [row[k]] for k in ("shown", "bank", "questions", "answers", "timestamp", "speaker")}
    good = reward(["ADD: Maya moved from Bologna to Lyon"], **cols)
    noop = reward(["NOOP"], **cols)
    assert good[0] > noop[0]
    with pytest.raises(ConfigError):
        to_dataset([])


def test_dev_conversation_is_refused(convs):
    dev = convs[0].model_copy(update={"sample_id": "conv-41"})
    with pytest.raises(ConfigError, match="conv-41"):
        check_not_dev([convs[1], dev])
    check_not_dev(convs)


def test_load_conversations_specs(tmp_path):
    synth = load_conversations("synthetic:2:5")
    assert len(synth) == 2 and all(c.qa for c in synth)
    with pytest.raises(ConfigError):
        load_conversations(tmp_path / "missing.json")


# ------------------------------------------------------------------ cold-start targets
def _r(i, text):
    return BankRecord(i, text)


@pytest.mark.parametrize(
    "facts,shown,expected",
    [
        (["Maya lives in Lyon"], [], "ADD: Maya lives in Lyon"),
        (["Maya lives in Lyon"], [_r(5, "maya lives in lyon")], "NOOP"),  # already stored
        (
            ["Maya has a parrot named Mochi and a rabbit"],
            [_r(5, "Maya likes tea"), _r(9, "Maya has a parrot named Mochi")],
            "UPDATE 1: Maya has a parrot named Mochi and a rabbit",  # small id, not the db id
        ),
        (["A fact", "Another fact"], [], "ADD: A fact\nADD: Another fact"),
    ],
)
def test_manager_target(facts, shown, expected):
    target = manager_target(facts, shown)
    assert target == expected
    pipeline.parse_manager_ops(target, len(shown))  # always parseable


def test_answer_target():
    mems = [_r(1, "Bob adopted a cat"), _r(2, "Bob moved to Rome")]
    assert answer_target("Rome", mems) == "Relevant: [1] Bob moved to Rome\n**Answer:** Rome"
    assert pipeline.parse_answer(answer_target("Rome", mems)) == "Rome"
    assert answer_target("Paris", mems).startswith("Relevant: none")


def test_answer_target_counts_date_words_and_breaks_ties_by_the_question():
    mems = [
        BankRecord(1, "Jon went to a dance class", timestamp="2023-01-19T10:00:00"),
        BankRecord(2, "Jon lost his job as a banker", timestamp="2023-01-19T10:00:00"),
        BankRecord(3, "Jon lost his keys", timestamp="2023-03-02T10:00:00"),
    ]
    target = answer_target("19 January, 2023", mems, question="When did Jon lose his job as a banker?")
    assert target.splitlines()[0] == "Relevant: [1] 19 January 2023: Jon lost his job as a banker"
    # without the question, the first memory of that date
    assert answer_target("19 January, 2023", mems).startswith("Relevant: [0] 19 January 2023:")


# ------------------------------------------------------------------ pipeline replay (scripted LLM)
def _scripted_pipeline(messages):
    """Extraction: the turn itself is the fact. Manager: ADD the first new fact."""
    from memory_agent.prompts import EXTRACT_SYSTEM, MANAGER_SYSTEM

    system, user = messages[0]["content"], messages[-1]["content"]
    if system == EXTRACT_SYSTEM:
        return "- " + user.split(": ", 1)[1]
    if system == MANAGER_SYSTEM:
        fact = user.split("New facts:\n- ", 1)[1].splitlines()[0]
        return f"ADD: {fact}"
    raise AssertionError(f"unexpected prompt {system!r}")


def test_pipeline_replay_views_are_the_managers_prompts(convs, embedder, scripted, tmp_path):
    from training.pipeline_replay import PipelineReplay

    llm = scripted(default=_scripted_pipeline)
    replay = PipelineReplay(llm, embedder, model_key="scripted", cache_dir=tmp_path)
    episodes = manager_episodes(convs[:1], replay, max_turns=12)
    assert [e.dia_id for e in episodes] == ["D1:3"]
    (e,) = episodes
    assert e.facts == ["That's great! I've been living in Bologna for a few years now"]
    assert [r.text for r in e.bank] == [  # the bank built by the pipeline from D1:1 and D1:2
        "Hey Nikhil, long time no see!",
        "Hey! Doing well. I took up pottery recently and I'm hooked",
    ]
    assert all(r.speaker in ("Maya", "Nikhil") and r.timestamp for r in e.bank)
    # the episode prompt is exactly what the pipeline's manager was sent for that turn
    manager_prompts = [p for p in llm.prompts if "New facts:" in p[-1]["content"]]
    assert e.row()["prompt"] in manager_prompts
    calls = len(llm.prompts)
    # cached on disk: building again makes no model call
    again = manager_episodes(convs[:1], PipelineReplay(llm, embedder, model_key="scripted", cache_dir=tmp_path), max_turns=12)
    assert [x.row() for x in again] == [e.row()] and len(llm.prompts) == calls
    # another manager model -> another cache entry
    PipelineReplay(llm, embedder, model_key="other", cache_dir=tmp_path).final_bank(convs[0], max_turns=4)
    assert len(llm.prompts) > calls


def test_pipeline_replay_final_bank_for_answer_episodes(convs, embedder, scripted, tmp_path):
    from training.pipeline_replay import PipelineReplay

    llm = scripted(default=_scripted_pipeline)
    replay = PipelineReplay(llm, embedder, model_key="scripted", cache_dir=tmp_path)
    bank = replay.final_bank(convs[0])
    assert 10 < len(bank) <= convs[0].n_turns  # at most one ADD per turn with this script
    assert {r.speaker for r in bank} == {"Maya", "Nikhil"}
    episodes = answer_episodes(convs[:1], replay, embedder, retrieve_k=60)
    assert len(episodes) == len(convs[0].questions())
    assert all(len(ep.memories) <= 60 for ep in episodes)


def test_answer_target_stays_short_enough_for_the_answer_budget():
    long = _r(1, "Bob moved to Rome " + "and liked the food there very much " * 10)
    mems = [long, _r(2, "Bob moved to Rome with his sister Ann")]
    target = answer_target("Rome", mems)
    assert target.count("\n") == 1  # one quoted memory, then the answer line
    first = target.splitlines()[0]
    assert len(first) <= len("Relevant: [1] ") + 100 and first.endswith("...")
    assert pipeline.parse_answer(target) == "Rome"
