"""The two training stages end to end (what ``memory-agent train`` runs).

Stage 1, ``train("manager", ...)``: Memory Manager episodes, the frozen
Answer Agent inside the reward, GRPO. Stage 2, ``train("answer", ...)``:
Answer Agent episodes over banks built by the manager in use (pass the
stage-1 checkpoint as ``manager_model``), GRPO. Either stage may start with
the SFT cold start, and reports a quick validation F1 before and after when
validation data is given. Everything lands in ``out_dir``: the checkpoint,
``metrics.csv``, ``reward_curve.png`` and ``train_summary.json``.

Models and the embedder can be injected (tests pass a ScriptedLLM and the
hashing embedder); otherwise they come from the config's specs.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memory_agent.errors import ConfigError
from training.config import MemoryGRPOConfig
from training.episodes import (
    answer_episodes,
    check_not_dev,
    load_conversations,
    manager_episodes,
    to_dataset,
)
from training.replay import ObservationReplay, Replay, TurnsReplay
from training.rewards import AnswerReward, ManagerReward, OutputCounter, completion_text, score_answer

__all__ = ["Resources", "make_embedder", "make_replay", "build_episodes", "validate", "train"]

log = logging.getLogger(__name__)


@dataclass
class Resources:
    """Injected collaborators; ``None`` means "build from the config"."""

    embedder: Any = None
    answer_llm: Any = None  # frozen Answer Agent (manager stage; also the pipeline replay's answerer)
    manager_llm: Any = None  # manager that builds banks in the pipeline replay
    extract_llm: Any = None  # extraction model of the pipeline replay
    replay: Replay | None = None
    tokenizer: Any = None  # the policy's tokenizer (answer prompts are budgeted with it)


def make_embedder(name: str):
    from memory_store import HashingEmbedder, SentenceTransformerEmbedder

    if name == "hashing":
        return HashingEmbedder(dim=384)
    return SentenceTransformerEmbedder()


def _llm(spec: str):
    from memory_agent.llms import resolve_llm

    return resolve_llm(spec)


def make_replay(config: MemoryGRPOConfig, res: Resources) -> Replay:
    if res.replay is not None:
        return res.replay
    if config.bank_source == "observations":
        return ObservationReplay(res.embedder)
    if config.bank_source == "turns":
        return TurnsReplay(res.embedder)
    from training.pipeline_replay import PipelineReplay

    manager_llm = res.manager_llm if res.manager_llm is not None else _llm(config.manager_model)
    # Extraction stays on the default model, as in Memory(manager_llm=...): only the manager is swapped.
    extract_llm = res.extract_llm if res.extract_llm is not None else _llm("default")
    return PipelineReplay(
        manager_llm,
        res.embedder,
        extract_llm=extract_llm,
        model_key=config.manager_model if res.manager_llm is None else res.manager_llm,
        extract_key="default" if res.extract_llm is None else res.extract_llm,
        embedder_key=config.embedder,
        cache_dir=config.episode_cache_dir,
    )


def build_episodes(config: MemoryGRPOConfig, conversations, res: Resources, *, limit: int | None = None):
    replay = make_replay(config, res)
    if config.max_conversations is not None:
        conversations = conversations[: config.max_conversations]
    limit = limit if limit is not None else config.max_episodes
    if config.task == "manager":
        return manager_episodes(
            conversations,
            replay,
            max_turns=config.max_turns,
            max_episodes=limit,
            include_adversarial=config.include_adversarial,
        )
    return answer_episodes(
        conversations,
        replay,
        res.embedder,
        retrieve_k=config.retrieve_k,
        max_turns=config.max_turns,
        max_episodes=limit,
        include_adversarial=config.include_adversarial,
    )


def validate(config: MemoryGRPOConfig, policy_llm: Any, episodes, res: Resources) -> dict[str, Any]:
    """Quick greedy pass: mean token-F1 (and EM) of the answers, plus the policy's valid-output rate.

    For the manager, the policy's operations are applied to each episode's
    bank and the frozen Answer Agent answers the linked questions (the
    manager reward with F1 as the metric).
    """
    if not episodes:
        return {"n": 0}
    rows = [e.row(res.tokenizer) for e in episodes]
    prompts = [r["prompt"] for r in rows]
    replies = policy_llm.generate(prompts, max_new_tokens=config.max_completion_length, temperature=0.0)
    if config.task == "answer":
        f1 = AnswerReward("f1")
        em = AnswerReward("em")
        golds = [r["answer"] for r in rows]
        f1s = f1(replies, answer=golds)
        ems = em(replies, answer=golds)
        valid = f1.counter.rate
    else:
        columns = {k: [r[k] for r in rows] for k in ("shown", "bank", "questions", "answers", "timestamp", "speaker")}
        f1 = ManagerReward(res.answer_llm, embedder=res.embedder, metric="f1", top_k=config.retrieve_k,
                           max_new_tokens=config.answer_max_new_tokens)
        f1s = f1(replies, **columns)
        # EM of the same answers (no second pass of the answer model).
        ems = [0.0] * len(rows)
        n_q = [len(q) for q in columns["questions"]]
        for i, pred, gold in f1.last_answers:
            ems[i] += score_answer(pred, gold, "em") / n_q[i]
        valid = f1.counter.rate
    return {
        "n": len(rows),
        "f1": statistics.fmean(f1s),
        "em": statistics.fmean(ems),
        "valid_rate": valid,
        "example": completion_text(replies[0])[:300],
    }


def _cold_start(config: MemoryGRPOConfig, conversations, episodes, base: Path, out: Path, res: Resources) -> tuple[Path, dict]:
    from training import sft
    from training.trainer import lora_config

    from memory_agent.llms import TransformersLLM

    if config.task == "manager":
        # Targets from the annotated observations of the training conversations.
        views = [
            v
            for conv in conversations[: config.max_conversations]
            for v in ObservationReplay(res.embedder).views(conv, max_turns=config.max_turns)
            if v.facts
        ]
        rows = sft.manager_sft_rows(_spread(views, config.cold_start_examples))
        if not rows:
            raise ConfigError("cold start needs LoCoMo-style observation annotations in the training data")
    else:
        rows = sft.answer_sft_rows(_spread(episodes, config.cold_start_examples), tokenizer=res.tokenizer)

    # The valid-output rate is probed on the GRPO prompts themselves.
    probe = [e.row(res.tokenizer) for e in episodes[: config.cold_start_probe]]
    probe_prompts = [r["prompt"] for r in probe]

    def probe_check(i: int, text: str) -> bool:
        if config.task == "manager":
            shown = json.loads(probe[i]["shown"])
            return sft.is_valid_manager(text, len(shown), json.loads(probe[i]["facts"]), shown)
        return sft.is_valid_answer(text)

    def rate(path: Path) -> float | None:
        llm = TransformersLLM(path, device=config.target_device)
        return sft.valid_rate(llm, probe_prompts, probe_check, max_new_tokens=config.max_completion_length,
                              temperature=config.temperature)

    info: dict[str, Any] = {"examples": len(rows), "steps": config.cold_start_max_steps}
    info["valid_rate_before"] = rate(base)
    t0 = time.perf_counter()
    cold = sft.run_sft(
        base,
        rows,
        out / "cold_start",
        max_steps=config.cold_start_max_steps,
        learning_rate=config.cold_start_learning_rate,
        seed=config.seed,
        use_lora=config.use_lora,
        lora=lora_config(config, base),
        device=config.target_device,
        batch_size=min(4, len(rows)),
    )
    info["seconds"] = round(time.perf_counter() - t0, 1)
    info["valid_rate_after"] = rate(cold)
    info["checkpoint"] = str(cold)
    return cold, info


def train(
    config: MemoryGRPOConfig,
    out_dir: str | Path,
    *,
    data: str | Path | None = None,
    val: str | Path | None = None,
    resources: Resources | None = None,
) -> dict[str, Any]:
    """Run one stage; returns (and writes) ``train_summary.json``."""
    from training.trainer import load_tokenizer, materialize_base, run_grpo

    t_start = time.perf_counter()
    if config.cpu_threads:
        import torch

        # Small models on a busy CPU lose more to thread hand-offs than they gain.
        torch.set_num_threads(config.cpu_threads)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    res = resources or Resources()
    if res.embedder is None:
        res.embedder = make_embedder(config.embedder)
    if config.task == "manager" and res.answer_llm is None:
        res.answer_llm = _llm(config.answer_model)

    conversations = load_conversations(data)
    check_not_dev(conversations)
    t0 = time.perf_counter()
    episodes = build_episodes(config, conversations, res)
    episode_seconds = time.perf_counter() - t0
    log.info("built %d %s episodes in %.1fs", len(episodes), config.task, episode_seconds)

    val_episodes = []
    if val is not None:
        val_convs = load_conversations(val)
        check_not_dev(val_convs)
        val_episodes = build_episodes(config, val_convs, res, limit=config.val_limit)

    base = materialize_base(config.policy_spec, out)
    if res.tokenizer is None:
        res.tokenizer = load_tokenizer(base)
    dataset = to_dataset(episodes, tokenizer=res.tokenizer)
    summary: dict[str, Any] = {
        "task": config.task,
        "policy_start": str(base),
        "data": str(data or "locomo:train"),
        "episodes": len(episodes),
        "episode_build_seconds": round(episode_seconds, 1),
        "bank_source": config.bank_source,
        "reward_metric": config.reward_metric,
    }
    if val_episodes:
        from memory_agent.llms import TransformersLLM

        # "before" is the policy as it was handed to us, before any training (cold start included).
        summary["val_before"] = validate(config, TransformersLLM(base, device=config.target_device), val_episodes, res)
    if config.cold_start:
        base, summary["cold_start"] = _cold_start(config, conversations, episodes, base, out, res)
        if val_episodes:
            summary["val_after_cold_start"] = validate(
                config, TransformersLLM(base, device=config.target_device), val_episodes, res)

    counter = OutputCounter()
    if config.task == "manager":
        reward = ManagerReward(
            res.answer_llm,
            embedder=res.embedder,
            metric=config.reward_metric,
            top_k=config.retrieve_k,
            max_new_tokens=config.answer_max_new_tokens,
            counter=counter,
        )
    else:
        reward = AnswerReward(config.reward_metric, counter=counter)
    _trainer, result = run_grpo(config, dataset, [reward], out, counters={reward.__name__: counter}, model=str(base))
    summary.update(result.summary())

    # The checkpoint must load the way users will load it.
    from memory_agent.llms import resolve_llm

    trained = resolve_llm(str(out))
    summary["checkpoint_loads"] = True
    if val_episodes:
        summary["val_after"] = validate(config, trained, val_episodes, res)
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    summary["config"] = {
        k: v
        for k, v in asdict(config).items()
        if k
        in (
            "task", "model", "manager_model", "answer_model", "embedder", "bank_source", "max_steps",
            "learning_rate", "num_generations", "per_device_train_batch_size", "gradient_accumulation_steps",
            "max_completion_length", "temperature", "beta", "use_lora", "lora_r", "seed", "retrieve_k",
            "max_turns", "max_episodes", "cold_start",
        )
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    """At most ``n`` of ``items``, evenly spaced: episodes come in conversation
    order, so the first ``n`` would cover only the first sessions' questions."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]
