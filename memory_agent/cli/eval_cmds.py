"""``memory-agent eval``: evaluate methods on LoCoMo / synthetic / JSONL data, compare runs.

``memory-agent eval --data PATH --method M [--method M2] --out DIR`` runs an
evaluation (the options live on the group, which runs when no subcommand is
given; ``memory-agent eval run ...`` is the same thing spelled out), and
``memory-agent eval compare DIR... --out OUT`` combines finished runs.
Dataset errors become one-line CLI errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from memory_agent.cli.options import policy_options
from memory_agent.defaults import ANSWER_K, ANSWER_RETRIEVAL, EMBEDDER_NAMES
from memory_store.keyword import SEARCH_MODES

__all__ = ["eval_group"]

METHOD_NAMES = ["memory-r1", "add-all", "rag", "full-context", "rlm"]
SPLIT_NAMES = ["dev", "val", "train", "test", "paper-test", "all"]


def _run_options(fn):
    options = [
        click.option("--data", "data", default=None, metavar="PATH",
                     help="LoCoMo folder or file, a .jsonl file, or synthetic:N[:SEED]. "
                          "Default: ../shared/datasets/locomo (or $MEMORY_AGENT_LOCOMO)."),
        click.option("--split", type=click.Choice(SPLIT_NAMES), default=None,
                     help="LoCoMo split (default dev). test / paper-test need the full locomo10.json."),
        click.option("--method", "methods", multiple=True, type=click.Choice(METHOD_NAMES),
                     help="Method to evaluate; repeat for several (each gets OUT/<method>/ and a comparison)."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Run folder (resumable: rerun the same command to continue)."),
        click.option("--limit-questions", type=click.IntRange(min=1), default=None,
                     help="Answer only the first N non-adversarial questions (in total)."),
        click.option("--model", default="default", show_default=True, help="Model for every role."),
        click.option("--manager-model", default=None, help="Model of the Memory Manager (default --model)."),
        click.option("--answer-model", default=None, help="Model of the Answer Agent (default --model)."),
        policy_options,
        click.option("--judge", default=None, metavar="MODEL", help="LLM-as-judge model (off by default)."),
        click.option("--embedder", type=click.Choice(EMBEDDER_NAMES), default="default", show_default=True),
        click.option("--f1", "f1", type=click.Choice(["mem0", "locomo"]), default="mem0", show_default=True,
                     help="F1 definition reported (both are stored per question)."),
        click.option("--top-k", type=click.IntRange(min=1), default=ANSWER_K, show_default=True,
                     help="Memories (rag: turns) the Answer Agent retrieves per question."),
        click.option("--retrieval", "retrieval", multiple=True, type=click.Choice(SEARCH_MODES),
                     help="How the Answer Agent searches (default hybrid); repeat for several: each gets "
                          "OUT/<method>-<mode>/, the memory is built once."),
        click.option("--stores-from", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
                     help="Copy finished ingests from this earlier run (same method, models, embedder, data) "
                          "instead of rebuilding them."),
        click.option("--context-window", type=click.IntRange(min=64), default=None,
                     help="full-context: prompt budget in tokens (default: the model's window)."),
        click.option("--answer-batch", type=click.IntRange(min=1), default=8, show_default=True,
                     help="Questions per model call (CPU speed); latencies are per question, amortised."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _evaluate(data, split, methods, out, limit_questions, model, manager_model, answer_model, policy, judge,
              embedder, f1, top_k, retrieval, stores_from, context_window, answer_batch, quiet) -> None:
    from memory_agent.cli.options import policy_value

    from data.schema import DatasetError
    from eval.harness import EvalConfig, run_eval

    if not methods:
        raise click.UsageError("give at least one --method (" + ", ".join(METHOD_NAMES) + ")")
    if out is None:
        raise click.UsageError("give --out DIR (the run folder)")
    config = EvalConfig(
        out=out, methods=list(methods), data=data, split=split, limit_questions=limit_questions,
        model=model, manager_model=manager_model, answer_model=answer_model, policy=policy_value(policy), judge=judge,
        embedder=embedder, f1=f1, top_k=top_k, context_window=context_window, answer_batch=answer_batch,
        retrieval=tuple(retrieval) or (ANSWER_RETRIEVAL,), stores_from=stores_from, progress=not quiet,
    )
    try:
        summaries = run_eval(config)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    for s in summaries:
        o = s["overall"]
        judge_part = f" judge={o['judge']}" if "judge" in o else ""
        click.echo(f"{s['method']} ({s['model']}): n={s['n_questions']} F1[{s['f1_kind']}]={o['f1']} "
                   f"BLEU-1={o['bleu1']} EM={o['em']}{judge_part}")
    click.echo(f"wrote {out}")


@click.group(invoke_without_command=True)
@_run_options
@click.pass_context
def eval_group(ctx: click.Context, **options) -> None:
    """Evaluate memory methods (F1, BLEU-1, EM, optional LLM judge) and compare runs.

    \b
    memory-agent eval --split dev --method memory-r1 --method rag --out runs/dev
    memory-agent eval compare runs/a runs/b --out runs/cmp
    """
    if ctx.invoked_subcommand is None:
        _evaluate(**options)


@eval_group.command("run")
@_run_options
def run_cmd(**options) -> None:
    """Run an evaluation (same as ``memory-agent eval`` with options)."""
    _evaluate(**options)


@eval_group.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--f1", "f1", type=click.Choice(["mem0", "locomo"]), default=None,
              help="Rescore every run with this F1 (default: the first run's).")
@click.option("--metric", type=click.Choice(["f1", "bleu1", "em", "judge"]), default="f1", show_default=True,
              help="Metric of the per-category chart.")
def compare_cmd(runs, out, f1, metric) -> None:
    """Combine finished runs: compare.md, compare.json and compare.png (grouped bars)."""
    from eval.report import run_label, write_compare

    path = write_compare(list(runs), out, f1_kind=f1, metric=metric)
    data = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    for run in data["runs"]:
        click.echo(f"{run_label(run)}: F1[{data['f1_kind']}]={run['overall']['f1']}")
    click.echo(f"wrote {path}")


@eval_group.command("retrieval")
@click.option("--data", "data", default=None, metavar="PATH", help="As for `memory-agent eval`.")
@click.option("--split", type=click.Choice(SPLIT_NAMES), default=None, help="LoCoMo split (default dev).")
@click.option("--memory", "memory", default="turns", show_default=True, metavar="turns|RUN",
              help="turns = the raw dialogue turns (the rag memory); or a finished `memory-agent eval` run "
                   "folder whose stores/ hold each conversation's memory.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(SEARCH_MODES),
              help="Search modes to score (default: all three).")
@click.option("--top-k", type=click.IntRange(min=1), default=ANSWER_K, show_default=True)
@click.option("--no-time", is_flag=True, help="Turn off the time boost of questions that name a time.")
@click.option("--embedder", type=click.Choice(EMBEDDER_NAMES), default=None,
              help="Embedder of the queries (default: the run's own for --memory RUN, else default).")
def retrieval_cmd(data, split, memory, modes, top_k, no_time, embedder) -> None:
    """Score the Answer Agent's retrieval alone (no language model): evidence recall per mode, as JSON."""
    from data.schema import DatasetError
    from eval.harness import load_conversations, make_embedder
    from eval.retrieval import retrieval_report

    try:
        convs = load_conversations(data, split)
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    if memory != "turns":
        run_json = Path(memory) / "run.json"
        if not run_json.is_file():
            raise click.BadParameter(f"{memory} is not an evaluation run folder (no run.json)", param_hint="--memory")
        built_with = json.loads(run_json.read_text(encoding="utf-8")).get("embedder") or "default"
        from memory_agent.memory import embedder_name

        if embedder is not None and embedder_name(embedder) != embedder_name(built_with):
            raise click.BadParameter(f"{memory} was built with the {built_with!r} embedder, not {embedder!r}",
                                     param_hint="--embedder")
        embedder = built_with
    report = retrieval_report(convs, source=memory, modes=modes or ("vector", "keyword", "hybrid"),
                              embedder=make_embedder(embedder or "default"), k=top_k, time_aware=not no_time)
    click.echo(json.dumps(report, indent=2))
