"""``memory-agent rlm`` over a memory bank and over a file, with a fake model patched in."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from memory_agent.cli import cli


class FakeModel:
    """Sub-model: the value after 'locker code is' in its text, else NONE."""

    def generate(self, batch, *, max_new_tokens=256, temperature=0.0, stop=None):
        out = []
        for conv in batch:
            m = re.search(r"locker code is (\d+)", conv[-1]["content"])
            out.append(m.group(1) if m else "NONE")
        return out


@pytest.fixture
def fake_models(monkeypatch):
    import memory_agent.llms as llms

    monkeypatch.setattr(llms, "resolve_llm", lambda spec: FakeModel())


def test_rlm_over_a_context_file(tmp_path, fake_models):
    ctx = tmp_path / "history.txt"
    ctx.write_text("\n".join(["User: the weather is fine"] * 5000 + ["User: Zorblat's locker code is 4471"]))
    traj = tmp_path / "t.jsonl"
    res = CliRunner().invoke(cli, ["rlm", "--context", str(ctx), "--strategy", "program", "--json",
                                   "--trajectory", str(traj), "What is Zorblat's locker code?"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["answer"] == "4471" and data["stop_reason"] == "program"
    assert traj.read_text().strip()


def test_rlm_over_a_memory_bank(tmp_path, fake_models):
    store_mod = pytest.importorskip("memory_store")
    db = tmp_path / "db"
    store = store_mod.MemoryStore(db, embedder=store_mod.HashingEmbedder(dim=64))
    ids = [store.add(f"note {i}: lunch at the garden cafe", user_id="u1") for i in range(30)]
    needle = store.add("Zorblat's locker code is 9911", user_id="u1")
    store.add("Zorblat's locker code is 1234", user_id="someone-else")
    store.close()
    res = CliRunner().invoke(cli, ["rlm", "--db", str(db), "--user", "u1", "--strategy", "program", "--json",
                                   "What is Zorblat's locker code?"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["answer"] == "9911"
    assert data["cited_ids"] == [needle]
    assert needle not in ids


def test_rlm_needs_exactly_one_source(tmp_path):
    res = CliRunner().invoke(cli, ["rlm", "q"])
    assert res.exit_code != 0 and "exactly one of --db or --context" in res.output
