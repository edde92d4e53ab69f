"""Table tests of the GRPO rewards (pure functions of completions + dataset columns)."""

from __future__ import annotations

import json

import pytest

from training.bank import BankCache, SnapshotBank, dump_records, load_records
from training.rewards import (
    AnswerReward,
    ManagerReward,
    OutputCounter,
    answer_em_reward,
    completion_text,
    score_answer,
)


def chat(text: str) -> list[dict[str, str]]:
    """TRL 1.x's conversational completion form."""
    return [{"role": "assistant", "content": text}]


# ------------------------------------------------------------------ completion_text
@pytest.mark.parametrize(
    "completion,expected",
    [
        ("plain", "plain"),
        (chat("as chat"), "as chat"),
        ({"role": "assistant", "content": "one dict"}, "one dict"),
        ([], ""),
        (None, ""),
        ([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}], "a\nb"),
    ],
)
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected


# ------------------------------------------------------------------ answer reward
ANSWER_TABLE = [
    # completion text, gold, em, f1, valid
    ("Relevant: [1]\n**Answer:** Rome", "Rome", 1.0, 1.0, True),
    ("**Answer:** rome.", "Rome", 1.0, 1.0, True),  # normalisation: case, punctuation
    ("**Answer:** the city of Rome", "Rome", 0.0, 0.4, True),  # partial credit under F1 only
    ("**Answer:** Paris", "Rome", 0.0, 0.0, True),
    ("Rome", "Rome", 0.0, 0.0, False),  # right words, no marker: 0 and counted
    ("", "Rome", 0.0, 0.0, False),  # empty
    ("**Answer:**   ", "Rome", 0.0, 0.0, False),  # marker with nothing after it
    ("**Answer:** 7 May 2023\nmore chatter", "7 May 2023", 1.0, 1.0, True),  # first line only
    ("**Answer:** 2022", 2022, 1.0, 1.0, True),  # integer gold (LoCoMo has some)
    ("**Answer:** Berlin", ["Rome", "Berlin"], 1.0, 1.0, True),  # any accepted gold
]


@pytest.mark.parametrize("form", ["str", "chat"])
@pytest.mark.parametrize("text,gold,em,f1,valid", ANSWER_TABLE)
def test_answer_reward_table(form, text, gold, em, f1, valid):
    completion = text if form == "str" else chat(text)
    for metric, expected in (("em", em), ("f1", f1)):
        counter = OutputCounter()
        reward = AnswerReward(metric, counter=counter)
        assert reward([completion], answer=[gold]) == [pytest.approx(expected, abs=0.01)]
        assert (counter.valid, counter.invalid) == ((1, 0) if valid else (0, 1))


def test_answer_reward_batch_names_and_log_metric():
    logged = {}
    reward = AnswerReward("em")
    assert reward.__name__ == "answer_em"
    out = reward(
        ["**Answer:** a", "nothing", chat("**Answer:** b")],
        answer=["a", "a", "c"],
        log_metric=lambda name, value: logged.setdefault(name, value),
        prompts=["p"] * 3,  # TRL passes extra columns; they must be ignored
    )
    assert out == [1.0, 0.0, 0.0]
    assert logged == {"valid_rate/answer_em": pytest.approx(2 / 3)}
    assert reward.counter.rate == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        reward(["x"])  # no gold column


def test_module_level_answer_reward():
    before = answer_em_reward.counter.total
    assert answer_em_reward(["**Answer:** yes"], answer=["Yes"]) == [1.0]
    assert answer_em_reward.__name__ == "answer_em_reward"
    assert answer_em_reward.counter.total == before + 1


def test_score_answer_metric_check():
    assert score_answer("a", "a", "em") == 1.0
    with pytest.raises(ValueError):
        score_answer("a", "a", "judge")
    with pytest.raises(ValueError):
        AnswerReward("bleu")


def test_output_counter_window_and_rate():
    c = OutputCounter()
    assert c.rate is None and c.window() is None
    c.record(True)
    c.record(False, "junk")
    assert c.rate == 0.5 and c.last_invalid == "junk"
    assert c.window() == 0.5
    c.record(True)
    assert c.window() == 1.0 and c.rate == pytest.approx(2 / 3)
    c.reset()
    assert c.total == 0


# ------------------------------------------------------------------ bank copy
def test_snapshot_bank_ops_do_not_touch_the_base(embedder):
    records = load_records(dump_records([{"id": 3, "text": "Alice lives in Paris"}, {"id": 7, "text": "Alice likes tea"}]))
    base = SnapshotBank.build(records, embedder)
    copy = base.copy()
    new_id = copy.add("Alice has a dog named Rex", "2023-05-01")
    copy.update(3, "Alice lives in Berlin")
    copy.delete(7)
    assert new_id == 8
    assert [r.text for r in copy.records] == ["Alice lives in Berlin", "Alice has a dog named Rex"]
    assert [r.text for r in base.records] == ["Alice lives in Paris", "Alice likes tea"]
    assert copy.search("where does Alice live? Berlin", 1)[0].text == "Alice lives in Berlin"
    assert base.search("Paris", 5)[0].id == 3
    assert len(copy.vectors) == 2 and len(base.vectors) == 2
    with pytest.raises(KeyError):
        copy.delete(7)


def test_bank_cache_reuses_builds(embedder):
    cache = BankCache(embedder, maxsize=2)
    snap = dump_records([{"id": 1, "text": "x y"}])
    assert cache.get(snap) is cache.get(snap)
    cache.get(dump_records([]))
    cache.get(dump_records([{"id": 2, "text": "z"}]))
    assert len(cache._items) == 2


# ------------------------------------------------------------------ manager reward
SHOWN = [{"id": 10, "text": "Alice lives in Paris"}, {"id": 11, "text": "Alice likes tea"}]
BANK = dump_records(SHOWN + [{"id": 12, "text": "Bob plays chess"}])


def _answer_from_memories(messages):
    """A frozen 'answer agent': answers with the city it finds in the memories."""
    prompt = messages[-1]["content"]
    for city in ("Berlin", "Paris"):
        if f"lives in {city}" in prompt:
            return f"Relevant: [0]\n**Answer:** {city}"
    return "**Answer:** unknown"


def _columns(n, question="Where does Alice live?", gold="Berlin"):
    return dict(
        shown=[json.dumps(SHOWN)] * n,
        bank=[BANK] * n,
        questions=[[question]] * n,
        answers=[[gold]] * n,
        timestamp=["2023-06-01T10:00:00"] * n,
    )


MANAGER_TABLE = [
    # completion, expected reward, valid
    ("UPDATE 0: Alice lives in Berlin", 1.0, True),
    ('[{"op": "UPDATE", "id": 0, "text": "Alice lives in Berlin"}]', 1.0, True),  # paper's JSON
    ("DELETE 0\nADD: Alice lives in Berlin now", 1.0, True),
    ("ADD: Alice moved, she lives in Berlin", 1.0, True),
    ("NOOP", 0.0, True),  # valid, but the bank still says Paris
    ("UPDATE 5: Alice lives in Berlin", 0.0, False),  # hallucinated id
    ("DELETE 2", 0.0, False),  # id 2 exists in the bank but was not shown
    ("I think Alice moved.", 0.0, False),  # prose
    ("", 0.0, False),  # empty: never a silent NOOP
    ("UPDATE 0: x\nDELETE 0", 0.0, False),  # one id touched twice
]


@pytest.mark.parametrize("form", ["str", "chat"])
@pytest.mark.parametrize("completion,expected,valid", MANAGER_TABLE)
def test_manager_reward_table(scripted, embedder, form, completion, expected, valid):
    llm = scripted(default=_answer_from_memories)
    reward = ManagerReward(llm, embedder=embedder)
    c = completion if form == "str" else chat(completion)
    assert reward([c], **_columns(1)) == [expected]
    assert (reward.counter.valid, reward.counter.invalid) == ((1, 0) if valid else (0, 1))
    # invalid completions never reach the answer agent
    assert len(llm.prompts) == (1 if valid else 0)


def test_manager_reward_batches_answer_calls_and_averages(scripted, embedder):
    llm = scripted(default=_answer_from_memories)
    reward = ManagerReward(llm, embedder=embedder, metric="f1")
    cols = _columns(3)
    cols["questions"] = [["Where does Alice live?", "Where does Alice live now?"]] * 3
    cols["answers"] = [["Berlin", "Paris"]] * 3
    out = reward(["UPDATE 0: Alice lives in Berlin", "NOOP", "garbage"], **cols)
    assert out == [0.5, 0.5, 0.0]  # each valid completion gets one of the two questions right
    assert len(llm.calls) == 1 and llm.calls[0]["n"] == 4  # 2 valid completions x 2 questions, one call
    assert reward.__name__ == "manager_f1"


def test_manager_reward_applies_to_a_copy(scripted, embedder):
    llm = scripted(default=_answer_from_memories)
    reward = ManagerReward(llm, embedder=embedder)
    cols = _columns(2)
    # the first completion deletes Paris; the second must still see the original bank
    out = reward(["DELETE 0\nADD: Alice lives in Berlin", "NOOP"], **cols)
    assert out == [1.0, 0.0]
    second_prompt = llm.prompts[1][-1]["content"]
    assert "Alice lives in Paris" in second_prompt and "Berlin" not in second_prompt


def test_manager_reward_answer_prompt_is_the_pipelines(scripted, embedder):
    """Retrieval capped at top_k, memories shown oldest first with their dates, as AnswerAgent.build."""
    llm = scripted(default=_answer_from_memories)
    dated = dump_records([dict(m, timestamp="2023-01-0%dT10:00:00" % (i + 1)) for i, m in enumerate(SHOWN)])
    cols = dict(_columns(1), bank=[dated])
    ManagerReward(llm, embedder=embedder)(["ADD: Alice lives in Berlin"], **cols)
    lines = llm.prompts[0][-1]["content"].splitlines()
    assert lines[0] == "Memories:" and lines[-1] == "Question: Where does Alice live?"
    assert lines[1:-1] == [
        "[0] 1 January 2023: Alice lives in Paris",
        "[1] 2 January 2023: Alice likes tea",
        "[2] 1 June 2023: Alice lives in Berlin",  # the ADDed memory carries the turn's date
    ]
    llm2 = scripted(default=_answer_from_memories)
    ManagerReward(llm2, embedder=embedder, top_k=2)(["ADD: Alice lives in Berlin"], **cols)
    assert sum(line.startswith("[") for line in llm2.prompts[0][-1]["content"].splitlines()) == 2


def test_manager_reward_splits_retrieval_by_speaker(scripted, embedder):
    """Two speakers in the bank: k/2 memories each, like AnswerAgent.retrieve."""
    bank = dump_records(
        [{"id": i, "text": f"Alice fact {i}", "speaker": "Alice"} for i in range(1, 6)]
        + [{"id": i, "text": f"Bob note {i}", "speaker": "Bob"} for i in range(6, 8)]
    )
    llm = scripted(default="**Answer:** x")
    cols = dict(shown=["[]"], bank=[bank], questions=[["Alice fact?"]], answers=[["x"]])
    ManagerReward(llm, embedder=embedder, top_k=4)(["NOOP"], **cols)
    shown = [ln for ln in llm.prompts[0][-1]["content"].splitlines() if ln.startswith("[")]
    assert sum("Alice fact" in ln for ln in shown) == 2 and sum("Bob note" in ln for ln in shown) == 2


def test_manager_reward_stops_at_blank_line_like_the_pipeline(scripted, embedder):
    llm = scripted(default=_answer_from_memories)
    reward = ManagerReward(llm, embedder=embedder)
    assert reward(["UPDATE 0: Alice lives in Berlin\n\nrambling that is not an op"], **_columns(1)) == [1.0]
    assert reward(["\n\nUPDATE 0: Alice lives in Berlin"], **_columns(1)) == [0.0]  # nothing before the stop
    assert reward.counter.invalid == 1


def test_manager_reward_needs_its_columns(scripted, embedder):
    reward = ManagerReward(scripted(default="x"), embedder=embedder)
    with pytest.raises(ValueError, match="shown"):
        reward(["NOOP"], bank=[BANK], questions=[["q"]], answers=[["a"]])


def test_manager_reward_applies_the_pipelines_grounding_rule(scripted, embedder):
    """With the ``facts`` column, invented text scores 0 and is counted invalid, as the
    MemoryManager would refuse it; the same completion grounded in the facts scores."""
    llm = scripted(default="x")
    llm.generate = lambda batch, **kw: [_answer_from_memories(m) for m in batch]
    reward = ManagerReward(llm, embedder=embedder)
    cols = _columns(2)
    cols["facts"] = [json.dumps(["Alice moved to Berlin"])] * 2
    out = reward(["UPDATE 0: Alice lives in Berlin", "UPDATE 0: Alice lives in Berlin, loves bananas, mangoes, kiwis and melons"], **cols)
    assert out == [1.0, 0.0]
    assert reward.counter.total == 2 and reward.counter.rate == 0.5
