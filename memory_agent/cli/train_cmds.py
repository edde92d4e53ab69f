"""``memory-agent train manager|answer``: GRPO training of one of the two agents.

Stage 1 trains the Memory Manager with the Answer Agent frozen; stage 2 the
Answer Agent over banks built by the trained manager::

    memory-agent train manager --out runs/manager --config cpu_smollm2.yaml
    memory-agent train answer --manager-model runs/manager --out runs/answer

The checkpoint written to ``--out`` loads anywhere a model is accepted
(``--manager-model runs/manager``, ``resolve_llm("runs/manager")``).
Heavy imports (torch, trl) happen inside the command, not at ``--help``.
"""

from __future__ import annotations

import json

import click

__all__ = ["train"]


@click.command("train")
@click.argument("task", type=click.Choice(["manager", "answer"]))
@click.option("--data", default=None, help="Training conversations: .json (LoCoMo), .jsonl, locomo:<split> or "
              "synthetic:<n>[:<seed>]. Default: the LoCoMo train split.")
@click.option("--val", default=None, help="Validation conversations (same forms); F1 is reported before/after.")
@click.option("--val-limit", type=int, default=None, help="At most N validation episodes (default 20).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--config", "config_file", default=None,
              help="YAML recipe (a path, or a name in training/recipes, e.g. cpu_smollm2.yaml).")
@click.option("--max-steps", type=int, default=None, help="GRPO steps (overrides the recipe).")
@click.option("--learning-rate", type=float, default=None, help="GRPO learning rate (overrides the recipe).")
@click.option("--device", default=None, help="auto | cpu | cuda (default auto).")
@click.option("--model", default=None, help="Policy to start from (default: the trained agent's own model).")
@click.option("--manager-model", default=None,
              help="The Memory Manager in use: it builds the banks (train answer: the stage-1 checkpoint); "
              "train manager starts from it.")
@click.option("--answer-model", default=None,
              help="The Answer Agent: frozen inside the manager reward (train manager); train answer starts from it.")
@click.option("--bank-source", type=click.Choice(["pipeline", "observations", "turns"]), default=None,
              help="How earlier turns become a bank (default: the pipeline itself).")
@click.option("--embedder", type=click.Choice(["default", "minilm", "hashing"]), default=None)
@click.option("--reward", "reward_metric", type=click.Choice(["em", "f1"]), default=None,
              help="Exact match (default, as Memory-R1) or token-F1 partial credit.")
@click.option("--max-episodes", type=int, default=None, help="Use at most N training episodes.")
@click.option("--max-turns", type=int, default=None, help="Replay at most N turns per conversation.")
@click.option("--cold-start/--no-cold-start", default=None, help="Short SFT on well-formed outputs before GRPO.")
@click.option("--cold-start-steps", "cold_start_max_steps", type=int, default=None,
              help="SFT steps of the cold start (overrides the recipe).")
@click.option("--cold-start-examples", type=int, default=None,
              help="At most N cold-start examples, spread over the episodes (overrides the recipe).")
@click.option("--retrieve-k", type=int, default=None,
              help="Memories in the Answer Agent's prompt (the pipeline uses 60; the CPU recipe 10).")
@click.option("--lora/--full", "use_lora", default=None, help="LoRA adapter (default) or full fine-tuning.")
@click.option("--merge/--no-merge", "merge_adapter", default=None, help="Save merged full weights instead of an adapter.")
@click.option("--seed", type=int, default=None)
@click.option("--threads", "cpu_threads", type=int, default=None, help="torch CPU threads (1 is best on a busy CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print train_summary.json to stdout.")
def train(task, data, val, val_limit, out_dir, config_file, max_steps, learning_rate, device, model, manager_model,
          answer_model, bank_source, embedder, reward_metric, max_episodes, max_turns, cold_start, cold_start_max_steps,
          cold_start_examples, retrieve_k, use_lora, merge_adapter, seed, cpu_threads, as_json):
    """Train the Memory Manager or the Answer Agent with GRPO (TRL)."""
    from training.config import load_config
    from training.run import train as run_train

    config = load_config(
        config_file,
        task=task,
        output_dir=str(out_dir),
        max_steps=max_steps,
        learning_rate=learning_rate,
        device=device,
        model=model,
        manager_model=manager_model,
        answer_model=answer_model,
        bank_source=bank_source,
        embedder=embedder,
        reward_metric=reward_metric,
        max_episodes=max_episodes,
        max_turns=max_turns,
        cold_start=cold_start,
        cold_start_max_steps=cold_start_max_steps,
        cold_start_examples=cold_start_examples,
        retrieve_k=retrieve_k,
        use_lora=use_lora,
        merge_adapter=merge_adapter,
        seed=seed,
        cpu_threads=cpu_threads,
        val_limit=val_limit,
    )
    summary = run_train(config, out_dir, data=data, val=val)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(f"trained {task}: {summary['steps']} steps in {summary['wall_seconds']}s "
               f"({summary.get('seconds_per_step_mean')}s/step)")
    click.echo(f"reward {summary.get('reward_first')} -> {summary.get('reward_last')}; "
               f"valid-output rate {summary.get('valid_rate_first')} -> {summary.get('valid_rate_last')}")
    if "val_before" in summary:
        mid = summary.get("val_after_cold_start")
        via = f" -> {mid.get('f1')} (after cold start)" if mid else ""
        click.echo(f"validation F1 {summary['val_before'].get('f1')}{via} -> {summary['val_after'].get('f1')}")
    click.echo(f"checkpoint: {summary['checkpoint']} (load with --{task}-model {out_dir})")
