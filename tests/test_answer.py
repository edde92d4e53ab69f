"""Answer Agent: retrieval split per speaker, prompt format and budget, answer parsing."""

from __future__ import annotations

from datetime import datetime

import pytest

from memory_agent.answer import AnswerAgent, display_date, parse_answer


@pytest.mark.parametrize(
    "raw, text, selected, valid",
    [
        ("Relevant: [1]\n**Answer:** Rome", "Rome", [1], True),
        ("[0] and [2] help\n**Answer:** Paris, France\nmore rambling", "Paris, France", [0, 2], True),
        ("Relevant: 0, 1\n**Answer**: tea", "tea", [0, 1], True),
        ("Answer: tea", "tea", [], True),
        ("[9] out of range\n**Answer:** x", "x", [], True),
        ("I think\nRome", "Rome", [], False),
        ("**Answer:**", "", [], False),
        ("**Answer:** [2]", "[2]", [], False),
        ("", "", [], False),
    ],
)
def test_parse_answer(raw, text, selected, valid):
    assert parse_answer(raw, 3) == (text, selected, valid)


def _fill(store):
    store.add("Alice lives in Paris", user_id="u", metadata={"speaker": "Alice"}, timestamp="2023-01-01T10:00:00")
    store.add("Alice moved to Berlin", user_id="u", metadata={"speaker": "Alice"}, timestamp="2023-03-01T10:00:00")
    store.add("Bob lives in Rome", user_id="u", metadata={"speaker": "Bob"}, timestamp="2023-02-01T10:00:00")
    store.add("Bob likes jazz", user_id="u", metadata={"speaker": "Bob"}, timestamp="2023-02-05T10:00:00")
    store.add("Bob has a cat", user_id="u", metadata={"speaker": "Bob"}, timestamp="2023-02-06T10:00:00")
    store.add("other user secret", user_id="v", metadata={"speaker": "Bob"})


def test_prompt_has_timestamps_oldest_first_and_small_ids(store, scripted):
    _fill(store)
    llm = scripted(["Relevant: [1]\n**Answer:** Berlin"])
    ans = AnswerAgent(llm, store).answer("Where does Alice live?", "u")
    prompt = llm.prompts[0][-1]["content"]
    lines = [ln for ln in prompt.splitlines() if ln.startswith("[")]
    assert lines[0].startswith("[0] 1 January 2023: ") and len(lines) == 5
    dates = [datetime.strptime(ln.split("] ", 1)[1].split(":")[0], "%d %B %Y") for ln in lines]
    assert dates == sorted(dates) and len(set(dates)) == 5
    assert "secret" not in prompt and prompt.endswith("Question: Where does Alice live?")
    assert ans.valid and ans.text == "Berlin"
    assert [m.text for m in ans.memories] == [lines[1].split(": ", 1)[1]]
    assert len(ans.retrieved) == 5 and ans.raw.startswith("Relevant")


def test_two_speakers_split_k(store, scripted):
    _fill(store)
    llm = scripted(["**Answer:** x"])
    ans = AnswerAgent(llm, store, k=2).answer("where", "u")
    assert sorted(m.metadata["speaker"] for m in ans.retrieved) == ["Alice", "Bob"]


def test_budget_drops_least_relevant(store, scripted):
    for i in range(40):
        store.add(f"memory number {i} about many different long topics " * 3, user_id="u")
    llm = scripted(["**Answer:** x"])
    agent = AnswerAgent(llm, store, max_prompt_tokens=400)
    hits = agent.retrieve("memory number 3", "u")
    _, kept = agent.build("memory number 3", hits)
    assert 0 < len(kept) < len(hits)
    assert {h.id for h in kept} == {h.id for h in hits[: len(kept)]}  # the best ones survive


def test_missing_marker_is_invalid_not_hidden(store, scripted):
    _fill(store)
    ans = AnswerAgent(scripted(["Berlin I guess"]), store).answer("Where?", "u")
    assert not ans.valid and ans.text == "Berlin I guess"


def test_answer_many_is_one_call(store, scripted):
    _fill(store)
    llm = scripted(["**Answer:** a", "**Answer:** b"])
    out = AnswerAgent(llm, store).answer_many(["q1", "q2"], "u")
    assert [a.text for a in out] == ["a", "b"] and [c["n"] for c in llm.calls] == [2]


@pytest.mark.parametrize(
    "value, shown",
    [
        ("2023-01-19T16:04:00", "19 January 2023"),
        ("2023-05-08", "8 May 2023"),
        ("", ""),
        ("last summer", "last summer"),  # not an ISO date: shown as it is
        ("2023-13-40", "2023-13-40"),
    ],
)
def test_display_date_writes_dates_like_the_gold_answers(value, shown):
    assert display_date(value) == shown


def test_display_date_of_a_record_prefers_the_update_time(store):
    mid = store.add("Alice lives in Paris", user_id="u", timestamp="2023-01-01T10:00:00")
    store.update(mid, "Alice lives in Berlin", user_id="u", timestamp="2023-03-02T10:00:00")
    assert display_date(store.get(mid, user_id="u")) == "2 March 2023"


def test_time_named_in_the_question_boosts_memories_dated_in_it(store):
    for month in range(1, 13):  # one trip memory per month; only the dates tell them apart
        store.add(f"Alice went on a trip {month}", "u", {"speaker": "Alice"}, timestamp=f"2023-{month:02d}-15T10:00:00")
    question = "Where did Alice go on a trip in May 2023?"
    plain = AnswerAgent(None, store, k=3, time_aware=False).retrieve(question, "u")
    timed_agent = AnswerAgent(None, store, k=3)
    _, now = timed_agent.present("u")
    when = timed_agent.when(question, now)
    assert when is not None and when.text
    timed = timed_agent.retrieve(question, "u", when=when)
    assert timed[0].created_at.startswith("2023-05")
    assert len(plain) == 3  # the same search without the boost (what May's rank would be is up to the embedder)
    # a boost, not a filter: other months are still retrieved
    assert {h.created_at[:7] for h in timed} - {"2023-05"}


def test_relative_times_are_anchored_at_the_newest_memory(store):
    store.add("Alice adopted a dog", "u", {"speaker": "Alice"}, timestamp="2022-06-01T10:00:00")
    store.add("Alice adopted a cat", "u", {"speaker": "Alice"}, timestamp="2023-06-01T10:00:00")
    agent = AnswerAgent(None, store, k=1)
    speakers, now = agent.present("u")
    assert speakers == ["Alice"] and now.startswith("2023-06-01")
    when = agent.when("What did Alice adopt last year?", now)
    assert when.start.year == 2022 and when.end.year == 2023
    assert agent.retrieve("What did Alice adopt last year?", "u", when=when)[0].text == "Alice adopted a dog"


class _Reverse:
    def __init__(self):
        self.seen = []

    def rerank(self, query, hits):
        self.seen.append((query, len(hits)))
        return list(reversed(hits))[:2]


def test_reranker_reorders_before_the_budget(store, scripted):
    _fill(store)
    rr = _Reverse()
    llm = scripted(["**Answer:** x"])
    ans = AnswerAgent(llm, store, reranker=rr).answer("Where does Alice live?", "u")
    assert rr.seen == [("Where does Alice live?", 5)] and len(ans.retrieved) == 2 and len(ans.ranked) == 2
    assert ans.search_ms is not None and ans.search_ms >= 0


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_every_retrieval_mode_answers_and_stays_in_the_user(store, scripted, mode):
    _fill(store)
    llm = scripted(["**Answer:** Rome"])
    ans = AnswerAgent(llm, store, retrieval=mode).answer("Where does Bob live? Rome?", "u")
    assert ans.valid and all(m.user_id == "u" for m in ans.ranked)
    assert any(m.text == "Bob lives in Rome" for m in ans.retrieved)


def test_bad_retrieval_settings_are_config_errors(store):
    from memory_agent.errors import ConfigError

    with pytest.raises(ConfigError):
        AnswerAgent(None, store, retrieval="bm25")
    with pytest.raises(ConfigError):
        AnswerAgent(None, store, reranker=object())


def test_k_smaller_than_the_speakers_still_retrieves(store):
    _fill(store)
    hits = AnswerAgent(None, store, k=1).retrieve("where", "u")
    assert len(hits) == 2  # one per speaker, never a search for zero
