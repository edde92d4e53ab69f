"""Scores, tables and plots of evaluation runs.

Everything here works from the rows of ``predictions.jsonl``, so a summary can
always be recomputed (another F1 kind, a compare of several runs) without
rerunning a model. Scores are percentages (0-100), as in the papers.

* :func:`summarize` -> the ``summary.json`` object (fixed keys, see
  docs/results.md) and :func:`details` -> extra breakdowns (tags, invalid
  counts) that go to ``details.json`` and the report.
* :func:`write_report` -> ``report.md`` and ``by_category.png``.
* :func:`write_compare` -> a combined table and a grouped bar chart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from data.schema import CATEGORIES

__all__ = [
    "SCORED_CATEGORIES",
    "RETRIEVAL_METRICS",
    "recall_block",
    "summarize",
    "run_label",
    "details",
    "render_markdown",
    "plot_by_category",
    "write_report",
    "read_rows",
    "load_run",
    "write_compare",
]

#: Categories that are scored, in report order (adversarial, 5, is left out).
SCORED_CATEGORIES = [CATEGORIES[c] for c in (1, 2, 3, 4)]


def _pct(values: Sequence[float]) -> float | None:
    return round(100.0 * sum(values) / len(values), 2) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), ``None`` for no data."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    pos = (len(vals) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return round(vals[lo] + (vals[hi] - vals[lo]) * (pos - lo), 2)


def _scores(rows: Sequence[dict[str, Any]], f1_kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "f1": _pct([r[f"f1_{f1_kind}"] for r in rows]),
        "bleu1": _pct([r["bleu1"] for r in rows]),
        "em": _pct([r["em"] for r in rows]),
    }
    judged = [r["judge"] for r in rows if r.get("judge") is not None]
    if any("judge" in r for r in rows):
        out["judge"] = _pct([1.0 if j else 0.0 for j in judged])
    return out


def summarize(
    rows: Sequence[dict[str, Any]],
    *,
    method: str,
    model: str,
    f1_kind: str,
    ingest: dict[str, Any],
) -> dict[str, Any]:
    """The ``summary.json`` object of one run.

    ``judge`` appears (overall and per category) only when the run was judged;
    it is the share of CORRECT among the answers the judge labelled validly
    (invalid judge outputs are counted in :func:`details`, not scored WRONG).
    """
    by_category: dict[str, Any] = {}
    for name in SCORED_CATEGORIES:
        subset = [r for r in rows if r["category_name"] == name]
        if subset:
            by_category[name] = {**_scores(subset, f1_kind), "n": len(subset)}
    context = [r["context_tokens"] for r in rows if r.get("context_tokens") is not None]
    return {
        "method": method,
        "model": model,
        "n_questions": len(rows),
        "f1_kind": f1_kind,
        "overall": _scores(rows, f1_kind),
        "by_category": by_category,
        "latency_ms": {
            "search_p50": _percentile([r.get("search_ms") for r in rows], 0.5),
            "search_p95": _percentile([r.get("search_ms") for r in rows], 0.95),
            "answer_p50": _percentile([r.get("answer_ms") for r in rows], 0.5),
            "answer_p95": _percentile([r.get("answer_ms") for r in rows], 0.95),
        },
        "context_tokens_mean": round(sum(context) / len(context), 1) if context else None,
        # share of the gold answer's content words in the memories the Answer Agent was shown
        "answer_recall": recall_block(rows, "answer_recall", by_category),
        "retrieval": {key: recall_block(rows, key, by_category) for key in RETRIEVAL_METRICS},
        "ingest": ingest,
    }


#: Per-question retrieval metrics of ``predictions.jsonl`` averaged in ``summary["retrieval"]`` (percent):
#: evidence turns among the top-k retrieved, among those shown, and gold-answer words in the top-k.
RETRIEVAL_METRICS = ("evidence_recall", "evidence_recall_shown", "answer_recall_k")
_RETRIEVAL_LABELS = {"evidence_recall": "evidence recall@k", "evidence_recall_shown": "evidence recall (shown)",
                     "answer_recall_k": "answer recall@k", "answer_recall": "answer recall (shown)"}


def _mean_recall(rows: Sequence[dict[str, Any]], key: str = "answer_recall") -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(100 * sum(values) / len(values), 2) if values else None


def recall_block(rows: Sequence[dict[str, Any]], key: str, categories: Iterable[str]) -> dict[str, Any]:
    """Mean of a per-question recall ``key`` (percent), overall and per category name; None where unmeasured."""
    return {"overall": _mean_recall(rows, key),
            **{name: _mean_recall([r for r in rows if r["category_name"] == name], key) for name in categories}}


def details(rows: Sequence[dict[str, Any]], f1_kind: str) -> dict[str, Any]:
    """Breakdowns that are not in ``summary.json``: tags, invalid outputs, per conversation."""
    tags = sorted({t for r in rows for t in r.get("tags", [])})
    convs = sorted({r["sample_id"] for r in rows})
    return {
        "f1_kind": f1_kind,
        "answer_invalid": sum(1 for r in rows if not r.get("valid", True)),
        "judge_invalid": sum(1 for r in rows if r.get("judge_invalid")),
        "judged": sum(1 for r in rows if r.get("judge") is not None),
        "by_tag": {t: {**_scores([r for r in rows if t in r.get("tags", [])], f1_kind),
                       "n": sum(1 for r in rows if t in r.get("tags", []))} for t in tags},
        "by_conversation": {c: {**_scores([r for r in rows if r["sample_id"] == c], f1_kind),
                                "n": sum(1 for r in rows if r["sample_id"] == c)} for c in convs},
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _metric_keys(summary: dict[str, Any]) -> list[str]:
    return ["f1", "bleu1", "em"] + (["judge"] if "judge" in summary["overall"] else [])


_LABELS = {"f1": "F1", "bleu1": "BLEU-1", "em": "EM", "judge": "Judge"}


def render_markdown(summary: dict[str, Any], extra: dict[str, Any] | None = None, *, title: str | None = None) -> str:
    """``report.md`` of one run."""
    keys = _metric_keys(summary)
    f1_note = {
        "mem0": "Mem0 / Memory-R1 token-set F1",
        "locomo": "LoCoMo paper F1 (stemmed, multi-hop split on commas)",
    }.get(summary["f1_kind"], summary["f1_kind"])
    out = [
        f"# {title or 'Evaluation: ' + summary['method']}",
        "",
        f"Method `{summary['method']}`, model `{summary['model']}`, {summary['n_questions']} questions "
        f"(adversarial category left out). F1 = {f1_note}. Scores in percent.",
        "",
        "## Overall",
        "",
        _table([_LABELS[k] for k in keys], [[summary["overall"].get(k) for k in keys]]),
        "",
        "## By category",
        "",
        _table(["category", "n"] + [_LABELS[k] for k in keys],
               [[name, s["n"]] + [s.get(k) for k in keys] for name, s in summary["by_category"].items()]),
        "",
        "## Retrieval",
        "",
        "How often what the Answer Agent needed was retrieved (k = the run's top-k) and shown "
        "(after the prompt's token budget): evidence = the question's evidence turns among the "
        "sources of the memories; answer = the gold answer's content words. Percent; '-' = not measurable.",
        "",
        _retrieval_table(summary),
        "",
        "## Cost",
        "",
        _table(["search p50 ms", "search p95 ms", "answer p50 ms", "answer p95 ms", "context tokens (mean)"],
               [[*summary["latency_ms"].values(), summary["context_tokens_mean"]]]),
        "",
        "## Ingestion",
        "",
        "```json\n" + json.dumps(summary["ingest"], indent=2, sort_keys=True) + "\n```",
    ]
    if extra:
        out += ["", "## Details", "",
                f"Invalid answer outputs: {extra['answer_invalid']}; judged: {extra['judged']}; "
                f"invalid judge outputs (not scored): {extra['judge_invalid']}."]
        if extra["by_tag"]:
            out += ["", _table(["tag", "n"] + [_LABELS[k] for k in keys],
                               [[t, s["n"]] + [s.get(k) for k in keys] for t, s in extra["by_tag"].items()])]
    return "\n".join(out) + "\n"


def _retrieval_table(summary: dict[str, Any]) -> str:
    blocks = {**summary.get("retrieval", {}), "answer_recall": summary.get("answer_recall", {})}
    cats = list(summary["by_category"])
    return _table(["metric", "overall", *cats],
                  [[_RETRIEVAL_LABELS[k], b.get("overall"), *[b.get(c) for c in cats]] for k, b in blocks.items()])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    return plt


def plot_by_category(summary: dict[str, Any], path: Path) -> None:
    """Answer scores and retrieval recalls per category, side by side (``by_category.png``)."""
    plt = _pyplot()
    keys = _metric_keys(summary)
    cats = list(summary["by_category"])
    fig, (ax, rax) = plt.subplots(1, 2, figsize=(13, 4))
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        values = [summary["by_category"][c].get(key) or 0.0 for c in cats]
        ax.bar([x + i * width for x in range(len(cats))], values, width, label=_LABELS[key])
    ax.set_xticks([x + width * (len(keys) - 1) / 2 for x in range(len(cats))], cats)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, _ymax(summary["by_category"][c].get(k) for c in cats for k in keys))
    ax.set_title(f"{summary['method']} / {summary['model']} ({summary['f1_kind']} F1)")
    ax.legend()
    blocks = {**summary.get("retrieval", {}), "answer_recall": summary.get("answer_recall", {})}
    blocks = {k: b for k, b in blocks.items() if any(b.get(c) is not None for c in cats)}
    rwidth = 0.8 / max(1, len(blocks))
    for i, (key, block) in enumerate(blocks.items()):
        rax.bar([x + i * rwidth for x in range(len(cats))], [block.get(c) or 0.0 for c in cats], rwidth,
                label=_RETRIEVAL_LABELS[key])
    rax.set_xticks([x + rwidth * (max(1, len(blocks)) - 1) / 2 for x in range(len(cats))], cats)
    rax.set_ylim(0, 100)
    rax.set_ylabel("recall (%)")
    rax.set_title("retrieval: was the evidence / answer found?")
    if blocks:
        rax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dir: Path, summary: dict[str, Any], extra: dict[str, Any]) -> None:
    """Write ``summary.json``, ``details.json``, ``report.md`` and ``by_category.png``."""
    run_dir = Path(run_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (run_dir / "details.json").write_text(json.dumps(extra, indent=2) + "\n", encoding="utf-8")
    (run_dir / "report.md").write_text(render_markdown(summary, extra), encoding="utf-8")
    plot_by_category(summary, run_dir / "by_category.png")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``predictions.jsonl``; a torn last line (interrupted write) is dropped."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "sample_id" in row and "qid" in row:
            rows.append(row)
    return rows


def _ymax(values: Any) -> float:
    """Axis top: headroom over the tallest bar (small scores stay readable), never past 100."""
    top = max([v for v in values if isinstance(v, (int, float))] or [0.0])
    return min(100.0, max(5.0, top * 1.25))


def load_run(run_dir: Path, f1_kind: str | None = None) -> dict[str, Any]:
    """A run's summary, recomputed from its predictions with ``f1_kind`` when given."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an evaluation run (no summary.json)")
    summary = json.loads(path.read_text(encoding="utf-8"))
    if f1_kind and f1_kind != summary["f1_kind"]:
        rows = read_rows(run_dir / "predictions.jsonl")
        summary = summarize(rows, method=summary["method"], model=summary["model"],
                            f1_kind=f1_kind, ingest=summary["ingest"])
    identity = run_dir / "run.json"
    if identity.is_file():  # which manager/answer models: runs of one method differ by these
        ident = json.loads(identity.read_text(encoding="utf-8"))
        summary["manager_model"] = ident.get("manager_model")
        summary["answer_model"] = ident.get("answer_model")
        summary["retrieval_mode"] = ident.get("retrieval")
    return summary


def run_label(summary: dict[str, Any]) -> str:
    """``method (model)``, plus the manager/answer models when they differ from ``model``."""
    parts = [str(summary["model"])]
    for role in ("manager", "answer"):
        spec = summary.get(f"{role}_model")
        if spec:
            parts.append(f"{role}={_short_model(str(spec))}")
    if summary.get("retrieval_mode"):
        parts.append(f"retrieval={summary['retrieval_mode']}")
    return f"{summary['method']} ({', '.join(parts)})"


def _short_model(spec: str) -> str:
    """A model folder's last two path parts (``train2/answer`` tells runs of two
    trainings apart where ``answer`` would not); other specs as they are."""
    path = Path(spec)
    parts = [p for p in path.parts if p != path.anchor]
    return "/".join(parts[-2:]) or spec


def paired_differences(run_dirs: Sequence[Path], f1_kind: str) -> list[dict[str, Any] | None]:
    """Per run after the first: the paired bootstrap of its per-question F1 minus the first run's,
    over all shared questions and over the "now" (``current``-tagged) ones; None without shared questions."""
    from eval.stats import paired_bootstrap

    key = f"f1_{f1_kind}"
    rows = [{(r["sample_id"], r["qid"]): r for r in read_rows(Path(d) / "predictions.jsonl")} for d in run_dirs]
    out: list[dict[str, Any] | None] = []
    for other in rows[1:]:
        shared = [q for q in rows[0] if q in other]
        if not shared:
            out.append(None)
            continue
        result: dict[str, Any] = {"all": paired_bootstrap([rows[0][q][key] for q in shared],
                                                          [other[q][key] for q in shared])}
        now = [q for q in shared if "current" in rows[0][q].get("tags", [])]
        if now:
            result["current"] = paired_bootstrap([rows[0][q][key] for q in now], [other[q][key] for q in now])
        out.append(result)
    return out


def write_compare(run_dirs: Sequence[Path], out: Path, *, f1_kind: str | None = None, metric: str = "f1") -> Path:
    """``compare.md`` + ``compare.png`` (methods side by side per category) in ``out``.

    All runs are scored with one F1 kind: ``f1_kind``, else the first run's.
    """
    if not run_dirs:
        raise ValueError("compare needs at least one run folder")
    first = load_run(run_dirs[0])
    kind = f1_kind or first["f1_kind"]
    runs = [load_run(d, kind) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [run_label(s) for s in runs]
    keys = ["f1", "bleu1", "em"] + (["judge"] if all("judge" in s["overall"] for s in runs) else [])
    cats = [c for c in SCORED_CATEGORIES if any(c in s["by_category"] for s in runs)]
    overall = _table(["run", "n"] + [_LABELS[k] for k in keys]
                     + ["evidence recall@k", "answer recall (shown)", "search p50 ms", "answer p50 ms",
                        "context tokens"],
                     [[lab, s["n_questions"]] + [s["overall"].get(k) for k in keys]
                      + [s.get("retrieval", {}).get("evidence_recall", {}).get("overall"),
                         s.get("answer_recall", {}).get("overall"), s["latency_ms"]["search_p50"],
                         s["latency_ms"]["answer_p50"], s["context_tokens_mean"]] for lab, s in zip(labels, runs)])
    per_cat = _table(["run"] + cats,
                     [[lab] + [s["by_category"].get(c, {}).get(metric) for c in cats] for lab, s in zip(labels, runs)])
    paired = paired_differences(run_dirs, kind)
    paired_table = _table(
        ["run", "vs", "questions", "F1 diff", "95% interval", "'now' questions", "'now' F1 diff", "'now' 95% interval"],
        [[labels[i + 1], labels[0], p["all"]["n"], 100 * p["all"]["diff"],
          f"[{100 * p['all']['low']:.2f}, {100 * p['all']['high']:.2f}]",
          p["current"]["n"] if p.get("current") else 0,
          100 * p["current"]["diff"] if p.get("current") else None,
          f"[{100 * p['current']['low']:.2f}, {100 * p['current']['high']:.2f}]" if p.get("current") else "-"]
         for i, p in enumerate(paired) if p is not None])
    text = "\n".join([
        "# Comparison", "", f"F1 = {kind}. Scores in percent. Runs: " + ", ".join(f"`{d}`" for d in run_dirs), "",
        "## Overall", "", overall, "", f"## {_LABELS.get(metric, metric)} by category", "", per_cat, "",
        "## Paired differences (bootstrap over the questions both runs answered)", "", paired_table, "",
    ])
    (out / "compare.md").write_text(text, encoding="utf-8")
    (out / "compare.json").write_text(json.dumps({"f1_kind": kind, "runs": runs, "paired": paired}, indent=2) + "\n",
                                      encoding="utf-8")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(cats) + 2), 4))
    width = 0.8 / len(runs)
    for i, (lab, s) in enumerate(zip(labels, runs)):
        values = [s["by_category"].get(c, {}).get(metric) or 0.0 for c in cats]
        ax.bar([x + i * width for x in range(len(cats))], values, width, label=lab)
    ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(cats))], cats)
    ax.set_ylabel(f"{_LABELS.get(metric, metric)} (%)")
    ax.set_ylim(0, _ymax(s["by_category"].get(c, {}).get(metric) for s in runs for c in cats))
    # Below the axes: with many runs an inside legend hides bars.
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out / "compare.md"
