"""Which model each role runs: shipped trained policies by default, --untrained, a policy folder."""

from __future__ import annotations

import pytest

from memory_agent.errors import ConfigError
from memory_agent.policies import role_specs, shipped


def _fake_policy_folder(root):
    for role in ("manager", "answer"):
        (root / role).mkdir(parents=True)
        (root / role / "adapter_config.json").write_text("{}")
    return root


def test_role_specs_table(tmp_path):
    folder = _fake_policy_folder(tmp_path / "pol")
    m, a = shipped("manager"), shipped("answer")
    assert role_specs("default", None, None, "default") == (str(m) if m else None, str(a) if a else None)
    assert role_specs("default", None, None, None) == (None, None)  # --untrained
    assert role_specs("default", None, None, str(folder)) == (str(folder / "manager"), str(folder / "answer"))
    assert role_specs("default", "mine", None, str(folder)) == ("mine", str(folder / "answer"))  # explicit wins
    assert role_specs("/models/qwen", None, None, "default") == (None, None)  # adapters are for the embedded model
    with pytest.raises(ConfigError, match="embedded model"):  # a policy folder for another model: not ignored
        role_specs("/models/qwen", None, None, str(folder))
    with pytest.raises(ConfigError):
        role_specs("default", None, None, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="manager/"):
        role_specs("default", None, None, str(tmp_path))
    with pytest.raises(ConfigError):
        shipped("judge")


def test_memory_uses_the_shipped_policies_unless_untrained(tmp_path, embedder):
    from memory_agent.memory import Memory
    from memory_store import MemoryStore

    store = MemoryStore(tmp_path / "s", embedder=embedder)
    mem = Memory(store)
    untrained = Memory(store, policy=None)
    if shipped("manager") is not None:
        assert mem._specs["manager"] == str(shipped("manager")) and mem._specs["answer"] == str(shipped("answer"))
    assert mem._specs["extract"] == "default"  # extraction always runs the base model
    assert untrained._specs == {"extract": "default", "manager": "default", "answer": "default"}
    store.close()


def test_shipped_adapters_are_small_and_load():
    """The packaged adapters exist, are at most 5 MB each, and load over the embedded model."""
    import json

    for role in ("manager", "answer"):
        folder = shipped(role)
        assert folder is not None, f"no shipped {role} policy"
        assert (folder / "adapter_model.safetensors").stat().st_size <= 5 * 1024 * 1024
        cfg = json.loads((folder / "adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_shipped_policies_run_in_memory(tmp_path, minilm):
    """Memory.open() with the defaults answers through the shipped answer adapter."""
    from memory_agent.memory import Memory

    if shipped("answer") is None:
        pytest.skip("no shipped policies in this checkout")
    with Memory.open(tmp_path / "m", embedder=minilm) as mem:
        assert hasattr(mem.answer_llm.model, "peft_config")
        mem.store.add("Alice lives in Lisbon", "alice", {"speaker": "Alice"}, timestamp="2023-05-01T10:00:00")
        reply = mem.answer("Where does Alice live?", user_id="alice")
    assert isinstance(reply.text, str) and reply.retrieved


def test_a_missing_shipped_policy_is_an_error_not_the_untrained_model(monkeypatch, tmp_path):
    import memory_agent.policies as policies
    from training.compare import resolve_policy

    monkeypatch.setattr(policies, "POLICY_DIR", tmp_path)  # an installation without adapters
    with pytest.raises(ConfigError, match="policy=None"):
        role_specs("default", None, None, "default")
    assert role_specs("default", None, None, None) == (None, None)
    with pytest.raises(ConfigError, match="no shipped"):
        resolve_policy("default", "manager")
