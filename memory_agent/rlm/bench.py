"""Needle-in-a-haystack benchmark of the recursive retriever (a pure function returning a dict).

What: a deterministic synthetic chat history (seeded filler dialogue) with
unique made-up facts ("Zorblat's locker code is 4471") spread through it, far
longer than the sub-model's window; each needle is asked with
``strategy="program"`` and scored by whether the answer contains the value.
Run batched (``llm_batch`` = one ``generate`` call) and, optionally,
sequentially (one ``generate`` call per sub-call) to measure the batching
speed-up. ``memory-agent bench rlm`` only formats what this returns.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from memory_agent.rlm.retriever import RecursiveRetriever, RLMLimits

__all__ = ["make_history", "run_rlm_benchmark", "NAMES", "ATTRIBUTES"]

NAMES = ["Zorblat", "Quimby", "Fennick", "Brastow", "Oolavi", "Trevane", "Marzipo", "Kelloran", "Yusrabi",
         "Dovrik", "Pellinor", "Saffrey", "Ulthane", "Grizwald", "Nimmoth", "Vashenko", "Rilbury", "Tamsquik",
         "Ebberly", "Holvaro", "Jindrel", "Corvasse", "Lumbrick", "Wexlor", "Ardenquist", "Bilvane", "Ostrava",
         "Prandle", "Quennet", "Skelmore"]
ATTRIBUTES = ["locker code", "bike lock PIN", "apartment number", "gym membership number", "safe combination",
              "parking spot number"]
_TOPICS = {
    "weather": ["it rained all morning", "the forecast says sun on Sunday", "the wind knocked over the bins"],
    "cooking": ["I tried a new lentil soup", "the bread did not rise again", "we grilled peppers and onions"],
    "travel": ["the train was forty minutes late", "I booked a cabin by the lake", "the airport queue was long"],
    "work": ["the meeting ran over", "my manager liked the report", "I finally fixed that spreadsheet"],
    "music": ["I practiced the guitar riff", "the concert tickets sold out", "that album grows on me"],
    "garden": ["the tomatoes are ripening", "snails ate the lettuce", "I planted tulip bulbs"],
    "movies": ["the sequel was better than expected", "we watched an old western", "the plot made no sense"],
    "sports": ["the team lost in overtime", "I ran five kilometres", "the pool was closed for cleaning"],
}
_USER = ["Honestly, {f}.", "So {f}, can you believe it?", "Quick update: {f}.", "Today {f}.", "You know what, {f}."]
_ASSISTANT = ["That sounds {a}. What happened next?", "Oh, {a}! Tell me more about it.",
              "I see, that is {a}. How do you feel about it?", "Sounds {a}. Anything else on your mind?"]
_ADJ = ["frustrating", "lovely", "interesting", "exhausting", "exciting", "unusual", "relaxing", "annoying"]


def make_history(n_chars: int, n_needles: int, seed: int = 0) -> tuple[str, list[dict[str, str]]]:
    """(history text, needles) with each needle ``{"name", "attribute", "value", "question", "line"}``."""
    if n_needles > len(NAMES):
        raise ValueError(f"at most {len(NAMES)} needles")
    rnd = random.Random(seed)
    lines: list[str] = []
    size = 0
    topics = list(_TOPICS)
    while size < n_chars:
        topic = rnd.choice(topics)
        user = "User: " + rnd.choice(_USER).format(f=rnd.choice(_TOPICS[topic]))
        bot = "Assistant: " + rnd.choice(_ASSISTANT).format(a=rnd.choice(_ADJ))
        lines += [user, bot]
        size += len(user) + len(bot) + 2
    needles = []
    names = rnd.sample(NAMES, n_needles)
    slots = sorted(rnd.sample(range(0, len(lines), 2), n_needles))  # user turns, spread at random
    for name, slot in zip(names, slots):
        attribute = rnd.choice(ATTRIBUTES)
        value = str(rnd.randrange(1000, 10000))
        line = f"User: By the way, please remember that {name}'s {attribute} is {value}."
        lines[slot] = line
        needles.append({"name": name, "attribute": attribute, "value": value, "line": line,
                        "question": f"What is {name}'s {attribute}?"})
    return "\n".join(lines), needles


def _run_mode(llm: Any, history: str, needles: list[dict], *, sequential: bool, window: int,
              max_candidates: int, max_new_tokens: int, progress: Callable[[str], None]) -> dict:
    limits = RLMLimits(batch_size=1 if sequential else 32, max_subcalls=64, sub_max_new_tokens=max_new_tokens)
    options = {"window": window, "max_candidates": max_candidates, "max_new_tokens": max_new_tokens,
               "fallback": False}
    correct, rows = 0, []
    sub_calls = generate_calls = tokens = backend_tokens = 0
    protections: dict = {}
    started = time.perf_counter()
    for k, needle in enumerate(needles, 1):
        retriever = RecursiveRetriever(llm, llm, limits=limits, strategy="program", program_options=options)
        res = retriever.run(needle["question"], history)
        ok = needle["value"] in res.answer
        correct += ok
        sub_calls += res.usage["sub_calls"]
        generate_calls += res.usage["generate_calls"]
        tokens += res.usage["total_tokens"]
        backend_tokens += res.usage.get("backend_reported_tokens") or 0
        protections = res.protections
        rows.append({"question": needle["question"], "expected": needle["value"], "answer": res.answer[:120],
                     "correct": ok, "sub_calls": res.usage["sub_calls"], "wall_s": res.usage["wall_s"]})
        progress(f"{'seq' if sequential else 'batch'} {k}/{len(needles)} {'ok ' if ok else 'MISS'} "
                 f"{needle['question']} -> {res.answer[:60]!r}")
    wall = time.perf_counter() - started
    n = len(needles)
    return {
        "mode": "sequential" if sequential else "batched",
        "accuracy": round(correct / n, 4), "correct": correct, "queries": n,
        "wall_s": round(wall, 2), "s_per_query": round(wall / n, 3),
        "sub_calls_per_query": round(sub_calls / n, 2), "generate_calls_per_query": round(generate_calls / n, 2),
        "tokens_per_query_estimate": round(tokens / n, 1),
        "tokens_per_query_backend": round(backend_tokens / n, 1) if backend_tokens else None,
        "misses": [r for r in rows if not r["correct"]][:10],
        "_protections": protections,
    }


def run_rlm_benchmark(llm: Any, *, needles: int = 20, history_chars: int = 820_000, seed: int = 0,
                      sequential: bool = False, compare_sequential: bool = False, window: int = 300,
                      max_candidates: int = 2, max_new_tokens: int = 24, model_window_tokens: int = 2048,
                      progress: Callable[[str], None] | None = None) -> dict:
    """Needle-in-a-haystack accuracy, time, sub-calls and tokens; both modes when ``compare_sequential``."""
    progress = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    history, facts = make_history(history_chars, needles, seed)
    progress(f"history: {len(history):,} characters, {len(facts)} needles ({time.perf_counter() - t0:.1f} s)")
    kwargs = {"window": window, "max_candidates": max_candidates, "max_new_tokens": max_new_tokens,
              "progress": progress}
    modes = []
    if compare_sequential or not sequential:
        modes.append(_run_mode(llm, history, facts, sequential=False, **kwargs))
    if compare_sequential or sequential:
        modes.append(_run_mode(llm, history, facts, sequential=True, **kwargs))
    protections = modes[-1].pop("_protections")
    for m in modes:
        m.pop("_protections", None)
    window_chars = model_window_tokens * 4
    result: dict = {
        "benchmark": "rlm_needle_in_haystack", "strategy": "program",
        "model": getattr(llm, "name", type(llm).__name__),
        "history_chars": len(history), "model_window_tokens": model_window_tokens,
        "history_x_window": round(len(history) / window_chars, 1), "needles": len(facts), "seed": seed,
        "verify_window_chars": window, "candidates_per_needle": max_candidates,
        "results": {m["mode"]: m for m in modes},
        "sandbox_protections": {k: v for k, v in protections.items()
                                if k in ("filesystem_isolation", "dropped_privileges", "network_namespace",
                                         "readonly_shared_tmp", "process_limit_binds", "no_new_privs", "seccomp",
                                         "audit_hook_blocks")},
    }
    if len(modes) == 2 and modes[0]["wall_s"] > 0:
        result["batching_speedup"] = round(modes[1]["wall_s"] / modes[0]["wall_s"], 2)
    return result
