"""Score several policies on the same held-out episodes, with paired bootstrap intervals.

``memory-agent train score manager --policy untrained --policy runs/sft --policy runs/grpo
--data synthetic:16:7`` validates each policy greedily (:mod:`training.validate`)
on one set of episodes and compares each with every one listed before it by a paired bootstrap
over episodes (:func:`eval.stats.paired_bootstrap`): the dense reward for the
manager, F1 for the answer agent (and F1 on "now" questions).
"""

from __future__ import annotations

import gc
from typing import Any

from eval.stats import paired_bootstrap
from training.config import load_config
from training.run import Resources, _sample, _validate, build_episodes, make_embedder

__all__ = ["resolve_policy", "score_policies", "summarize"]


def resolve_policy(spec: str, task: str) -> str:
    """``untrained`` -> the embedded base model; ``shipped`` or ``default`` -> the packaged adapter (as
    ``--policy default`` means everywhere else); else the spec (a model or adapter folder)."""
    if spec == "untrained":
        return "default"
    if spec in ("shipped", "default"):
        from memory_agent.policies import shipped

        path = shipped(task)
        if path is None:
            from memory_agent.errors import ConfigError

            raise ConfigError(f"no shipped {task} policy in this installation")
        return str(path)
    return spec


def score_policies(task: str, policies: list[str], data: str, *, limit: int | None = None,
                   embedder: str = "default", seed: int = 0) -> dict[str, Any]:
    from memory_agent.llms import resolve_llm
    from training.trainer import load_tokenizer, resolve_model_path

    config = load_config(None, task=task, embedder=embedder, data=data, seed=seed)
    res = Resources(embedder=make_embedder(embedder), tokenizer=load_tokenizer(resolve_model_path("default")))
    episodes = _sample(build_episodes(config, data, res, what="held-out"), limit, seed)
    reports = {}
    for spec in policies:
        llm = resolve_llm(resolve_policy(spec, task))
        reports[spec] = _validate(config, llm, episodes, res)
        del llm
        gc.collect()
    return {"summary": summarize(task, data, reports, seed=seed), "reports": reports}


def summarize(task: str, data: str, reports: dict[str, dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Each policy's scores, and a paired bootstrap against every policy listed before it.

    ``reports`` maps a policy spec to its validation report (the ``reports`` a ``train score --out``
    file holds), in the order given, so a saved file can be summarised again with other pairs.
    """
    key = "reward" if task == "manager" else "f1"
    specs = list(reports)
    summary: dict[str, Any] = {"task": task, "data": data,
                               "episodes": len(reports[specs[0]]["per_episode"]) if specs else 0, "policies": {}}
    for i, spec in enumerate(specs):
        block = reports[spec]["all"]
        entry = {k: block.get(k) for k in ("reward", "valid_rate", "f1", "em", "edit_recall", "edit_precision",
                                           "add_rate", "noop_rate", "ops") if k in block}
        for source in ("synthetic", "locomo", "current"):
            if source in reports[spec]:
                entry[source] = {k: reports[spec][source].get(k) for k in ("reward", "f1", "edit_recall",
                                 "edit_precision", "add_rate", "valid_rate") if k in reports[spec][source]}
        b = [r[key] for r in reports[spec]["per_episode"]]
        cur = [j for j, r in enumerate(reports[spec]["per_episode"]) if "current" in r.get("tags", ())]
        for earlier in specs[:i]:
            a = [r[key] for r in reports[earlier]["per_episode"]]
            entry[f"vs_{earlier}"] = paired_bootstrap(a, b, seed=seed)
            if task == "answer" and cur:
                entry[f"vs_{earlier}_current"] = paired_bootstrap([a[j] for j in cur], [b[j] for j in cur], seed=seed)
        summary["policies"][spec] = entry
    return summary
