"""``memory-agent bench train-step``: seconds per forward+backward pass of the policy.

GRPO on a CPU spends most of a step in forward+backward passes over prompt +
completion (8 per step). This times one pass of the embedded model (or
``--model``) with a LoRA adapter on all layers and on the top N only, at the
manager's and the Answer Agent's prompt lengths, and prints JSON.
"""

from __future__ import annotations

import json
import time

import click

__all__ = ["train_step"]


@click.command("train-step")
@click.option("--model", default="default", show_default=True, help="Base model folder or 'default'.")
@click.option("--tokens", "lengths", multiple=True, type=int, default=(300, 1900), show_default=True,
              help="Sequence lengths to time (repeatable).")
@click.option("--top-layers", type=int, default=10, show_default=True, help="The top-N-layers variant.")
@click.option("--repeats", type=int, default=2, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def train_step(model, lengths, top_layers, repeats, threads, as_json):
    """Time a LoRA forward+backward pass: all layers vs the top N."""
    import os

    import torch
    from transformers import AutoModelForCausalLM

    from training.config import load_config
    from training.trainer import lora_config, resolve_model_path

    torch.set_num_threads(threads or os.cpu_count() or 1)
    base = resolve_model_path(model)
    out = {"model": str(model), "threads": torch.get_num_threads(), "seconds_per_pass": {}}
    for top in (None, top_layers):
        from peft import get_peft_model

        net = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        cfg = load_config(None, device="cpu", model=str(model), lora_r=16, lora_alpha=32, lora_top_layers=top)
        net = get_peft_model(net, lora_config(cfg, net))
        label = "all_layers" if top is None else f"top_{top}_layers"
        for n in lengths:
            x = torch.randint(0, net.config.vocab_size, (1, n))
            net(input_ids=x, labels=x).loss.backward()  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                net(input_ids=x, labels=x).loss.backward()
            out["seconds_per_pass"][f"{label}@{n}"] = round((time.perf_counter() - start) / repeats, 3)
    click.echo(json.dumps(out) if as_json else json.dumps(out, indent=2))
