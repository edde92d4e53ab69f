"""Built-in REPL helpers (grep, peek, chunks, map_reduce) and the fixed ``program`` strategy.

What: plain functions over an :class:`Env` (the context plus the ``llm`` /
``llm_batch`` RPCs). The worker binds them into the REPL namespace, so the
root model can call ``grep("locker")`` instead of writing the loop itself, and
``strategy="program"`` runs ``FINAL(program(question))`` as one fixed cell.

Why here and stdlib-only: this file is loaded *by path* inside the sandboxed
worker (bare ``python -I``, no virtual environment), and the host imports the
same :func:`flatten` / :func:`keywords` so both sides agree on the flat text
view and on record markers (``[#id time] text``, one record per line), which
is what ``RLMResult.cited_ids`` is computed from.
"""

from __future__ import annotations

import math
import re
from collections import Counter

__all__ = [
    "STOPWORDS",
    "Env",
    "flatten",
    "render_record",
    "keywords",
    "is_none",
    "clean_answer",
    "grounded",
    "candidates",
    "helpers",
    "RECORD_MARKER",
]

RECORD_MARKER = re.compile(r"\[#(-?\d+)[ \]]")

# A copy of memory_agent.text.QUESTION_STOP_WORDS: this module runs inside the sandbox
# worker, which is stdlib-only and loaded by path, so it cannot import memory_agent.
# tests/test_one_home.py holds the two equal (edit both or neither).
STOPWORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from about into over after before
    is are was were be been being am do does did doing have has had having can could should would will
    shall may might must i me my mine we us our you your yours he him his she her hers it its they them
    their what which who whom whose when where why how that this these those there here not no yes
    any some all each every most more less many much few one ones own same so than too very just also
    tell please know remember said say says ask asked user assistant does did ever""".split()
)

# The question comes first (conversations of one batch share that token prefix, which a
# batching backend encodes once) and again after the text, where a 135M model actually
# attends to it; "{context}" marks where the host puts the slice. Measured on SmolLM2-135M
# (see docs/rlm.md): with this wording the best-ranked window of all 20 bench needles was
# answered right; ending with "Short answer:" left 3 of 20 at a bare "The answer is:",
# question-first-only quoted chatter, and asking for "NONE" made it answer NONE next to the needle.
VERIFY_PROMPT = "Question: {q}\n\nText:\n{{context}}\n\nQuestion: {q}\nQuote the value from the text:"
MAP_PROMPT = "{q}\nIf this part of the text does not contain the answer, reply NONE."
REDUCE_PROMPT = "{q}\nThe text lists partial answers found in different parts of a long document. Give the final answer."
_NONE_PREFIXES = ("none", "no answer", "not mentioned", "not found", "unknown", "n/a", "i don't know",
                  "i do not know", "the text does not", "there is no", "not specified", "not stated")


def render_record(rec: dict) -> str:
    text = str(rec.get("text", "")).replace("\n", " ")
    return "[#%s %s] %s" % (rec.get("id"), rec.get("time") or "", text)


def flatten(context) -> str:
    """The flat text view of any context: a str as is, records one per line with a marker."""
    if isinstance(context, str):
        return context
    if isinstance(context, dict):
        return render_record(context)
    if isinstance(context, (list, tuple)):
        return "\n".join(render_record(c) if isinstance(c, dict) else str(c) for c in context)
    return str(context)


def keywords(question: str) -> list:
    """Lowercased content words of a question, stopwords and 1-2 letter tokens removed, order kept."""
    seen, out = set(), []
    for tok in re.findall(r"[a-z0-9]+", question.lower()):
        if len(tok) < 3 or tok in STOPWORDS or tok in seen:
            continue
        seen.add(tok)
        out.append(tok)
    return out


def _stem(word: str) -> str:
    # embedding-free fuzzy match: "lockers"/"locked" hit "locker" through "locke"/"lock"
    return word if len(word) <= 5 else word[: len(word) - 2]


def is_none(answer) -> bool:
    if not isinstance(answer, str):
        return True
    a = answer.strip().strip("\"'`*.").lower()
    return not a or a.startswith(_NONE_PREFIXES)


_PREAMBLE = re.compile(r"^(?:the\s+)?(?:final\s+|short\s+)?answer\b(?:\s+to\s+(?:this|the)\s+question)?\s*(?:is\b)?\s*[:\-]?\s*",
                       re.IGNORECASE)


def clean_answer(answer: str) -> str:
    """First line, without an "The answer is:" preamble."""
    first = answer.strip().split("\n", 1)[0].strip()
    return _PREAMBLE.sub("", first).strip()


def grounded(question: str, answer: str, window: str) -> bool:
    """False when the answer names a question keyword its window never mentions.

    A small model shown an unrelated window transplants the question's subject
    onto it ("Fennick's code is 3736" from a line about Zorblat); such answers
    are dropped before the vote.
    """
    low = window.lower()
    asked = set(keywords(question))
    return all(_stem(w) in low for w in keywords(answer) if w in asked)


def _norm(answer: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", answer.lower()))


class Env:
    """What the helpers see: the context, its flat text, the host limits and the RPCs."""

    def __init__(self, context, limits, llm, llm_batch, sub_error=RuntimeError):
        self.context = context
        self.sub_error = sub_error  # the REPL's SubCallError class
        self.limits = dict(limits)
        self.llm = llm
        self.llm_batch = llm_batch
        self.context_text = flatten(context)
        self._lines = None

    def lines(self):
        """(start offset, line) pairs of the flat text, computed once."""
        if self._lines is None:
            out, pos = [], 0
            for line in self.context_text.split("\n"):
                out.append((pos, line))
                pos += len(line) + 1
            self._lines = out
        return self._lines

    def slice_budget(self, prompt: str) -> int:
        """How many context characters fit in one sub-call next to ``prompt``."""
        limit = int(self.limits.get("max_subcall_chars", 6000))
        return max(200, limit - len(prompt) - int(self.limits.get("template_chars", 200)) - 16)


# --------------------------------------------------------------------------- helpers


def grep(env, pattern, context=None, max_hits=50, window=300):
    """Lines of the context matching ``pattern`` (regex, case-insensitive; a bad regex is taken literally).

    A long line is cut to ``window`` characters either side of the first match.
    """
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error:
        rx = re.compile(re.escape(pattern), re.IGNORECASE)
    lines = env.lines() if context is None else [(0, s) for s in flatten(context).split("\n")]
    hits = []
    for _, line in lines:
        m = rx.search(line)
        if m is None:
            continue
        if len(line) > 2 * window + 1:
            line = line[max(0, m.start() - window): m.end() + window]
        hits.append(line)
        if len(hits) >= max_hits:
            break
    return hits


def peek(env, n=2000, start=0):
    """``n`` characters of the flat context from ``start``."""
    return env.context_text[start: start + n]


def chunks(env, size=None, context=None, records=None):
    """Split the context into pieces of at most ``size`` characters (whole lines where possible),
    or, for a list context, ``records`` items per piece."""
    ctx = env.context if context is None else context
    if records is not None and isinstance(ctx, (list, tuple)):
        n = max(1, int(records))
        return [flatten(list(ctx[i: i + n])) for i in range(0, len(ctx), n)]
    text = flatten(ctx)
    size = max(1, int(size or env.slice_budget("")))
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n", start + size // 2, end)
            if cut > start:
                end = cut + 1
        out.append(text[start:end])
        start = end
    return out


def _combine(env, question, found, max_new_tokens=None):
    """Majority over normalised answers; ties go to the earliest (best-ranked) answer."""
    norms = [_norm(a) for a in found]
    counts = Counter(norms)
    best = max(counts.values())
    for a, n in zip(found, norms):
        if counts[n] == best:
            return a.strip()
    return found[0].strip()


def map_reduce(env, question, chunk_chars=None, chunk_records=None, reduce=None, max_new_tokens=None):
    """Ask ``question`` of every chunk with one ``llm_batch`` (order kept), then reduce.

    ``reduce``: a callable given the list of (str) map answers; default: the
    single non-NONE answer, else one combining sub-call if it fits, else a vote.
    """
    map_prompt = MAP_PROMPT.format(q=question)
    if chunk_records is not None:
        parts = chunks(env, records=chunk_records)
    else:
        parts = chunks(env, size=chunk_chars or env.slice_budget(map_prompt))
    answers = env.llm_batch([(map_prompt, p) for p in parts], max_new_tokens=max_new_tokens)
    texts = [a for a in answers if isinstance(a, str)]
    if callable(reduce):
        return reduce(texts)
    found = [a.strip() for a in texts if not is_none(a)]
    if not found:
        return "NONE"
    if len({_norm(a) for a in found}) == 1:
        return found[0]
    joined = "\n".join("- " + a for a in found)
    reduce_prompt = REDUCE_PROMPT.format(q=question)
    if len(joined) <= env.slice_budget(reduce_prompt):
        try:
            return env.llm(reduce_prompt, joined, max_new_tokens=max_new_tokens).strip()
        except env.sub_error:  # a failed/oversized reduce falls back to the vote
            pass
    return _combine(env, question, found)


def candidates(env, question, window=600, max_candidates=4, context_lines=0):
    """Best windows of the context for ``question``: lines scored by the rare keywords they contain.

    A window is the matched line (a record, for a memory bank) plus up to
    ``context_lines`` neighbouring lines each side, at most ``window``
    characters (a longer line is cut around its first keyword). Measured on
    SmolLM2-135M with 8 needles: the line alone 8/8 answers right; 250-300
    characters around it 5-7/8, as the model quotes the neighbouring chatter.
    """
    kws = keywords(question)
    if not kws:
        return []
    terms = [_stem(k) for k in kws]
    lines = env.lines()
    matched = []
    df = Counter()
    for idx, (_, line) in enumerate(lines):
        low = line.lower()
        present = [t for t in terms if t in low]
        if present:
            matched.append((idx, present))
            df.update(present)
    if not matched:
        return []
    weight = {t: 1.0 / math.log(2.0 + df[t]) for t in df}
    scored = sorted(matched, key=lambda m: (-sum(weight[t] for t in m[1]), m[0]))
    record_mode = isinstance(env.context, (list, tuple)) and env.context and isinstance(env.context[0], dict)
    extra = 0 if record_mode else max(0, int(context_lines))
    out, used = [], set()
    for idx, present in scored:
        if idx in used:
            continue
        line = lines[idx][1]
        if len(line) > window:
            hit = min(line.lower().find(t) for t in present)
            lo = max(0, hit - window // 2)
            out.append(line[lo: lo + window])
            used.add(idx)
        else:
            lo = hi = idx
            size = len(line)
            for _ in range(extra):
                for nxt in (hi + 1, lo - 1):
                    if 0 <= nxt < len(lines) and nxt not in used and size + len(lines[nxt][1]) + 1 <= window:
                        size += len(lines[nxt][1]) + 1
                        lo, hi = min(lo, nxt), max(hi, nxt)
            used.update(range(lo, hi + 1))
            out.append("\n".join(lines[j][1] for j in range(lo, hi + 1)))
        if len(out) >= max_candidates:
            break
    return out


def program(env, question, window=600, max_candidates=4, max_new_tokens=32, fallback=True, combine=False,
            context_lines=0):
    """The fixed strategy for small models: grep candidates -> verify in one batch -> aggregate.

    No keyword hit (or every candidate said NONE, when ``fallback``) -> map_reduce
    over window-sized chunks, so a needle without keyword overlap is still found.
    """
    cands = candidates(env, question, window=window, max_candidates=max_candidates, context_lines=context_lines)
    if cands:
        prompt = VERIFY_PROMPT.format(q=question)
        answers = env.llm_batch([(prompt, c) for c in cands], max_new_tokens=max_new_tokens)
        found = [clean_answer(a) for a, c in zip(answers, cands)
                 if isinstance(a, str) and not is_none(clean_answer(a)) and grounded(question, a, c)]
        if found:
            if combine and len({_norm(a) for a in found}) > 1:
                joined = "\n".join("- " + a for a in found)
                return env.llm(REDUCE_PROMPT.format(q=question), joined, max_new_tokens=max_new_tokens).strip()
            return _combine(env, question, found)
        if not fallback:
            return "NONE"
    return map_reduce(env, question, max_new_tokens=max_new_tokens)


def helpers(env) -> dict:
    """The REPL names bound to ``env``."""

    def _grep(pattern, context=None, max_hits=50, window=300):
        return grep(env, pattern, context, max_hits, window)

    def _peek(n=2000, start=0):
        return peek(env, n, start)

    def _chunks(size=None, context=None, records=None):
        return chunks(env, size, context, records)

    def _map_reduce(question, chunk_chars=None, chunk_records=None, reduce=None, max_new_tokens=None):
        return map_reduce(env, question, chunk_chars, chunk_records, reduce, max_new_tokens)

    def _program(question, **options):
        return program(env, question, **options)

    for f, g in ((_grep, grep), (_peek, peek), (_chunks, chunks), (_map_reduce, map_reduce), (_program, program)):
        f.__doc__ = g.__doc__
    return {"grep": _grep, "peek": _peek, "chunks": _chunks, "map_reduce": _map_reduce,
            "program": _program, "keywords": keywords}
