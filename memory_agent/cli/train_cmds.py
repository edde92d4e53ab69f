"""``memory-agent train``: GRPO training of the two agents, and the checks around it.

::

    memory-agent train manager --out runs/policies/manager     # the device's recipe (CPU: cpu-manager.yaml)
    memory-agent train answer  --out runs/policies/answer
    memory-agent train policies --out runs/policies             # both stages: what ships with the package
    memory-agent train score manager --policy runs/policies/manager --data synthetic:16:7
    memory-agent train proxy --data synthetic:8:7+locomo:val     # the dense reward vs the Answer Agent's F1

The adapter written to ``--out`` loads anywhere a model is accepted
(``--manager-model runs/policies/manager``). Heavy imports (torch, trl)
happen inside the commands, not at ``--help``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from memory_agent.defaults import EMBEDDER_NAMES

__all__ = ["train"]


@click.group("train")
def train() -> None:
    """Train the Memory Manager or the Answer Agent with GRPO (TRL), and check the rewards."""


def _kind_weights(_ctx: Any, _param: Any, value: str | None) -> dict[str, int] | None:
    if value is None:
        return None
    parts = value.split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise click.BadParameter(f"expected three whole numbers NEW:CHANGE:REPEAT such as 2:1:1, got {value!r}")
    return dict(zip(("new", "change", "repeat"), (int(p) for p in parts)))


def _stage_options(f: Callable) -> Callable:
    options = [
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder."),
        click.option("--config", "config_file", default=None,
                     help="YAML recipe (a path or a name in training/recipes). Default: the device's recipe."),
        click.option("--data", default=None, help="Training data: locomo:<split>, synthetic:<n>[:<seed>], a file, "
                     "or several joined with '+' (default: the recipe's)."),
        click.option("--val", default=None, help="Held-out data for the gate and validation (same forms)."),
        click.option("--val-limit", type=int, default=None, help="At most N validation episodes."),
        click.option("--max-steps", type=int, default=None, help="GRPO steps."),
        click.option("--learning-rate", type=float, default=None, help="GRPO learning rate (LoRA)."),
        click.option("--temperature", type=float, default=None, help="Sampling temperature of GRPO."),
        click.option("--num-generations", type=int, default=None, help="Samples per prompt (GRPO group size)."),
        click.option("--device", default=None, help="auto | cpu | cuda (default: auto)."),
        click.option("--model", default=None, help="Base model: default (embedded SmolLM2) or a local folder."),
        click.option("--bank-source", type=click.Choice(["gold", "turns", "pipeline"]), default=None,
                     help="How earlier turns become the bank (default: gold, the data's own facts and edits)."),
        click.option("--manager-model", default=None, help="The manager of --bank-source pipeline."),
        click.option("--embedder", type=click.Choice(EMBEDDER_NAMES), default=None),
        click.option("--reward", "reward_metric", type=click.Choice(["f1", "em"]), default=None,
                     help="Answer reward metric (default f1: partial credit)."),
        click.option("--max-episodes", type=int, default=None, help="At most N GRPO episodes."),
        click.option("--max-turns", type=int, default=None, help="Replay at most N turns per conversation."),
        click.option("--cold-start/--no-cold-start", default=None, help="SFT on gold targets before GRPO."),
        click.option("--cold-start-examples", type=int, default=None, help="SFT examples (split off GRPO's)."),
        click.option("--cold-start-epochs", type=float, default=None, help="Passes over the SFT examples."),
        click.option("--cold-start-learning-rate", type=float, default=None, help="SFT learning rate (LoRA)."),
        click.option("--kind-weights", callback=_kind_weights, default=None, metavar="NEW:CHANGE:REPEAT",
                     help="Shares of the manager's decision kinds in the cold start and GRPO prompts (e.g. 2:1:1)."),
        click.option("--shuffle-rewards", is_flag=True, default=None,
                     help="Control run: rewards permuted within each group (must not gain)."),
        click.option("--seed", type=int, default=None),
        click.option("--threads", "cpu_threads", type=int, default=None, help="torch CPU threads."),
        click.option("--json", "as_json", is_flag=True, help="Print train_summary.json to stdout."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run_stage(task: str, out_dir: str, config_file: str | None, as_json: bool, **fields: Any) -> dict[str, Any]:
    from training.config import default_recipe, load_config
    from training.run import train as run_train

    device = fields.get("device") or "auto"
    recipe = config_file or default_recipe(task, device)
    config = load_config(recipe, task=task, output_dir=str(Path(out_dir) / "_trainer"), **fields)
    _scale_short_run(config, load_config(recipe, task=task, output_dir=config.output_dir), fields)
    click.echo(f"train {task}: recipe {Path(recipe).name}, device {config.target_device}, data {config.data}, "
               f"{config.max_steps} GRPO steps x {config.num_generations} samples", err=True)
    summary = run_train(config, out_dir)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(task, out_dir, summary)
    return summary


def _scale_short_run(config: Any, recipe: Any, fields: dict[str, Any]) -> None:
    """A run asked for fewer GRPO steps than its recipe (a smoke run) gets a cold start and a
    validation in proportion, unless those were given too: 8 SFT examples, 4 validation
    episodes and one gate prompt per GRPO step (at least 2). Otherwise a 2-step try of the CPU
    recipe spends most of its time on the full cold start (minutes on a 2-core CPU) instead of
    the steps asked for."""
    steps = fields.get("max_steps")
    if not steps or steps >= recipe.max_steps:
        return
    scaled = []
    if fields.get("cold_start_examples") is None and config.cold_start_examples > 8 * steps:
        config.cold_start_examples = 8 * steps
        scaled.append(f"cold start {config.cold_start_examples} examples")
    if fields.get("val_limit") is None and config.val_limit > 4 * steps:
        config.val_limit = 4 * steps
        scaled.append(f"validation {config.val_limit} episodes")
    if config.gate_prompts > max(2, steps):
        config.gate_prompts = max(2, steps)
        scaled.append(f"gate {config.gate_prompts} prompts")
    if scaled:
        click.echo(f"short run ({steps} of the recipe's {recipe.max_steps} steps): " + ", ".join(scaled)
                   + " (--cold-start-examples / --val-limit to override)", err=True)


def _print_summary(task: str, out_dir: str, summary: dict[str, Any]) -> None:
    click.echo(f"trained {task}: {summary['steps']} GRPO steps in {summary['wall_seconds']}s "
               f"({summary.get('seconds_per_step_mean')}s/step), {summary['total_seconds']}s in all")
    click.echo(f"reward {summary.get('reward_first')} -> {summary.get('reward_last')}; groups without reward spread "
               f"{summary.get('frac_reward_zero_std_mean')}; LoRA update norm {summary.get('lora_update_norm_last')}")
    for key in ("val_before", "val_after_cold_start", "val_after"):
        block = (summary.get(key) or {}).get("all")
        if block:
            main = "reward" if task == "manager" else "f1"
            click.echo(f"{key}: {main} {block.get(main)}, valid rate {block.get('valid_rate')}")
    click.echo(f"adapter: {out_dir} (load with --{task}-model {out_dir})")


@train.command("manager")
@_stage_options
def manager(out_dir, config_file, as_json, **fields):
    """Stage 1: the Memory Manager (dense recall reward, no LLM in the loop)."""
    _run_stage("manager", out_dir, config_file, as_json, **fields)


@train.command("answer")
@_stage_options
def answer(out_dir, config_file, as_json, **fields):
    """Stage 2: the Answer Agent (F1 reward with a marker penalty and a quote bonus)."""
    _run_stage("answer", out_dir, config_file, as_json, **fields)


@train.command("policies")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--threads", "cpu_threads", type=int, default=None, help="torch CPU threads (per stage when parallel).")
@click.option("--device", default=None, help="auto | cpu | cuda (default: auto).")
@click.option("--parallel/--sequential", default=None,
              help="Both stages at once, the cores split between them (default on a CPU with 2+ cores: "
                   "small-batch generation gains little from a second thread, so two one-thread stages side "
                   "by side finish sooner than two two-thread stages in a row).")
@click.option("--compare/--no-compare", default=True, help="Compare with the shipped policies' scores.")
def policies(out_dir, cpu_threads, device, parallel, compare):
    """Retrain both shipped policies from scratch with the device's recipes (CPU: under an hour on 2 cores)."""
    import os
    import time

    start = time.perf_counter()
    cores = os.cpu_count() or 1
    on_cpu = (device or "auto") == "cpu" or (device in (None, "auto") and not _cuda_available())
    if parallel is None:
        parallel = on_cpu and cores >= 2
    if parallel:
        results = _stages_in_parallel(Path(out_dir), cpu_threads or max(1, cores // 2), device)
    else:
        results = {task: _run_stage(task, str(Path(out_dir) / task), None, False, cpu_threads=cpu_threads,
                                    device=device) for task in ("manager", "answer")}
    click.echo(f"both stages: {time.perf_counter() - start:.0f}s")
    if compare:
        from memory_agent.policies import shipped_scores

        shipped = shipped_scores()
        for task, summary in results.items():
            mine = (summary.get("val_after") or {}).get("all", {})
            theirs = (shipped.get(task) or {}).get("all", {})
            key = "reward" if task == "manager" else "f1"
            click.echo(f"{task}: validation {key} {mine.get(key)} (shipped: {theirs.get(key)})")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _stages_in_parallel(out: Path, threads: int, device: str | None) -> dict[str, dict[str, Any]]:
    """Run ``train manager`` and ``train answer`` as two processes; each one's output goes to
    ``out/<task>.log`` and the latest progress line of each is echoed every 30 s."""
    import subprocess
    import sys
    import time

    out.mkdir(parents=True, exist_ok=True)
    procs, logs = {}, {}
    for task in ("manager", "answer"):
        cmd = [sys.executable, "-m", "memory_agent.cli", "train", task, "--out", str(out / task),
               "--threads", str(threads)] + (["--device", device] if device else [])
        logs[task] = out / f"{task}.log"
        with logs[task].open("w") as log:
            procs[task] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        click.echo(f"{task}: started ({threads} thread(s)); log {logs[task]}", err=True)
    while any(p.poll() is None for p in procs.values()):
        time.sleep(30)
        for task, p in procs.items():
            tail = logs[task].read_text(errors="replace").replace("\r", "\n").strip().splitlines()
            click.echo(f"{task}: {'done' if p.poll() is not None else (tail[-1][:160] if tail else '...')}", err=True)
    failed = [task for task, p in procs.items() if p.returncode != 0]
    if failed:
        raise click.ClickException(f"stage(s) {', '.join(failed)} failed; see {', '.join(str(logs[t]) for t in failed)}")
    return {task: json.loads((out / task / "train_summary.json").read_text()) for task in procs}


@train.command("score")
@click.argument("task", type=click.Choice(["manager", "answer"]))
@click.option("--policy", "policies", multiple=True, required=True,
              help="Model spec to score (repeat to compare): 'untrained' (the embedded base model), "
                   "'shipped' or 'default' (the packaged adapter), or a model/adapter folder.")
@click.option("--data", required=True, help="Held-out data spec (never the training data).")
@click.option("--limit", type=int, default=None, help="At most N episodes (seeded sample).")
@click.option("--embedder", type=click.Choice(EMBEDDER_NAMES), default="default")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, help="Write the reports as JSON.")
def score(task, policies, data, limit, embedder, out_file):
    """Greedy validation of policies on the same held-out episodes, with paired bootstrap intervals."""
    from training.compare import score_policies

    report = score_policies(task, list(policies), data, limit=limit, embedder=embedder)
    text = json.dumps(report, indent=2, default=str)
    if out_file:
        Path(out_file).write_text(text)
    click.echo(json.dumps(report["summary"], indent=2, default=str))


@train.command("proxy")
@click.option("--data", required=True, help="Held-out data spec (e.g. synthetic:8:7+locomo:val).")
@click.option("--answer-model", default="default", help="The Answer Agent whose F1 the dense reward stands in for.")
@click.option("--limit", type=int, default=40, show_default=True, help="At most N episodes.")
@click.option("--embedder", type=click.Choice(EMBEDDER_NAMES), default="default")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, help="Write every pair as JSON.")
def proxy(data, answer_model, limit, embedder, out_file):
    """Is the dense manager reward faithful? Its rank correlation with the Answer Agent's F1."""
    from training.proxy import proxy_check

    report = proxy_check(data, answer_model=answer_model, limit=limit, embedder=embedder)
    if out_file:
        Path(out_file).write_text(json.dumps(report, indent=2, default=str))
    click.echo(json.dumps(report["summary"], indent=2, default=str))


@train.command("ship")
@click.option("--from", "source", required=True, type=click.Path(file_okay=False, exists=True),
              help="A folder with manager/ and answer/ runs (what `train policies --out` writes).")
def ship(source):
    """Install a trained pair as the package's default policies (for maintainers; writes memory_agent/policies/)."""
    import shutil

    from memory_agent.policies import POLICY_DIR, ROLES

    scores = {}
    for role in ROLES:
        run = Path(source) / role
        summary = json.loads((run / "train_summary.json").read_text())
        target = POLICY_DIR / role
        target.mkdir(exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(run / name, target / name)
        scores[role] = {"val": summary.get("val"), "data": summary.get("data"), "steps": summary.get("steps"),
                        "total_seconds": summary.get("total_seconds"), "config": summary.get("config"),
                        **{k: {b: v for b, v in (summary.get(k) or {}).items() if b != "per_episode" and b != "examples"}
                           for k in ("val_before", "val_after_cold_start", "val_after")}}
        scores[role]["all"] = (summary.get("val_after") or {}).get("all", {})
    (POLICY_DIR / "scores.json").write_text(json.dumps(scores, indent=2, default=str) + "\n")
    click.echo(f"installed {', '.join(ROLES)} from {source} into {POLICY_DIR}")
