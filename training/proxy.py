"""Is the dense manager reward a faithful proxy? Its rank correlation with the Answer Agent's F1.

The manager is trained on gold-answer recall in what the Answer Agent would
be shown (:class:`training.rewards.ManagerScorer`) instead of the Answer
Agent's F1, because the F1 of a 135M answerer is almost always 0 and gives
GRPO no spread. That trade is only sound if the two agree on which decisions
are better. This module measures it on held-out episodes:

* candidate decisions per episode: the gold decision, NOOP, ADD every fact,
  UPDATE the top shown memory with the first fact, DELETE the top shown memory;
* for each, the dense reward, and the mean F1 of the real Answer Agent
  (``answer_model``) answering the linked questions from the bank after the
  decision, through the product's own :class:`~memory_agent.answer.AnswerAgent`;
* Spearman's rank correlation over all (episode, candidate) pairs, and the
  mean within-episode correlation (episodes where both vary).
"""

from __future__ import annotations

import random
import statistics
from typing import Any

from eval.scoring import best_score
from memory_agent.answer import AnswerAgent
from memory_agent.errors import InvalidModelOutput
from memory_agent.llms.base import TokenCounting
from training.episodes import GoldReplay, ManagerEpisode, check_not_dev, load_conversations, manager_episodes
from training.rewards import ManagerScorer
from training.validate import in_waves

__all__ = ["candidates", "proxy_check"]


def candidates(episode: ManagerEpisode) -> list[str]:
    """Decisions worth comparing for one episode (distinct completion texts)."""
    out = [episode.target() or "", "NOOP", "\n".join(f"ADD: {f}" for f in episode.item.facts)]
    if episode.hits:
        out += [f"UPDATE 0: {episode.item.facts[0]}", "DELETE 0"]
    return list(dict.fromkeys(c for c in out if c))


def proxy_check(data: str, *, answer_model: Any = "default", limit: int | None = 40, embedder: str = "default",
                seed: int = 0) -> dict[str, Any]:
    from scipy.stats import spearmanr

    from memory_agent.llms import resolve_llm
    from training.run import _count_tokens, make_embedder
    from training.trainer import load_tokenizer, resolve_model_path

    conversations = load_conversations(data)
    check_not_dev(conversations)
    episodes = [e for e in manager_episodes(conversations, GoldReplay(), make_embedder(embedder)) if e.questions]
    if limit is not None and len(episodes) > limit:
        episodes = random.Random(seed).sample(episodes, limit)
    llm = resolve_llm(answer_model)
    # the answer model's own counts (TokenCounting), else the embedded model's tokenizer
    count = (llm.count_text_tokens if isinstance(llm, TokenCounting)
             else _count_tokens(load_tokenizer(resolve_model_path("default"))))
    scorer = ManagerScorer(count_tokens=count)
    rows, prompts, owners = [], [], []
    for e in episodes:
        for text in candidates(e):
            score = scorer.score(e, text)
            try:
                _ops, after, _applied = scorer.apply(e, text)
            except InvalidModelOutput:
                continue  # an invalid candidate has no bank to answer from
            agent = AnswerAgent(llm, after, count_tokens=scorer.count_tokens)
            rows.append({"episode": e.id, "conversation": e.conversation_id, "decision": text,
                         "dense": score.reward, "f1": []})
            for qa in e.questions:
                messages, _shown = agent.prompt(qa.question, e.user_id)
                prompts.append(messages)
                owners.append((len(rows) - 1, qa.answer))
    replies = in_waves(AnswerAgent(llm, None).ask, prompts, "proxy answers")
    for (i, gold), raw in zip(owners, replies, strict=True):
        rows[i]["f1"].append(best_score(AnswerAgent.read("", [], raw).text, gold, "f1"))
    for r in rows:
        r["f1"] = statistics.fmean(r["f1"]) if r["f1"] else 0.0
    dense, f1 = [r["dense"] for r in rows], [r["f1"] for r in rows]
    pooled = spearmanr(dense, f1)
    within = []
    for eid in {r["episode"] for r in rows}:
        sub = [r for r in rows if r["episode"] == eid]
        if len({r["dense"] for r in sub}) > 1 and len({r["f1"] for r in sub}) > 1:
            within.append(float(spearmanr([r["dense"] for r in sub], [r["f1"] for r in sub]).statistic))
    summary = {"data": data, "answer_model": str(answer_model), "episodes": len(episodes), "pairs": len(rows),
               "spearman": float(pooled.statistic), "p_value": float(pooled.pvalue),
               "within_episode_spearman_mean": statistics.fmean(within) if within else None,
               "episodes_with_variance": len(within), "f1_mean": statistics.fmean(f1) if f1 else None,
               "dense_mean": statistics.fmean(dense) if dense else None}
    return {"summary": summary, "pairs": rows}
