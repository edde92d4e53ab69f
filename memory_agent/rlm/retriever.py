"""The recursive retriever's root loop, host-side budgets and sub-call dispatch.

What: :class:`RecursiveRetriever` puts the context in a sandboxed REPL
(:mod:`memory_agent.rlm.sandbox`), lets the root model write code against it
(``strategy="code"``) or runs the fixed grep -> verify -> combine program
(``strategy="program"``), and serves the REPL's ``llm``/``llm_batch`` RPCs.

Why the budgets live here: the REPL is untrusted model code, so depth,
sub-call count, tokens, per-call size and wall time are counted in this
process (:class:`_Budget`, shared with nested retrievers of recursive
sub-calls) and the REPL only ever sees the outcome (an answer, or an
exception such as ``SubCallTooLarge`` / ``BudgetExceeded``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memory_agent.errors import BackendError, BudgetExceeded, InvalidInput, MemoryAgentError, SandboxError
from memory_agent.llms.base import Usage, UsageReporting
from memory_agent.rlm import prompts, strategies
from memory_agent.rlm.sandbox import Sandbox, SandboxConfig

__all__ = ["RLMLimits", "RLMResult", "RecursiveRetriever", "parse_final", "code_blocks"]

# What a failing model call may raise; anything else is a bug and propagates.
_MODEL_ERRORS = (MemoryAgentError, RuntimeError, ValueError, OSError, TimeoutError)
_CODE_BLOCK = re.compile(r"```(?:repl|python|py)[ \t]*\r?\n(.*?)```", re.DOTALL)
_ANY_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_FINAL_VAR = re.compile(r"\bFINAL_VAR\(\s*[\"']?([A-Za-z_]\w*)[\"']?\s*\)")
_FINAL = re.compile(r"\bFINAL\(")


@dataclass(frozen=True)
class RLMLimits:
    """Every limit of one retrieval. Host-side and frozen: REPL code cannot touch it."""

    max_depth: int = 2                 # deepest LM call: 0 = root; 1 = plain sub-calls only (reference)
    max_subcalls: int = 500            # sub-calls in the whole retrieval, nested ones included
    max_tokens: int = 2_000_000        # root + sub prompt and completion tokens (estimated chars/4)
    max_seconds: float = 900.0         # wall time of the whole retrieval
    max_subcall_chars: int = 6000      # one sub-call's full prompt (system + slice + task)
    sub_max_new_tokens: int = 128
    root_max_new_tokens: int = 512
    max_root_prompt_chars: int = 7000  # the root conversation is trimmed in the middle beyond this
    max_output_chars: int = 2000       # REPL output shown back to the root per reply
    batch_size: int = 32               # conversations per generate() call in llm_batch (1 = sequential)
    max_concurrency: int = 1           # generate() calls in flight at once (raise for HTTP backends)
    cache_size: int = 4096             # identical sub-calls are answered from memory
    cell_timeout: float = 20.0
    memory_mb: int = 512
    cpu_seconds: int = 300
    max_open_files: int = 64
    max_file_mb: int = 16
    sandbox_user: str = "nobody"
    sandbox_isolation: str = "auto"    # see SandboxConfig.isolation

    def sandbox_config(self) -> SandboxConfig:
        return SandboxConfig(cell_timeout=self.cell_timeout, memory_mb=self.memory_mb,
                             cpu_seconds=self.cpu_seconds, max_open_files=self.max_open_files,
                             max_file_mb=self.max_file_mb, user=self.sandbox_user,
                             isolation=self.sandbox_isolation)


@dataclass
class RLMResult:
    answer: str
    cited_ids: list = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    trajectory: list = field(default_factory=list)
    stop_reason: str = ""
    protections: dict = field(default_factory=dict)


def _tokens(text_or_messages) -> int:
    if isinstance(text_or_messages, list):
        return sum(_tokens(m["content"]) for m in text_or_messages)
    return (len(text_or_messages) + 3) // 4


class _Budget:
    """Counters shared by a retrieval and its nested retrievals; thread-safe."""

    def __init__(self, limits: RLMLimits):
        self.limits = limits
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.root_calls = self.sub_calls = self.generate_calls = self.cache_hits = 0
        self.root_tokens = self.sub_tokens = self.reserved = self.backend_tokens = 0
        self.max_depth_reached = 0
        self.cache: OrderedDict = OrderedDict()

    def reserve(self, kind: str, tokens: int, depth: int) -> None:
        lim = self.limits
        with self.lock:
            if time.monotonic() - self.started > lim.max_seconds:
                raise BudgetExceeded(f"time budget of {lim.max_seconds:.0f} s used up")
            if kind == "sub" and self.sub_calls >= lim.max_subcalls:
                raise BudgetExceeded(f"sub-call budget of {lim.max_subcalls} calls used up")
            used = self.root_tokens + self.sub_tokens + self.reserved
            if used + tokens > lim.max_tokens:
                raise BudgetExceeded(f"token budget of {lim.max_tokens:,} used up ({used:,} spent or reserved)")
            self.reserved += tokens
            if kind == "sub":
                self.sub_calls += 1
            else:
                self.root_calls += 1
            self.max_depth_reached = max(self.max_depth_reached, depth)

    def settle(self, kind: str, reserved: int, spent: int) -> None:
        with self.lock:
            self.reserved -= reserved
            if kind == "sub":
                self.sub_tokens += spent
            else:
                self.root_tokens += spent

    def cached(self, key):
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                self.cache_hits += 1
                return self.cache[key]
        return None

    def remember(self, key, value: str) -> None:
        with self.lock:
            self.cache[key] = value
            while len(self.cache) > self.limits.cache_size:
                self.cache.popitem(last=False)


def code_blocks(reply: str) -> list[str]:
    """The ```repl / ```python blocks of a root reply, in order."""
    return [m.group(1) for m in _CODE_BLOCK.finditer(reply)]


def parse_final(reply: str) -> tuple[str | None, str | None]:
    """``("FINAL", text)`` / ``("FINAL_VAR", name)`` / ``(None, None)``, looking only OUTSIDE code fences."""
    prose = _ANY_FENCE.sub("", reply)
    var = _FINAL_VAR.search(prose)
    fin = _FINAL.search(prose)
    if var and (not fin or var.start() <= fin.start()):
        return "FINAL_VAR", var.group(1)
    if not fin:
        return None, None
    i, depth = fin.end(), 1
    j = i
    while j < len(prose) and depth:
        depth += {"(": 1, ")": -1}.get(prose[j], 0)
        j += 1
    text = prose[i: j - 1] if depth == 0 else prose[i:]
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return "FINAL", text.strip()


def _normalise_context(context) -> str | list:
    if isinstance(context, str):
        return context
    if isinstance(context, (list, tuple)):
        if context and all(isinstance(c, dict) for c in context):
            out = []
            for c in context:
                if "text" not in c:
                    raise InvalidInput("memory records need a 'text' key")
                out.append({"id": c.get("id"), "time": str(c.get("time") or c.get("created_at") or ""),
                            "text": str(c["text"])})
            return out
        if all(isinstance(c, str) for c in context):
            return list(context)
    raise InvalidInput("context must be a str, a list of str, or a list of {'id','time','text'} dicts")


def _err(kind: str, message: str) -> dict:
    return {"ok": False, "error": kind, "message": message}


class RecursiveRetriever:
    """RLM-style retrieval: the root model works on the context through a sandboxed REPL.

    ``strategy``: ``"code"`` (the root writes code), ``"program"`` (a fixed
    grep -> verify -> combine cell; for small models), or ``"auto"``
    (``program`` for a local ``TransformersLLM`` root, else ``code``).
    """

    def __init__(self, llm: Any, sub_llm: Any = None, limits: RLMLimits | None = None,
                 strategy: str = "auto", max_iterations: int = 8, program_options: dict | None = None,
                 *, _budget: _Budget | None = None, _depth: int = 0):
        if strategy not in ("auto", "code", "program"):
            raise InvalidInput(f"unknown strategy {strategy!r} (code, program or auto)")
        if strategy == "auto":
            strategy = "program" if type(llm).__name__ == "TransformersLLM" else "code"
        self.llm = llm
        self.sub_llm = sub_llm if sub_llm is not None else llm
        self.limits = limits or RLMLimits()
        self.strategy = strategy
        self.max_iterations = max(1, int(max_iterations))
        self.program_options = dict(program_options or {})
        self._budget = _budget
        self._depth = _depth
        self.protections: dict = {}

    # ------------------------------------------------------------------ public

    def run(self, query: str, context, trajectory_path: str | Path | None = None) -> RLMResult:
        ctx = _normalise_context(context)
        budget = self._budget or _Budget(self.limits)
        trajectory: list[dict] = []
        answer, stop = self._run(query, ctx, budget, trajectory)
        result = RLMResult(
            answer=answer, cited_ids=_cited_ids(ctx, trajectory, answer), stop_reason=stop,
            trajectory=trajectory, protections=self.protections,
            usage={
                "root_calls": budget.root_calls, "root_tokens": budget.root_tokens,
                "sub_calls": budget.sub_calls, "sub_tokens": budget.sub_tokens,
                "total_tokens": budget.root_tokens + budget.sub_tokens, "token_count": "estimate (chars/4)",
                "backend_reported_tokens": budget.backend_tokens or None,
                "generate_calls": budget.generate_calls, "cache_hits": budget.cache_hits,
                "iterations": sum(1 for e in trajectory if e["type"] == "root_reply" and e["depth"] == self._depth),
                "max_depth_reached": budget.max_depth_reached,
                "wall_s": round(time.monotonic() - budget.started, 3),
                "strategy": self.strategy,
            })
        if trajectory_path is not None:
            with open(trajectory_path, "w", encoding="utf-8") as fh:
                for event in trajectory:
                    fh.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        return result

    # ------------------------------------------------------------------ loop

    def _run(self, query: str, ctx, budget: _Budget, traj: list) -> tuple[str, str]:
        flat = strategies.flatten(ctx)
        repl_limits = {"max_subcall_chars": self.limits.max_subcall_chars,
                       "template_chars": prompts.template_chars(),
                       "sub_max_new_tokens": self.limits.sub_max_new_tokens}
        sandbox = Sandbox(ctx, config=self.limits.sandbox_config(),
                          on_llm=lambda items: self._serve(items, budget, traj), repl_limits=repl_limits)
        with sandbox:
            self.protections = sandbox.protections
            if self.strategy == "program":
                return self._program(query, sandbox, traj)
            return self._code_loop(query, ctx, flat, sandbox, budget, traj)

    def _cell(self, sandbox: Sandbox, code: str, traj: list):
        cell = sandbox.run_cell(code)
        traj.append({"type": "cell", "depth": self._depth, "code": code, "stdout": cell.stdout,
                     "error": cell.error, "final": cell.final, "restarted": cell.restarted,
                     "seconds": round(cell.seconds, 3)})
        return cell

    def _program(self, query: str, sandbox: Sandbox, traj: list) -> tuple[str, str]:
        code = f"FINAL(program({query!r}, **{self.program_options!r}))"
        cell = self._cell(sandbox, code, traj)
        if cell.final is not None:
            return cell.final, "program"
        return "", "program_error"

    def _code_loop(self, query, ctx, flat, sandbox, budget, traj) -> tuple[str, str]:
        messages = prompts.root_messages(query, ctx, flat, self.limits.max_subcall_chars)
        for iteration in range(self.max_iterations):
            try:
                reply = self._root_call(messages, budget, traj, iteration)
            except BudgetExceeded as exc:
                traj.append({"type": "stop", "depth": self._depth, "reason": str(exc)})
                return "", "budget"
            messages.append({"role": "assistant", "content": reply})
            outputs = []
            for code in code_blocks(reply):
                cell = self._cell(sandbox, code, traj)
                outputs.append((code, cell.stdout, cell.error))
                if cell.final is not None:
                    return cell.final, "final_var" if cell.final_kind == "FINAL_VAR" else "final"
            kind, arg = parse_final(reply)
            if kind == "FINAL":
                return arg, "final"
            if kind == "FINAL_VAR":
                ok, value = sandbox.get_var(arg)
                if ok:
                    return value, "final_var"
                outputs.append(("", "", f"FINAL_VAR({arg}) failed: {value}. Assign it in a ```repl block "
                                        "first, or write FINAL(answer)."))
            if not outputs:
                outputs.append(("", "", "No ```repl block and no FINAL(...) found in your reply."))
            messages.append({"role": "user",
                             "content": prompts.format_cell_feedback(outputs, self.limits.max_output_chars)})
            messages = self._trim(messages)
        # out of iterations: one more root call asking for the answer given the trajectory
        messages.append({"role": "user", "content": prompts.BEST_EFFORT})
        try:
            reply = self._root_call(self._trim(messages), budget, traj, self.max_iterations)
        except BudgetExceeded:
            return "", "max_iterations"
        kind, arg = parse_final(reply)
        if kind == "FINAL":
            return arg, "max_iterations"
        if kind == "FINAL_VAR":
            ok, value = sandbox.get_var(arg)
            if ok:
                return value, "max_iterations"
        return _ANY_FENCE.sub("", reply).strip(), "max_iterations"

    def _trim(self, messages: list[dict]) -> list[dict]:
        """Drop the oldest exchanges after the first question until the prompt fits the root's budget."""
        limit = self.limits.max_root_prompt_chars
        msgs = list(messages)
        while prompts.messages_chars(msgs) > limit and len(msgs) > 3:
            del msgs[2]
        if prompts.messages_chars(msgs) > limit:
            room = max(200, limit - prompts.messages_chars(msgs[:2]))
            msgs[2:] = [{"role": m["role"], "content": m["content"][-room // max(1, len(msgs) - 2):]}
                        for m in msgs[2:]]
        return msgs

    def _root_call(self, messages: list[dict], budget: _Budget, traj: list, iteration: int) -> str:
        reserve = _tokens(messages) + self.limits.root_max_new_tokens
        # the root of a nested (recursive) REPL is itself a sub-call of the top-level retrieval
        kind = "root" if self._depth == 0 else "sub"
        budget.reserve(kind, reserve, self._depth)
        traj.append({"type": "root_prompt", "depth": self._depth, "iteration": iteration,
                     "messages": [dict(m) for m in messages]})
        try:
            reply = _generate(self.llm, [messages], self.limits.root_max_new_tokens, budget)[0]
        finally:
            budget.settle(kind, reserve, 0)
        budget.settle(kind, 0, _tokens(messages) + _tokens(reply))
        traj.append({"type": "root_reply", "depth": self._depth, "iteration": iteration, "text": reply})
        return reply

    # ------------------------------------------------------------------ sub-calls

    def _serve(self, items: list, budget: _Budget, traj: list) -> list[dict]:
        """Answer one llm/llm_batch RPC: size checks, budget, cache, batching, recursion."""
        lim = self.limits
        depth = self._depth + 1
        results: list[dict | None] = [None] * len(items)
        plain: list[tuple[int, list, int, tuple]] = []
        nested: list[int] = []
        for i, it in enumerate(items):
            prompt = it.get("prompt") if isinstance(it, dict) else None
            sl = it.get("slice") if isinstance(it, dict) else None
            if not isinstance(prompt, str) or (sl is not None and not isinstance(sl, str)):
                results[i] = _err("SubCallError", "llm(): prompt and context_slice must be str")
                continue
            mnt = it.get("max_new_tokens")
            mnt = lim.sub_max_new_tokens if not isinstance(mnt, int) else max(1, min(mnt, lim.sub_max_new_tokens))
            if it.get("recursive") and sl and depth < lim.max_depth:
                if len(prompt) > lim.max_subcall_chars:
                    results[i] = _err("SubCallTooLarge", f"prompt of {len(prompt):,} characters exceeds "
                                                         f"the per-call limit of {lim.max_subcall_chars:,}")
                else:
                    nested.append(i)
                continue
            msgs = prompts.sub_messages(prompt, sl)
            size = prompts.messages_chars(msgs)
            if size > lim.max_subcall_chars:
                results[i] = _err("SubCallTooLarge", (
                    f"sub-call of {size:,} characters exceeds the per-call limit of {lim.max_subcall_chars:,}; "
                    f"pass a smaller context_slice (e.g. chunks({lim.max_subcall_chars - len(prompt) - 200})) "
                    "or use map_reduce"))
                continue
            key = (prompt, sl, mnt)
            hit = budget.cached(key)
            if hit is not None:
                results[i] = {"ok": True, "text": hit}
                traj.append({"type": "subcall", "depth": depth, "prompt": prompt, "slice": sl,
                             "reply": hit, "cached": True})
                continue
            try:
                budget.reserve("sub", _tokens(msgs) + mnt, depth)
            except BudgetExceeded as exc:
                results[i] = _err("BudgetExceeded", str(exc))
                continue
            plain.append((i, msgs, mnt, key))
        self._run_plain(plain, results, budget, traj, depth)
        for i in nested:
            results[i] = self._run_nested(items[i]["prompt"], items[i]["slice"], budget, traj, depth)
        return [r if r is not None else _err("SubCallError", "no result") for r in results]

    def _run_plain(self, plain, results, budget, traj, depth) -> None:
        size = max(1, self.limits.batch_size)
        groups = [plain[k: k + size] for k in range(0, len(plain), size)]
        if self.limits.max_concurrency > 1 and len(groups) > 1:
            with ThreadPoolExecutor(max_workers=min(self.limits.max_concurrency, len(groups))) as pool:
                done = list(pool.map(lambda g: self._run_group(g, budget), groups))
        else:
            done = [self._run_group(g, budget) for g in groups]
        for group, outcome in zip(groups, done):
            for (i, msgs, mnt, key), (ok, text) in zip(group, outcome):
                spent = _tokens(msgs) + (_tokens(text) if ok else 0)
                budget.settle("sub", _tokens(msgs) + mnt, spent)
                if ok:
                    budget.remember(key, text)
                    results[i] = {"ok": True, "text": text}
                else:
                    results[i] = _err("SubCallError", text)
                traj.append({"type": "subcall", "depth": depth, "prompt": key[0], "slice": key[1],
                             "reply": text if ok else None, "error": None if ok else text})

    def _run_group(self, group, budget) -> list[tuple[bool, str]]:
        """One generate() call for the whole group; if it fails, each item alone (one bad item
        must not sink the batch)."""
        mnt = max(g[2] for g in group)
        try:
            return [(True, t) for t in _generate(self.sub_llm, [g[1] for g in group], mnt, budget)]
        except _MODEL_ERRORS as exc:
            if len(group) == 1:
                return [(False, f"{type(exc).__name__}: {exc}")]
        return [self._run_group([g], budget)[0] for g in group]

    def _run_nested(self, prompt: str, sl: str, budget: _Budget, traj: list, depth: int) -> dict:
        try:
            budget.reserve("sub", 0, depth)
        except BudgetExceeded as exc:
            return _err("BudgetExceeded", str(exc))
        child = RecursiveRetriever(self.sub_llm, self.sub_llm, limits=self.limits, strategy="code",
                                   max_iterations=self.max_iterations, _budget=budget, _depth=depth)
        traj.append({"type": "recursive_call", "depth": depth, "prompt": prompt, "slice_chars": len(sl)})
        try:
            answer, stop = child._run(prompt, sl, budget, traj)
        except SandboxError as exc:
            return _err("SubCallError", f"recursive sub-call failed: {exc}")
        traj.append({"type": "recursive_result", "depth": depth, "answer": answer, "stop_reason": stop})
        return {"ok": True, "text": answer}


def _generate(llm, conversations: list, max_new_tokens: int, budget: _Budget) -> list[str]:
    # a backend's own token count where it reports usage (UsageReporting); else none
    usage = llm.usage if isinstance(llm, UsageReporting) and isinstance(llm.usage, Usage) else None
    before = _backend_tokens(usage)
    out = llm.generate(conversations, max_new_tokens=max_new_tokens, temperature=0.0)
    after = _backend_tokens(usage)
    with budget.lock:
        budget.generate_calls += 1
        if before is not None and after is not None:
            # the backend's own count (a delta: approximate if another thread shares the model)
            budget.backend_tokens += max(0, after - before)
    if not isinstance(out, list) or len(out) != len(conversations) or not all(isinstance(t, str) for t in out):
        raise BackendError(f"generate() returned {type(out).__name__} of the wrong shape "
                           f"for {len(conversations)} conversations")
    return out


def _backend_tokens(usage: Usage | None) -> int | None:
    return None if usage is None else int(usage.prompt_tokens) + int(usage.completion_tokens)


def _cited_ids(ctx, traj: list, answer: str) -> list:
    """Ids of the memory records the answer relied on (empty for a raw-text context).

    The records (by their ``[#id`` marker, else by their text) inside the slices
    of sub-calls whose reply agrees with the final answer; if none agrees, of
    every sub-call that found something (non-NONE); with no sub-calls, of the
    REPL output the root saw. More than three are narrowed to those sharing a
    content word with the answer, when any do.
    """
    if not isinstance(ctx, list) or not ctx or not isinstance(ctx[0], dict):
        return []
    by_key = {str(r["id"]): r for r in ctx}
    subs = [e for e in traj if e["type"] == "subcall" and e.get("reply") and not strategies.is_none(e["reply"])]
    norm = strategies._norm
    na = norm(answer or "")
    agree = [e for e in subs if na and norm(e["reply"]) and (norm(e["reply"]) in na or na in norm(e["reply"]))]
    texts = [(e.get("slice") or "") + "\n" + e["prompt"] for e in (agree or subs)]
    if not texts:
        texts = [e.get("stdout") or "" for e in traj if e["type"] == "cell"]
    ids: list = []
    for text in texts:
        found = [m.group(1) for m in strategies.RECORD_MARKER.finditer(text)]
        if not found and len(text) <= 20_000 and len(ctx) <= 5000:
            found = [str(r["id"]) for r in ctx if len(r["text"]) >= 8 and r["text"] in text]
        for key in found:
            if key in by_key and by_key[key]["id"] not in ids:
                ids.append(by_key[key]["id"])
    words = set(strategies.keywords(answer or ""))
    if len(ids) > 3 and words:
        narrowed = [i for i in ids if words & set(strategies.keywords(by_key[str(i)]["text"]))]
        ids = narrowed or ids
    return ids
