"""The recursive retriever's root loop, budgets and strategies, with fake models.

Every fake model here sits behind a window guard: any conversation longer than
8,000 characters fails the test, so "the root never sees the whole context"
and "sub-calls stay within the sub-model's window" are checked on every call.
"""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from memory_agent.errors import BackendError
from memory_agent.rlm import RecursiveRetriever, RLMLimits, RLMResult
from memory_agent.rlm.retriever import code_blocks, parse_final

WINDOW = 8000
NEEDLE_RX = re.compile(r"locker code is (\d+)")


class WindowExceeded(AssertionError):
    pass


def _guard(conv):
    n = sum(len(m["content"]) for m in conv)
    if n > WINDOW:
        raise WindowExceeded(f"prompt of {n} characters > {WINDOW}")
    return n


class FakeSub:
    """Answers from its slice only: the needle's value if present, else NONE."""

    def __init__(self, answer=None):
        self.batches = []  # one entry per generate() call: the user texts
        self.answer = answer or self._needle

    @staticmethod
    def _needle(text):
        m = NEEDLE_RX.search(text)
        return m.group(1) if m else "NONE"

    def generate(self, batch, *, max_new_tokens=256, temperature=0.0, stop=None):
        for conv in batch:
            _guard(conv)
        texts = [conv[-1]["content"] for conv in batch]
        self.batches.append(texts)
        return [self.answer(t) for t in texts]

    @property
    def calls(self):
        return [t for b in self.batches for t in b]


class ScriptedRoot:
    """Root model: the next scripted reply per call (then a fixed FINAL)."""

    def __init__(self, replies, tail="FINAL(out of script)"):
        self.replies = list(replies)
        self.tail = tail
        self.prompts = []

    def generate(self, batch, *, max_new_tokens=256, temperature=0.0, stop=None):
        out = []
        for conv in batch:
            _guard(conv)
            self.prompts.append([dict(m) for m in conv])
            out.append(self.replies.pop(0) if self.replies else self.tail)
        return out


def repl(code):
    return f"```repl\n{code}\n```"


def haystack(n_chars, needle=None, at=0.6, seed=0):
    rnd = random.Random(seed)
    words = "alpha beta gamma delta weather lunch movie garden music travel river paint".split()
    lines, size = [], 0
    while size < n_chars:
        line = ("User: " if len(lines) % 2 == 0 else "Assistant: ") + " ".join(rnd.choice(words) for _ in range(12))
        lines.append(line)
        size += len(line) + 1
    if needle:
        lines[int(len(lines) * at)] = needle
    return "\n".join(lines)


@pytest.fixture(scope="module")
def big_context():
    ctx = haystack(5_000_000, "User: by the way, Zorblat's locker code is 4471.")
    assert len(ctx) >= 5_000_000  # >= 600x the guarded window
    return ctx


# --------------------------------------------------------------------------- needles


def test_program_finds_needle_in_5m_chars_with_every_prompt_in_window(big_context):
    sub = FakeSub()
    res = RecursiveRetriever(ScriptedRoot([]), sub, strategy="program").run(
        "What is Zorblat's locker code?", big_context)
    assert isinstance(res, RLMResult)
    assert res.answer == "4471"
    assert res.stop_reason == "program"
    assert 1 <= res.usage["sub_calls"] <= 4
    assert len(sub.batches) == 1  # the verification sub-calls went out as one batch


def test_code_strategy_map_reduce_over_5m_chars(big_context):
    sub = FakeSub()
    root = ScriptedRoot([repl("ans = map_reduce('What is the code?')\nprint(ans)"), "FINAL_VAR(ans)"])
    limits = RLMLimits(max_subcalls=2000)
    res = RecursiveRetriever(root, sub, limits=limits, strategy="code").run("What is the code?", big_context)
    assert res.answer == "4471"
    assert res.stop_reason == "final_var"
    n_calls = len(sub.calls)
    assert n_calls == res.usage["sub_calls"] >= len(big_context) // limits.max_subcall_chars
    assert len(sub.batches) == math.ceil(n_calls / limits.batch_size)  # batched, not one by one
    # the root saw a description, never the context
    assert all(sum(len(m["content"]) for m in p) < 8000 for p in root.prompts)


def test_program_falls_back_to_map_reduce_without_keyword_hits():
    ctx = haystack(300_000, "Assistant: noted, the locker code is 9083.")
    sub = FakeSub()
    res = RecursiveRetriever(ScriptedRoot([]), sub, strategy="program").run("Which number did Quimby pick?", ctx)
    assert res.answer == "9083"
    assert res.usage["sub_calls"] >= len(ctx) // 6000


def test_map_reduce_count_makes_ceil_n_over_chunk_calls_in_order():
    n, chunk = 95, 10
    records = [{"id": 100 + i, "time": f"2024-01-{1 + i % 28:02d}", "text": f"note {i}: " + ("apple " * (i % 3))}
               for i in range(n)]
    sub = FakeSub(answer=lambda t: str(t.split("Text:", 1)[-1].count("apple")))
    root = ScriptedRoot([repl(f"total = map_reduce('How many apples?', chunk_records={chunk}, "
                              "reduce=lambda xs: sum(int(x) for x in xs))\nFINAL(total)")])
    res = RecursiveRetriever(root, sub, strategy="code").run("How many apples?", records)
    assert res.answer == str(sum(i % 3 for i in range(n)))
    calls = sub.calls
    assert len(calls) == math.ceil(n / chunk) == res.usage["sub_calls"]
    firsts = [int(re.search(r"\[#(\d+) ", c).group(1)) for c in calls]
    assert firsts == [100 + k * chunk for k in range(math.ceil(n / chunk))]  # in order


def test_memory_bank_cites_the_needle_record():
    records = [{"id": i, "time": "2024-05-01", "text": f"I had lunch at the garden cafe, day {i}."} for i in range(400)]
    records[123] = {"id": 123, "time": "2024-05-02", "text": "My locker code is 5512, said Zorblat."}
    res = RecursiveRetriever(ScriptedRoot([]), FakeSub(), strategy="program").run(
        "What is Zorblat's locker code?", records)
    assert res.answer == "5512"
    assert res.cited_ids == [123]


def test_list_of_str_context_and_trajectory_file(tmp_path):
    ctx = ["hello there", "the locker code is 777", "bye"]
    out = tmp_path / "traj.jsonl"
    root = ScriptedRoot([repl("print(grep('locker'))"), repl("FINAL(llm('What is the code?', context_text))")])
    res = RecursiveRetriever(root, FakeSub(), strategy="code").run("code?", ctx, trajectory_path=out)
    assert res.answer == "777"
    events = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = {e["type"] for e in events}
    assert {"root_prompt", "root_reply", "cell", "subcall"} <= kinds
    cell = next(e for e in events if e["type"] == "cell")
    assert "the locker code is 777" in cell["stdout"]
    assert res.usage["iterations"] == 2 and res.usage["root_calls"] == 2


# --------------------------------------------------------------------------- FINAL handling


def test_parse_final_only_outside_fences():
    assert parse_final("Thinking... FINAL(42)") == ("FINAL", "42")
    assert parse_final('FINAL("Paris (France)")') == ("FINAL", "Paris (France)")
    assert parse_final("```repl\nFINAL(1)\n```\nno answer yet") == (None, None)
    assert parse_final("```text\nFINAL(1)\n```") == (None, None)
    assert parse_final("done: FINAL_VAR(result)") == ("FINAL_VAR", "result")
    assert parse_final('FINAL_VAR("x")') == ("FINAL_VAR", "x")
    assert code_blocks("a\n```python\nx=1\n```\nb\n```repl\ny=2\n```\n```text\nz\n```") == ["x=1\n", "y=2\n"]


def test_final_inside_code_runs_and_prose_final_wins_when_no_code():
    res = RecursiveRetriever(ScriptedRoot([repl("FINAL(6*7)")]), FakeSub(), strategy="code").run("q", "ctx")
    assert (res.answer, res.stop_reason) == ("42", "final")
    res = RecursiveRetriever(ScriptedRoot(["The answer is FINAL(blue)."]), FakeSub(), strategy="code").run("q", "c")
    assert (res.answer, res.stop_reason) == ("blue", "final")


def test_final_in_a_non_repl_fence_is_not_an_answer():
    root = ScriptedRoot(["```text\nFINAL(wrong)\n```", "FINAL(right)"])
    res = RecursiveRetriever(root, FakeSub(), strategy="code").run("q", "ctx")
    assert res.answer == "right"
    assert res.usage["iterations"] == 2


def test_final_var_prose_and_unknown_name():
    root = ScriptedRoot([repl("x = 'seven'"), "FINAL_VAR(missing)", "ok: FINAL_VAR(x)"])
    res = RecursiveRetriever(root, FakeSub(), strategy="code").run("q", "ctx")
    assert (res.answer, res.stop_reason) == ("seven", "final_var")
    feedback = root.prompts[2][-1]["content"]
    assert "FINAL_VAR(missing) failed" in feedback
    # in code, an unknown name is a NameError shown to the model
    root = ScriptedRoot([repl("FINAL_VAR('nope')"), "FINAL(done)"])
    res = RecursiveRetriever(root, FakeSub(), strategy="code").run("q", "ctx")
    assert res.answer == "done"
    assert "no variable named 'nope'" in root.prompts[1][-1]["content"]


def test_iteration_limit_asks_for_a_best_effort_answer():
    root = ScriptedRoot([repl("print(1)")] * 3, tail="I think it is FINAL(guess)")
    res = RecursiveRetriever(root, FakeSub(), strategy="code", max_iterations=3).run("q", "ctx")
    assert (res.answer, res.stop_reason) == ("guess", "max_iterations")
    assert res.usage["root_calls"] == 4
    assert "no steps left" in root.prompts[-1][-1]["content"]


# --------------------------------------------------------------------------- budgets and depth


def test_subcall_budget_is_enforced_host_side():
    code = ("rs = llm_batch(['a', 'b', 'c', 'd', 'e'])\n"
            "print([type(r).__name__ for r in rs])\n"
            "try:\n    llm('again')\nexcept BudgetExceeded as e:\n    print('caught', e)")
    root = ScriptedRoot([repl(code), "FINAL(x)"])
    res = RecursiveRetriever(root, FakeSub(), limits=RLMLimits(max_subcalls=3), strategy="code").run("q", "c")
    out = next(e for e in res.trajectory if e["type"] == "cell")["stdout"]
    assert "['str', 'str', 'str', 'BudgetExceeded', 'BudgetExceeded']" in out
    assert "caught sub-call budget of 3 calls used up" in out
    assert res.usage["sub_calls"] == 3


def test_token_budget_blocks_subcalls_then_the_root():
    code = "try:\n    llm('q', 'x' * 4000)\nexcept BudgetExceeded as e:\n    print('tokens:', e)"
    root = ScriptedRoot([repl(code), repl("print(2)")])
    limits = RLMLimits(max_tokens=1000, root_max_new_tokens=500)
    res = RecursiveRetriever(root, FakeSub(), limits=limits, strategy="code").run("q", "c")
    out = next(e for e in res.trajectory if e["type"] == "cell")["stdout"]
    assert "tokens: token budget" in out
    assert res.stop_reason == "budget"
    assert res.usage["sub_calls"] == 0


def test_model_code_cannot_raise_its_budget():
    code = ("import gc\nfor o in gc.get_objects():\n    if isinstance(o, dict) and 'max_subcall_chars' in o:\n"
            "        o['max_subcall_chars'] = 10**9\n"
            "try:\n    llm('q', 'y' * 20000)\nexcept SubCallTooLarge as e:\n    print('still limited')")
    root = ScriptedRoot([repl(code), "FINAL(x)"])
    res = RecursiveRetriever(root, FakeSub(), strategy="code").run("q", "c")
    assert "still limited" in next(e for e in res.trajectory if e["type"] == "cell")["stdout"]


def test_oversized_subcall_raises_inside_the_repl():
    code = ("try:\n    llm('what?', context_text)\nexcept SubCallTooLarge as e:\n    print('TOO LARGE:', e)\n"
            "parts = chunks(5000)\nprint(len(parts), max(len(p) for p in parts))")
    root = ScriptedRoot([repl(code), "FINAL(ok)"])
    sub = FakeSub()
    res = RecursiveRetriever(root, sub, strategy="code").run("q", haystack(50_000))
    out = next(e for e in res.trajectory if e["type"] == "cell")["stdout"]
    assert "TOO LARGE: sub-call of" in out
    assert sub.calls == []  # the model was never called with it


def test_failed_batch_item_does_not_sink_the_batch():
    class Flaky(FakeSub):
        def generate(self, batch, **kw):
            if any("BOOM" in c[-1]["content"] for c in batch):
                self.batches.append(["<failed>"])
                raise BackendError("backend fell over")
            return super().generate(batch, **kw)

    code = ("rs = llm_batch([('q', 'locker code is 1'), ('q', 'BOOM'), ('q', 'locker code is 3')])\n"
            "print([r if isinstance(r, str) else 'ERR:' + type(r).__name__ for r in rs])")
    root = ScriptedRoot([repl(code), "FINAL(x)"])
    sub = Flaky()
    res = RecursiveRetriever(root, sub, strategy="code").run("q", "c")
    out = next(e for e in res.trajectory if e["type"] == "cell")["stdout"]
    assert "['1', 'ERR:SubCallError', '3']" in out


def test_llm_batch_is_one_generate_call():
    code = "print(llm_batch([('q', f'locker code is {i}') for i in range(20)]))"
    sub = FakeSub()
    RecursiveRetriever(ScriptedRoot([repl(code), "FINAL(x)"]), sub, strategy="code").run("q", "c")
    assert len(sub.batches) == 1 and len(sub.batches[0]) == 20
    sub = FakeSub()
    RecursiveRetriever(ScriptedRoot([repl(code), "FINAL(x)"]), sub, strategy="code",
                       limits=RLMLimits(batch_size=1)).run("q", "c")
    assert len(sub.batches) == 20  # sequential mode


class RootOrSub(FakeSub):
    """A sub-model that also acts as the root of nested REPLs (recursive sub-calls)."""

    def __init__(self, nested_replies):
        super().__init__()
        self.nested = list(nested_replies)
        self.root_prompts = []

    def generate(self, batch, **kw):
        if "Python REPL" in batch[0][0]["content"]:
            for conv in batch:
                _guard(conv)
            self.root_prompts.append(batch[0])
            return [self.nested.pop(0) if self.nested else "FINAL(nested gave up)" for _ in batch]
        return super().generate(batch, **kw)


def test_depth_two_recursion():
    ctx = haystack(200_000, "User: Zorblat's locker code is 3141.")
    root = ScriptedRoot([repl("r = llm('Find the locker code.', context_text[:150000], recursive=True)\nFINAL(r)")])
    sub = RootOrSub([repl("FINAL(map_reduce('What is the locker code?'))")])
    res = RecursiveRetriever(root, sub, limits=RLMLimits(max_depth=2), strategy="code").run("code?", ctx)
    assert res.answer == "3141"
    assert res.usage["max_depth_reached"] == 2
    assert len(sub.root_prompts) == 1
    assert any(e["type"] == "recursive_call" and e["depth"] == 1 for e in res.trajectory)
    assert all(e["depth"] == 2 for e in res.trajectory if e["type"] == "subcall")


def test_at_max_depth_recursive_is_a_plain_completion():
    root = ScriptedRoot([repl("FINAL(llm('code?', 'the locker code is 55', recursive=True))")])
    sub = RootOrSub([])
    res = RecursiveRetriever(root, sub, limits=RLMLimits(max_depth=1), strategy="code").run("q", "c")
    assert res.answer == "55"
    assert sub.root_prompts == []
    assert res.usage["max_depth_reached"] == 1


# --------------------------------------------------------------------------- program helpers


def test_candidates_rank_rare_keywords_first_and_grounding():
    from memory_agent.rlm import strategies

    text = "\n".join(["User: my locker code is 1111", "Assistant: nice weather",
                      "User: Fennick's locker code is 9611", "User: the code review went well"])
    env = strategies.Env(text, {}, None, None)
    cands = strategies.candidates(env, "What is Fennick's locker code?", max_candidates=2)
    assert cands == ["User: Fennick's locker code is 9611", "User: my locker code is 1111"]
    assert strategies.keywords("What is Fennick's locker code?") == ["fennick", "locker", "code"]
    assert not strategies.grounded("What is Fennick's code?", "Fennick's code is 1111", cands[1])
    assert strategies.grounded("What is Fennick's code?", "The answer is: 9611", cands[0])
    assert strategies.clean_answer("The answer to this question is: 9611.\nmore") == "9611."
