"""One training stage end to end (what ``memory-agent train manager|answer`` runs).

1. Episodes from the training data (:mod:`training.episodes`), built by the
   product's own manager and answer code; held-out episodes from ``val``.
2. Validation of the starting policy (greedy, the product's calls).
3. Cold start: SFT of a LoRA adapter on gold targets, on episodes split off
   the GRPO prompts (disjoint), one epoch by default; validated again.
4. The gate: held-out prompts sampled at the training temperature, as GRPO
   will sample them: valid-output rate and distinct decisions per group. A
   group whose samples are all alike gives GRPO nothing to learn from, so
   below the gate the run says so and adjusts the temperature before GRPO
   starts: hotter for too little spread, cooler for too few valid samples.
5. GRPO (TRL) continuing the same adapter, with the dense rewards; the
   adapter is saved (float16) with ``metrics.csv`` and ``reward_curve.png``.
6. Validation of the trained policy; ``train_summary.json``.

Long steps show progress bars with ETAs on stderr. Models and the embedder
can be injected (tests pass a tiny model and the hashing embedder).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from memory_agent.errors import ConfigError, InvalidModelOutput
from memory_agent.manager import MemoryManager
from training.config import MemoryGRPOConfig
from training.episodes import (
    REPLAYS, answer_episodes, balanced, check_not_dev, load_conversations, manager_episodes, to_dataset,
)
from training.rewards import AnswerReward, ManagerReward, ManagerScorer, RewardStats, shuffled_within_groups
from training.validate import validate_answer, validate_manager

__all__ = ["Resources", "make_embedder", "build_episodes", "gate", "train", "MAX_TEMPERATURE", "MIN_TEMPERATURE"]

log = logging.getLogger(__name__)
MAX_TEMPERATURE = 1.5
MIN_TEMPERATURE = 0.5


@dataclass
class Resources:
    """Injected collaborators; ``None`` means "build from the config"."""

    embedder: Any = None
    tokenizer: Any = None  # the policy's (the Answer Agent's prompt budget is counted with it)
    extract_llm: Any = None  # pipeline bank source
    manager_llm: Any = None  # pipeline bank source
    load_llm: Any = None  # path -> LLM for validation (default: TransformersLLM on the config's device)


def make_embedder(name: str):
    """The product's embedder for a config name, cached (episodes and rewards embed the same texts often)."""
    from memory_agent.memory import resolve_embedder
    from memory_store import CachingEmbedder

    return CachingEmbedder(resolve_embedder(name))


def _count_tokens(tokenizer: Any):
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _replay(config: MemoryGRPOConfig, res: Resources):
    if config.bank_source != "pipeline":
        return REPLAYS[config.bank_source]()
    from memory_agent.llms import resolve_llm

    extract = res.extract_llm if res.extract_llm is not None else resolve_llm("default")
    manager = res.manager_llm if res.manager_llm is not None else resolve_llm(config.manager_model)
    return REPLAYS["pipeline"](extract, manager)


def build_episodes(config: MemoryGRPOConfig, spec: Any, res: Resources, *, what: str) -> list[Any]:
    """Episodes of ``config.task`` from a data spec, with a progress bar over conversations."""
    conversations = load_conversations(spec)
    check_not_dev(conversations)
    if config.max_conversations is not None:
        conversations = conversations[: config.max_conversations]
    with tqdm(total=len(conversations), desc=f"{what} episodes", unit="conv", file=sys.stderr,
              dynamic_ncols=True) as bar:
        if config.task == "manager":
            return manager_episodes(conversations, _replay(config, res), res.embedder, max_turns=config.max_turns,
                                    progress=bar.update)
        return answer_episodes(conversations, _replay(config, res), res.embedder,
                               count_tokens=_count_tokens(res.tokenizer), max_turns=config.max_turns,
                               progress=bar.update)


def _sample(items: list[Any], n: int | None, seed: int) -> list[Any]:
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def _validate(config: MemoryGRPOConfig, llm: Any, episodes: list[Any], res: Resources) -> dict[str, Any]:
    if not episodes:
        return {}
    t0 = time.perf_counter()
    if config.task == "manager":
        report = validate_manager(llm, episodes, ManagerScorer(count_tokens=_count_tokens(res.tokenizer)))
    else:
        report = validate_answer(llm, episodes, config.reward_metric)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _decision_key(episode: Any, raw: str, task: str) -> str:
    """What makes two samples different decisions (the invalid ones are one class)."""
    if task == "answer":
        from memory_agent.answer import parse_answer

        text, _sel, valid = parse_answer(raw, len(episode.shown))
        return text.casefold() if valid else "<invalid>"
    try:
        ops = MemoryManager.decide(episode.item, episode.hits, raw)
    except InvalidModelOutput:
        return "<invalid>"
    return repr(sorted(repr(op) for op in ops))


def gate(config: MemoryGRPOConfig, llm: Any, episodes: list[Any], temperature: float) -> dict[str, Any]:
    """Sample ``num_generations`` completions per held-out prompt at ``temperature``, as GRPO will."""
    from memory_agent.defaults import MANAGER_STOP

    chosen = _sample(episodes, config.gate_prompts, config.seed)
    if not chosen:
        return {"prompts": 0, "passed": False, "reason": "no held-out episodes"}
    k = config.num_generations
    stop = list(MANAGER_STOP) if config.task == "manager" else None
    replies = llm.generate([e.messages for e in chosen for _ in range(k)], max_new_tokens=config.max_completion_length,
                           temperature=temperature, stop=stop)
    valid, distinct = 0, []
    for i, e in enumerate(chosen):
        keys = [_decision_key(e, r, config.task) for r in replies[i * k : (i + 1) * k]]
        valid += sum(key != "<invalid>" for key in keys)
        distinct.append(len(set(keys)))
    rate, spread = valid / len(replies), sum(distinct) / len(distinct)
    return {"prompts": len(chosen), "temperature": temperature, "valid_rate": rate, "distinct_per_group": spread,
            "passed": rate >= config.gate_min_valid_rate and spread >= config.gate_min_distinct}


class _Progress:
    """A tqdm bar with ETA over a transformers Trainer's steps (the SFT cold start)."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar: tqdm | None = None

    def __getattr__(self, name: str):  # every other TrainerCallback event: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


def _threads(config: MemoryGRPOConfig) -> int:
    """Training owns the machine: every core unless the config says otherwise (never the idle-core guess,
    which a burst of our own work can fool into one thread for the whole run)."""
    return config.cpu_threads or os.cpu_count() or 1


def _load(res: Resources, config: MemoryGRPOConfig, path: Path) -> Any:
    if res.load_llm is not None:
        return res.load_llm(path)
    from memory_agent.llms import TransformersLLM

    return TransformersLLM(path, device=config.target_device, threads=_threads(config))


def _cold_start(config, base, out, sft_episodes, val_episodes, res, summary) -> Path:
    from training import sft
    from training.trainer import lora_config

    rows = sft.manager_sft_rows(sft_episodes) if config.task == "manager" else sft.answer_sft_rows(sft_episodes)
    if not rows:
        raise ConfigError("the cold start needs episodes with gold targets (synthetic edits or LoCoMo observations)")
    t0 = time.perf_counter()
    adapter = sft.run_sft(base, rows, out / "cold_start", lora=lora_config(config), epochs=config.cold_start_epochs,
                          learning_rate=config.cold_start_learning_rate, batch_size=config.cold_start_batch_size,
                          seed=config.seed, device=config.target_device, progress=_Progress("cold start (SFT)"))
    info = json.loads((adapter / "cold_start.json").read_text())
    summary["cold_start"] = {**info, "seconds": round(time.perf_counter() - t0, 1), "checkpoint": str(adapter)}
    if val_episodes:
        llm = _load(res, config, adapter)
        if config.validate_cold_start:
            summary["val_after_cold_start"] = _validate(config, llm, val_episodes, res)
        summary["gate"] = _gate_and_adjust(config, llm, val_episodes)
        del llm
        gc.collect()
    return adapter


def _next_temperature(config: MemoryGRPOConfig, result: dict[str, Any], temperature: float) -> float | None:
    """The temperature to try after a gate below its bar, or None to stop trying.

    Too few distinct decisions: sample hotter (up to :data:`MAX_TEMPERATURE`).
    Enough spread but too few valid samples: sample cooler (down to
    :data:`MIN_TEMPERATURE`), since invalid samples all score the same and a
    group of them carries no signal. Temperature is the only knob that needs
    no retraining.
    """
    if result["passed"]:
        return None
    if result.get("distinct_per_group", 0) < config.gate_min_distinct:
        hotter = round(temperature + 0.2, 2)
        return hotter if hotter <= MAX_TEMPERATURE + 1e-9 else None
    if result.get("valid_rate", 0) < config.gate_min_valid_rate:
        cooler = round(temperature - 0.2, 2)
        return cooler if cooler >= MIN_TEMPERATURE - 1e-9 else None
    return None


def _gate_and_adjust(config: MemoryGRPOConfig, llm: Any, val_episodes: list[Any]) -> dict[str, Any]:
    temperature = config.temperature
    tries: list[dict[str, Any]] = []
    seen: set[float] = set()
    while True:
        result = gate(config, llm, val_episodes, temperature)
        tries.append(result)
        seen.add(temperature)
        print(f"gate at temperature {temperature:.2f}: valid rate {result.get('valid_rate', 0):.2f}, "
              f"{result.get('distinct_per_group', 0):.2f} distinct decisions per group of {config.num_generations}"
              f" -> {'passed' if result['passed'] else 'BELOW THE GATE'}", file=sys.stderr, flush=True)
        nxt = _next_temperature(config, result, temperature)
        if nxt is None or nxt in seen:
            break
        temperature = nxt
    if not tries[-1]["passed"]:  # the best try trains: valid samples first, then spread
        best = max(tries, key=lambda t: (t.get("valid_rate", 0) >= config.gate_min_valid_rate,
                                         t.get("distinct_per_group", 0) >= config.gate_min_distinct,
                                         t.get("valid_rate", 0)))
        temperature = best.get("temperature", temperature)
    config.temperature = temperature
    return {"tries": tries, "passed": tries[-1]["passed"], "temperature": temperature}


def _rewards(config: MemoryGRPOConfig, episodes: list[Any], res: Resources) -> tuple[list[Any], dict[str, RewardStats]]:
    stats = RewardStats()
    if config.task == "manager":
        reward: Any = ManagerReward(episodes, ManagerScorer(count_tokens=_count_tokens(res.tokenizer)), stats=stats)
    else:
        reward = AnswerReward(episodes, config.reward_metric, stats=stats)
    if config.shuffle_rewards:
        reward = shuffled_within_groups(reward, config.num_generations, seed=config.seed)
    return [reward], {"reward": stats}


def train(config: MemoryGRPOConfig, out_dir: str | Path, *, resources: Resources | None = None) -> dict[str, Any]:
    """Run one stage; returns (and writes) ``train_summary.json``."""
    from training.trainer import load_policy, load_tokenizer, resolve_model_path, run_grpo

    t_start = time.perf_counter()
    if not config.target_device.startswith("cuda"):
        import torch

        torch.set_num_threads(_threads(config))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    res = resources or Resources()
    base = resolve_model_path(config.model)
    if res.tokenizer is None:
        res.tokenizer = load_tokenizer(base)
    if res.embedder is None:
        res.embedder = make_embedder(config.embedder)

    t0 = time.perf_counter()
    episodes = build_episodes(config, config.data, res, what="training")
    val_episodes = (_sample(build_episodes(config, config.val, res, what="validation"), config.val_limit, config.seed)
                    if config.val else [])
    summary: dict[str, Any] = {"task": config.task, "base": str(base), "data": config.data or "locomo:train",
                               "val": config.val, "bank_source": config.bank_source,
                               "episode_build_seconds": round(time.perf_counter() - t0, 1)}
    sft_episodes: list[Any] = []
    if config.cold_start:
        eligible = [e for e in episodes if config.task == "answer" or e.gold is not None]
        sft_episodes = balanced(eligible, config.cold_start_examples, seed=config.seed, share=0.5,
                                weights=config.kind_weights)
        taken = {e.id for e in sft_episodes}
        episodes = [e for e in episodes if e.id not in taken]  # GRPO prompts disjoint from SFT prompts
    episodes = balanced(episodes, config.max_episodes, seed=config.seed + 1, weights=config.kind_weights)
    summary.update(episodes=len(episodes), sft_episodes=len(sft_episodes), val_episodes=len(val_episodes))
    adapter = None
    if val_episodes:
        llm = _load(res, config, base)
        summary["val_before"] = _validate(config, llm, val_episodes, res)
        if not config.cold_start:  # the gate checks the policy GRPO starts from, with or without a cold start
            summary["gate"] = _gate_and_adjust(config, llm, val_episodes)
        del llm
        gc.collect()
    if config.cold_start:
        adapter = _cold_start(config, base, out, sft_episodes, val_episodes, res, summary)

    rewards, stats = _rewards(config, episodes, res)
    policy = load_policy(base, adapter, config)
    _trainer, result = run_grpo(config, to_dataset(episodes), rewards, out, model=policy, tokenizer=res.tokenizer,
                                base_path=base, stats=stats)
    summary.update(result.summary())
    del policy, _trainer
    gc.collect()
    if val_episodes:
        summary["val_after"] = _validate(config, _load(res, config, out), val_episodes, res)
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    keys = ("task", "model", "embedder", "bank_source", "data", "val", "max_steps", "learning_rate", "num_generations",
            "per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length", "temperature",
            "beta", "loss_type", "scale_rewards", "epsilon_high", "mask_truncated_completions", "lr_scheduler_type",
            "lora_r", "lora_alpha", "seed", "cold_start", "cold_start_examples", "cold_start_epochs",
            "cold_start_learning_rate", "kind_weights", "shuffle_rewards", "reward_metric")
    summary["config"] = {k: v for k, v in asdict(config).items() if k in keys}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
