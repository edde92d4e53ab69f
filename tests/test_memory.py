"""The Memory facade: add -> search -> answer with scripted models, edits, stats, roles, rlm delegation."""

from __future__ import annotations


import pytest

from memory_agent import Memory
from memory_agent.errors import ConfigError, InvalidInput, MemoryNotFound
from memory_agent.llms import ScriptedLLM

TURN = {"speaker": "Alice", "text": "I moved to Berlin last month.", "dia_id": "D1:1", "blip_caption": None}


def test_open_add_search_answer(tmp_path):
    llm = ScriptedLLM(["- Alice moved to Berlin last month"])
    mem = Memory.open(tmp_path / "m", llm=llm, embedder="hashing")
    res = mem.add([TURN], user_id="alice", timestamp="2024-05-08T13:56")
    assert [f.text for f in res.facts] == ["Alice moved to Berlin in April 2024"]
    assert [a.op for a in res.applied] == ["ADD"] and res.skipped == []
    assert res.extract_s >= 0 and res.manage_s >= 0 and "extract" in res.usage
    hit = mem.search("where does Alice live", user_id="alice", k=5)[0]
    assert hit.text == "Alice moved to Berlin in April 2024" and hit.metadata == {"speaker": "Alice", "source": "D1:1"}
    assert mem.search("Berlin", user_id="bob") == []

    llm.replies.append("Relevant: [0]\n**Answer:** Berlin")
    ans = mem.answer("Where does Alice live?", user_id="alice")
    assert ans.text == "Berlin" and ans.valid and ans.memories[0].id == hit.id
    assert "8 May 2024: Alice moved to Berlin" in llm.prompts[-1][-1]["content"]

    llm.replies.append("Berlin probably")  # no marker: counted, not hidden
    assert not mem.answer("Where?", user_id="alice").valid
    assert mem.stats["answers"] == 2 and mem.stats["answers_invalid"] == 1
    assert mem.stats["add"] == 1 and mem.stats["turns"] == 1
    mem.close()


def test_skipped_turns_are_counted_with_raw(tmp_path):
    llm = ScriptedLLM(["", "NONE", "- Bob has a cat named Tom"])
    mem = Memory.open(tmp_path / "m", llm=llm, embedder="hashing")
    turns = [dict(TURN, dia_id="D1:1"), {"speaker": "Bob", "text": "ok", "dia_id": "D1:2"},
             {"speaker": "Bob", "text": "My cat is named Tom", "dia_id": "D1:3"}]
    res = mem.add(turns, user_id="u", timestamp="2024-05-08T13:56")
    assert [(s.stage, s.source, s.raw) for s in res.skipped] == [("extract", "D1:1", "")]
    assert res.counts()["skipped_extract"] == 1 and res.counts()["add"] == 1
    assert mem.stats["skipped_extract"] == 1


def test_separate_role_models_and_open_store(store):
    extract = ScriptedLLM(["- Alice moved to Berlin last month", "- Alice moved to Munich"])
    manager = ScriptedLLM(["UPDATE 0: Alice lives in Munich"])
    answer = ScriptedLLM(["**Answer:** Munich"])
    mem = Memory(store, llm="no-such-model", extract_llm=extract, manager_llm=manager, answer_llm=answer)
    mem.add([TURN], user_id="alice", timestamp="2024-05-08T13:56")
    assert manager.prompts == []  # first ingest: direct ADD, no manager call
    res = mem.add([dict(TURN, text="I moved to Munich.", dia_id="D2:1")], user_id="alice", timestamp="2024-06-08")
    assert [a.op for a in res.applied] == ["UPDATE"] and len(manager.prompts) == 1
    assert mem.answer("Where?", user_id="alice").text == "Munich" and len(answer.prompts) == 1
    assert mem.store is store
    rid = res.applied[0].id
    assert [h.event for h in mem.history(rid, user_id="alice")] == ["ADD", "UPDATE"]
    assert [h.source for h in mem.history(rid, user_id="alice")] == ["D1:1", "D2:1"]


def test_direct_edits_and_scoping(tmp_path):
    mem = Memory.open(tmp_path / "m", llm=ScriptedLLM([]), embedder="hashing")
    mid = mem.store.add("Alice likes tea", user_id="alice")
    assert mem.get(mid, user_id="alice").text == "Alice likes tea"
    mem.update(mid, "Alice likes coffee", user_id="alice")
    with pytest.raises(MemoryNotFound):
        mem.get(mid, user_id="bob")
    with pytest.raises(MemoryNotFound):
        mem.delete(mid, user_id="bob")
    mem.delete(mid, user_id="alice")
    assert [h.event for h in mem.history(mid, user_id="alice")] == ["ADD", "UPDATE", "DELETE"]


def test_bad_inputs(tmp_path):
    mem = Memory.open(tmp_path / "m", llm=ScriptedLLM([]), embedder="hashing")
    with pytest.raises(InvalidInput, match="timestamp"):
        mem.add([TURN], user_id="alice", timestamp="next tuesday-ish")
    with pytest.raises(InvalidInput):
        mem.add([{"speaker": "A", "text": ""}], user_id="alice")
    with pytest.raises(ConfigError):
        mem.answer("q", user_id="alice", strategy="magic")
    with pytest.raises(ConfigError):
        Memory.open(tmp_path / "n", embedder="word2vec")
    assert mem.add([], user_id="alice").turns == 0


def test_models_load_lazily(tmp_path):
    mem = Memory.open(tmp_path / "m", llm="no-such-model", embedder="hashing")
    assert mem.search("x", user_id="a") == []  # no model needed, none resolved
    with pytest.raises(ConfigError):
        _ = mem.answer_llm


def test_rlm_strategy_runs_the_recursive_retriever_on_this_users_bank(tmp_path):
    # A scripted root that greps the bank in the sandbox, then answers; the
    # sandbox sees only alice's memories, never bob's.
    root = ScriptedLLM(
        [
            "```repl\nprint(grep('Berlin'))\nprint('bob' in context_text.lower())\n```",
            "FINAL(Berlin)",
        ]
    )
    mem = Memory.open(tmp_path / "m", llm=root, embedder="hashing")
    mid = mem.store.add("Alice lives in Berlin", user_id="alice", timestamp="2024-01-01T00:00:00")
    mem.store.add("Alice likes tea", user_id="alice", timestamp="2024-01-02T00:00:00")
    mem.store.add("Bob lives in Berlin too", user_id="bob")
    ans = mem.answer("Where does Alice live?", user_id="alice", strategy="rlm")
    assert ans.strategy == "rlm" and ans.valid
    assert ans.text == "Berlin"
    assert [m.id for m in ans.memories] == [mid]
    assert {r.text for r in ans.retrieved} == {"Alice lives in Berlin", "Alice likes tea"}
    seen = "\n".join(m["content"] for conv in root.prompts[1:] for m in conv)
    assert "Alice lives in Berlin" in seen and "Bob" not in seen
    mem.close()