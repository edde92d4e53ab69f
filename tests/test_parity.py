"""One pipeline: the product on a MemoryStore and the reward path on InMemoryStore forks agree.

The same conversation goes (a) through the product's ``MemoryManager.manage``
on a real SQLite + FAISS store, driven by a scripted model that writes the
gold decisions, and (b) through training's episode replay and the reward's
``ManagerScorer.apply``. Both must build the same prompts, show the same
memories (texts and ids) and apply the same operations; the Answer Agent's
prompts over the final banks must be the same too.
"""

from __future__ import annotations

from data.synthetic import generate
from memory_agent.answer import AnswerAgent
from memory_agent.llms import ScriptedLLM
from memory_agent.manager import MemoryManager, TurnFacts
from memory_store import HashingEmbedder, MemoryStore
from training.episodes import GoldReplay, _walk, manager_episodes
from training.rewards import ManagerScorer


def _items(conv):
    facts = GoldReplay().facts(conv)
    return [TurnFacts(t.dia_id, t.speaker, s.timestamp, facts[t.dia_id]) for s, t in conv.turns() if t.dia_id in facts]


def test_product_and_reward_path_agree(tmp_path):
    conv = generate(11)
    embedder = HashingEmbedder(256)
    episodes = manager_episodes([conv], GoldReplay(), embedder)
    assert episodes and all(e.kind != "unknown" for e in episodes)
    # every gold edit could be written from its prompt (its target was shown), so the product can follow it
    edits = sum(1 for ed in conv.edits.values() for x in ed if x.op in ("UPDATE", "DELETE"))
    assert sum(1 for e in episodes for op in e.gold if op.op in ("UPDATE", "DELETE")) == edits

    llm = ScriptedLLM([e.target() for e in episodes])
    with MemoryStore(tmp_path / "product", embedder=embedder) as store:
        outcome = MemoryManager(llm, store, wave_size=1).manage(_items(conv), conv.sample_id)
        assert not outcome.skipped and outcome.decisions == len(episodes)
        # the same prompts, hence the same shown memories in the same order
        assert llm.prompts == [e.messages for e in episodes]
        # the same applied operations, turn by turn
        product_ops = [(a.op, a.id, a.old_text, a.new_text) for a in outcome.applied if not a.direct]
        reward_ops = [(a.op, a.id, a.old_text, a.new_text)
                      for e in episodes for a in ManagerScorer.apply(e, e.target())[2]]
        assert product_ops == reward_ops
        # and the same banks: the Answer Agent shows the same memories from both
        bank = _walk(conv, GoldReplay(), embedder, None).store
        assert [(r.id, r.text, r.metadata) for r in store.list(conv.sample_id)] == \
               [(r.id, r.text, r.metadata) for r in bank.list(conv.sample_id)]
        for qa in conv.questions():
            a_msgs, a_shown = AnswerAgent(None, store).prompt(qa.question, conv.sample_id)
            b_msgs, b_shown = AnswerAgent(None, bank).prompt(qa.question, conv.sample_id)
            assert a_msgs == b_msgs and [m.id for m in a_shown] == [m.id for m in b_shown]
