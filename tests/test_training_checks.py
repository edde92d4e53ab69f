"""The checks around training: policy comparisons (paired bootstrap) and the reward-proxy check.

Driven by scripted models through the ``scripted:FILE.json`` spec, so they run in seconds.
"""

from __future__ import annotations

import json

import pytest

from memory_agent.embedded import smollm2_is_cached

needs_tokenizer = pytest.mark.skipif(not smollm2_is_cached(), reason="needs the embedded tokenizer (memory-agent setup)")


def _script(tmp_path, name, default):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"default": default}))
    return f"scripted:{path}"


@needs_tokenizer
def test_score_policies_compares_on_the_same_episodes(tmp_path):
    from training.compare import score_policies

    noop = _script(tmp_path, "noop", "NOOP")
    garbage = _script(tmp_path, "garbage", "I would rather not")
    report = score_policies("manager", [garbage, noop], "synthetic:2:7", embedder="hashing")
    s = report["summary"]
    assert s["episodes"] > 5 and set(s["policies"]) == {garbage, noop}
    assert s["policies"][garbage]["valid_rate"] == 0 and s["policies"][garbage]["reward"] == -1
    versus = s["policies"][noop][f"vs_{garbage}"]
    assert versus["diff"] > 0 and versus["excludes_zero"] and versus["n"] == s["episodes"]
    assert s["policies"][noop]["ops"]["noop"] == 1.0 and s["policies"][noop]["edit_recall"] == 0


def test_summarize_pairs_every_policy_with_each_earlier_one():
    from training.compare import summarize

    def report(f1s, tags):
        rows = [{"f1": f, "tags": t} for f, t in zip(f1s, tags, strict=True)]
        return {"all": {"f1": sum(f1s) / len(f1s)}, "per_episode": rows}

    tags = [["current"], [], ["current"], []] * 5
    reports = {"untrained": report([0.0] * 20, tags), "sft": report([0.5, 0.0] * 10, tags),
               "grpo": report([1.0, 0.0] * 10, tags)}
    s = summarize("answer", "synthetic:1:7", reports)
    assert s["episodes"] == 20 and list(s["policies"]) == ["untrained", "sft", "grpo"]
    assert not any(k.startswith("vs_") for k in s["policies"]["untrained"])
    assert set(k for k in s["policies"]["grpo"] if k.startswith("vs_")) == {
        "vs_untrained", "vs_untrained_current", "vs_sft", "vs_sft_current"}
    versus = s["policies"]["grpo"]["vs_sft"]
    assert versus["diff"] == pytest.approx(0.25) and versus["excludes_zero"] and versus["n"] == 20
    assert s["policies"]["grpo"]["vs_sft_current"]["n"] == 10


@needs_tokenizer
def test_proxy_check_pairs_dense_reward_with_answer_f1(tmp_path):
    from training.proxy import candidates, proxy_check

    # An answerer that answers with the text of the first memory it is shown: its F1 follows the memory.
    def first_memory(messages):
        content = messages[-1]["content"]
        line = next((ln for ln in content.splitlines() if ln.startswith("[0]")), "")
        return f"**Answer:** {line.split(': ', 1)[-1]}"

    from memory_agent.llms import ScriptedLLM

    report = proxy_check("synthetic:2:7", answer_model=ScriptedLLM(default=first_memory), limit=6, embedder="hashing")
    s = report["summary"]
    assert s["episodes"] == 6 and s["pairs"] >= 6 * 3
    assert -1 <= s["spearman"] <= 1 and all(0 <= p["f1"] <= 1 for p in report["pairs"])
    from memory_store import HashingEmbedder
    from training.episodes import GoldReplay, load_conversations, manager_episodes

    e = next(e for e in manager_episodes(load_conversations("synthetic:1:7"), GoldReplay(), HashingEmbedder(64))
             if e.hits)
    cands = candidates(e)
    assert cands[0] == e.target() and "NOOP" in cands and len(cands) == len(set(cands))
