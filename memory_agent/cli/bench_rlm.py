"""``memory-agent bench rlm``: needle-in-a-haystack over a synthetic history, embedded model.

The measuring lives in ``memory_agent.rlm.bench.run_rlm_benchmark`` (a pure
function returning a dict); this module only parses options and formats. One
JSON object on stdout with ``--json``; progress goes to stderr.
"""

from __future__ import annotations

import json

import click

__all__ = ["rlm_bench"]


@click.command("rlm")
@click.option("--needles", type=click.IntRange(1, 30), default=20, show_default=True, help="Questions (facts hidden).")
@click.option("--history-chars", type=click.IntRange(min=10_000), default=820_000, show_default=True,
              help="Synthetic history length (>= 100x the 2048-token window by default).")
@click.option("--model", default="default", show_default=True, help="Sub-model (root is not used by 'program').")
@click.option("--sequential", is_flag=True, help="One generate() call per sub-call (llm_batch off).")
@click.option("--compare-sequential", is_flag=True, help="Run batched and sequential; report both and the speed-up.")
@click.option("--window", type=click.IntRange(min=100), default=300, show_default=True,
              help="Characters of context per verification sub-call (the 135M model reads short windows best).")
@click.option("--candidates", type=click.IntRange(min=1), default=2, show_default=True, help="Candidates per needle.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def rlm_bench(needles: int, history_chars: int, model: str, sequential: bool, compare_sequential: bool,
              window: int, candidates: int, seed: int, as_json: bool) -> None:
    """Recursive retrieval: accuracy, time, sub-calls and tokens on a needle-in-a-haystack."""
    from memory_agent.llms import resolve_llm
    from memory_agent.rlm.bench import run_rlm_benchmark

    llm = resolve_llm(model)
    result = run_rlm_benchmark(llm, needles=needles, history_chars=history_chars, seed=seed,
                               sequential=sequential, compare_sequential=compare_sequential, window=window,
                               max_candidates=candidates,
                               progress=lambda msg: click.echo(f"[bench rlm] {msg}", err=True))
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"RLM needle-in-a-haystack: {result['history_chars']:,} chars "
               f"({result['history_x_window']}x the model window), {result['needles']} needles")
    for mode, r in result["results"].items():
        click.echo(f"  {mode:<10} accuracy {r['accuracy']:.0%}  {r['s_per_query']:.2f} s/query  "
                   f"{r['sub_calls_per_query']} sub-calls/query  {r['tokens_per_query_estimate']:.0f} tokens/query")
    if "batching_speedup" in result:
        click.echo(f"  batching speed-up: {result['batching_speedup']}x")
