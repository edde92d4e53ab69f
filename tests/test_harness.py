"""The evaluation harness end to end, with the ScriptedLLM double and HashingEmbedder.

Checks every output file and its schema, the CLI (group options and the
``compare`` subcommand), resumption after an interruption (no question is
asked twice: the scripted model's prompts are counted) and the ingest cache.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from data.jsonl import save_jsonl
from data.synthetic import generate
from memory_agent.errors import ConfigError

SUMMARY_KEYS = {"method", "model", "n_questions", "f1_kind", "overall", "by_category", "latency_ms",
                "context_tokens_mean", "answer_recall", "retrieval", "ingest"}
ROW_KEYS = {"sample_id", "qid", "question", "gold", "prediction", "category", "category_name", "tags", "evidence",
            "valid", "retrieved_ids", "search_ms", "answer_ms", "context_tokens", "raw", "f1_mem0", "f1_locomo",
            "bleu1", "em", "answer_recall", "answer_recall_k", "evidence_recall", "evidence_recall_shown",
            "ranked_sources"}
ANSWER = "Relevant: [0]\n**Answer:** Lyon"


def _answer_prompts(llm):
    return [p for p in llm.prompts if "Question:" in p[-1]["content"]]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "convs.jsonl"
    save_jsonl([generate(1), generate(2)], path)  # 2 x 8 questions, 2 adversarial among them at least
    return path


@pytest.fixture
def models(monkeypatch):
    """Spec -> ScriptedLLM, so the CLI can be driven with plain strings."""
    from memory_agent.llms import ScriptedLLM

    made = {
        "scripted": ScriptedLLM(default=ANSWER),
        "judge-ok": ScriptedLLM(default='{"label": "CORRECT"}'),
        "judge-bad": ScriptedLLM(default="I think it is right"),
    }
    monkeypatch.setattr("eval.harness.resolve_llm", lambda spec: made[spec] if isinstance(spec, str) else spec)
    return made


def _cli(*args):
    from memory_agent.cli import cli

    result = CliRunner().invoke(cli, ["eval", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _n_asked(conv_file_convs):
    return sum(len(c.questions()) for c in conv_file_convs)


def test_single_method_writes_every_file(tmp_path, data_file, models):
    out = tmp_path / "run"
    res = _cli("--data", data_file, "--method", "rag", "--out", out, "--model", "scripted",
               "--embedder", "hashing", "--judge", "judge-ok", "--quiet")
    assert "rag (scripted)" in res.output
    n = sum(len(generate(s).questions()) for s in (1, 2))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["method"] == "rag" and summary["model"] == "scripted" and summary["f1_kind"] == "mem0"
    assert summary["n_questions"] == n
    assert set(summary["overall"]) == {"f1", "bleu1", "em", "judge"}
    assert summary["overall"]["judge"] == 100.0
    assert set(summary["by_category"]) <= {"multi-hop", "temporal", "open-domain", "single-hop"}
    for cat in summary["by_category"].values():
        assert set(cat) == {"f1", "bleu1", "em", "judge", "n"}
        assert all(0 <= cat[k] <= 100 for k in ("f1", "bleu1", "em", "judge"))
    assert sum(c["n"] for c in summary["by_category"].values()) == n
    assert set(summary["latency_ms"]) == {"search_p50", "search_p95", "answer_p50", "answer_p95"}
    assert summary["latency_ms"]["search_p50"] is not None
    assert summary["context_tokens_mean"] > 0
    assert summary["ingest"]["ops"]["ADD"] == summary["ingest"]["turns"] == generate(1).n_turns + generate(2).n_turns
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n and all(ROW_KEYS <= set(r) for r in rows)
    assert all(r["category"] != 5 for r in rows)
    from eval.metrics import token_f1

    assert all(r["prediction"] == "Lyon" for r in rows)
    assert all(r["f1_mem0"] == token_f1("Lyon", r["gold"]) for r in rows)
    assert all(r["answer_recall"] is None or 0 <= r["answer_recall"] <= 1 for r in rows)
    assert 0 <= summary["answer_recall"]["overall"] <= 100  # rag shows turns: the gold is often among them
    assert set(summary["retrieval"]) == {"evidence_recall", "evidence_recall_shown", "answer_recall_k"}
    # synthetic evidence is the turn that states the fact; rag stores exactly those turns
    assert all(r["evidence_recall"] is None or 0 <= r["evidence_recall"] <= 1 for r in rows)
    assert summary["retrieval"]["evidence_recall"]["overall"] > 50
    assert all(len(r["ranked_sources"]) <= 60 and r["retrieved_ids"] for r in rows)
    assert "## Retrieval" in (out / "report.md").read_text()
    assert (out / "by_category.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "Mem0 / Memory-R1 token-set F1" in report and "| single-hop |" in report
    assert json.loads((out / "details.json").read_text())["by_tag"]["current"]["n"] > 0
    llm = models["scripted"]
    assert len(_answer_prompts(llm)) == n
    # questions are answered in batches (--answer-batch, default 8), per conversation
    assert sum(c["n"] for c in llm.calls) == n and max(c["n"] for c in llm.calls) > 1
    assert all(c["n"] <= 8 for c in llm.calls)
    assert json.loads((out / "run.json").read_text())["answer_batch"] == 8


def test_resume_asks_nothing_twice(tmp_path, data_file, models):
    out = tmp_path / "run"
    common = ["--data", data_file, "--method", "rag", "--out", out, "--model", "scripted", "--embedder", "hashing", "--quiet"]
    llm = models["scripted"]
    _cli(*common, "--limit-questions", "2")
    assert len(_answer_prompts(llm)) == 2
    marker = out / "stores" / "synthetic-1.ingested.json"
    stamp = marker.stat().st_mtime_ns
    assert not (out / "stores" / "synthetic-2.ingested.json").exists()  # no question there yet

    _cli(*common)
    n = sum(len(generate(s).questions()) for s in (1, 2))
    assert len(_answer_prompts(llm)) == n  # only the n - 2 new ones were asked
    assert marker.stat().st_mtime_ns == stamp  # the cached ingest was reused

    # an interruption in the middle of a write: the torn row is dropped and asked again
    path = out / "predictions.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:25])
    _cli(*common)
    assert len(_answer_prompts(llm)) == n + 1
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == n and len({(r["sample_id"], r["qid"]) for r in rows}) == n
    assert json.loads((out / "summary.json").read_text())["n_questions"] == n

    # a later run with a judge labels the old rows without asking the model again
    _cli(*common, "--judge", "judge-bad")
    assert len(_answer_prompts(llm)) == n + 1
    assert len(models["judge-bad"].prompts) == n
    details = json.loads((out / "details.json").read_text())
    assert details["judge_invalid"] == n and details["judged"] == 0  # counted, not scored WRONG


def test_torn_ingest_is_rebuilt_and_other_runs_refused(tmp_path, data_file, models):
    from eval.harness import EvalConfig, run_eval

    out = tmp_path / "run"
    config = EvalConfig(out=out, methods=["rag"], data=str(data_file), model="scripted", embedder="hashing",
                        progress=False, limit_questions=1)
    run_eval(config)
    (out / "stores" / "synthetic-1.ingested.json").unlink()  # as if killed during ingest
    (out / "predictions.jsonl").write_text("")
    run_eval(config)
    assert (out / "stores" / "synthetic-1.ingested.json").is_file()
    with pytest.raises(ConfigError, match="holds another run"):
        run_eval(EvalConfig(out=out, methods=["full-context"], data=str(data_file), model="scripted",
                            embedder="hashing", progress=False))


def test_several_methods_and_compare(tmp_path, data_file, models):
    out = tmp_path / "multi"
    _cli("--data", data_file, "--method", "rag", "--method", "full-context", "--out", out,
         "--model", "scripted", "--embedder", "hashing", "--quiet", "--f1", "locomo", "--limit-questions", "5")
    for name in ("rag", "full-context"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["f1_kind"] == "locomo" and summary["n_questions"] == 5
        assert "judge" not in summary["overall"]
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "| rag (scripted, retrieval=hybrid) |" in (out / "compare.md").read_text()

    cmp_dir = tmp_path / "cmp"
    res = _cli("compare", out / "rag", out / "full-context", "--out", cmp_dir, "--f1", "mem0")
    assert "rag (scripted, retrieval=hybrid)" in res.output
    combined = json.loads((cmp_dir / "compare.json").read_text())
    assert combined["f1_kind"] == "mem0" and [r["method"] for r in combined["runs"]] == ["rag", "full-context"]
    (paired,) = combined["paired"]  # the second run against the first, question by question
    rag = {(r["sample_id"], r["qid"]): r["f1_mem0"] for r in map(json.loads, (out / "rag" / "predictions.jsonl").open())}
    full = {(r["sample_id"], r["qid"]): r["f1_mem0"] for r in map(json.loads, (out / "full-context" / "predictions.jsonl").open())}
    assert paired["all"]["n"] == 5 and paired["all"]["diff"] == pytest.approx(sum(full[q] - rag[q] for q in rag) / 5)
    assert paired["all"]["low"] <= paired["all"]["diff"] <= paired["all"]["high"]
    assert "Paired differences" in (cmp_dir / "compare.md").read_text()
    assert (cmp_dir / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # the run subcommand is the same as options on the group
    _cli("run", "--data", data_file, "--method", "rag", "--out", tmp_path / "r2", "--model", "scripted",
         "--embedder", "hashing", "--quiet", "--limit-questions", "1")
    assert (tmp_path / "r2" / "summary.json").is_file()


def test_cli_errors_are_one_line(tmp_path, models):
    from memory_agent.cli import cli

    result = CliRunner().invoke(cli, ["eval", "--data", str(tmp_path / "nope.json"), "--split", "dev",
                                      "--method", "rag", "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code != 0 and "no such file" in result.output
    result = CliRunner().invoke(cli, ["eval", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--method" in result.output


def test_full_context_keeps_the_most_recent_turns(tmp_path):
    from eval.methods import FullContextMethod, MethodConfig
    from memory_agent.llms import ScriptedLLM
    from memory_store import HashingEmbedder

    conv = generate(3)
    llm = ScriptedLLM(default=ANSWER)
    method = FullContextMethod(MethodConfig(llm=llm, embedder=HashingEmbedder(dim=32), context_window=300))
    method.ingest(conv, tmp_path / "fc")
    pred = method.answer("Where does X live now?")
    prompt = llm.prompts[-1][-1]["content"]
    turns = [t.text for _, t in conv.turns()]
    assert turns[-1] in prompt and turns[1] not in prompt
    assert pred.text == "Lyon" and pred.valid
    assert pred.context_tokens <= 300 - 64


def _pipeline_reply(messages):
    """Scripted extraction / manager / answer replies, chosen by the system prompt."""
    from memory_agent.prompts import EXTRACT_SYSTEM, MANAGER_SYSTEM

    system, content = messages[0]["content"], messages[-1]["content"]
    if system == EXTRACT_SYSTEM:
        speaker, _, text = content.partition(": ")
        return f"- {speaker} said {text.split(' [shares')[0]}"
    if system == MANAGER_SYSTEM:
        first = content.split("New facts:\n- ", 1)[1].splitlines()[0]
        return f"UPDATE 0: {first}"  # memory 0 is always shown: the manager only runs with memories
    return ANSWER


@pytest.mark.parametrize("method", ["memory-r1", "add-all"])
def test_pipeline_methods_with_scripted_llm(tmp_path, data_file, method):
    from eval.harness import EvalConfig, run_eval
    from memory_agent.llms import ScriptedLLM

    llm = ScriptedLLM(default=_pipeline_reply)
    out = tmp_path / method
    (summary,) = run_eval(EvalConfig(out=out, methods=[method], data=str(data_file), model=llm,
                                     embedder="hashing", progress=False, limit_questions=3))
    assert summary["n_questions"] == 3 and summary["method"] == method
    ingest = summary["ingest"]
    assert ingest["facts"] > 0 and ingest["ops"]["ADD"] > 0 and ingest["conversations"] == 1
    managed = [p for p in llm.prompts if "New facts:" in p[-1]["content"]]
    if method == "add-all":
        assert ingest["ops"]["ADD"] == ingest["facts"] and ingest["ops"].get("UPDATE", 0) == 0 and not managed
    else:  # sessions are ingested one by one, so later sessions go through the manager
        assert managed and ingest["ops"]["UPDATE"] > 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(r["prediction"] == "Lyon" and r["valid"] and r["retrieved_ids"] for r in rows)
    assert all(r["search_ms"] is not None and r["context_tokens"] > 0 for r in rows)
    assert len(_answer_prompts(llm)) == 3
    # rerun: nothing is ingested or asked again
    n_prompts = len(llm.prompts)
    run_eval(EvalConfig(out=out, methods=[method], data=str(data_file), model=llm, embedder="hashing",
                        progress=False, limit_questions=3))
    assert len(llm.prompts) == n_prompts


def test_unknown_method_is_a_config_error(tmp_path, data_file):
    from eval.methods import MethodConfig, make_method

    with pytest.raises(ConfigError, match="unknown method"):
        make_method("mem0", MethodConfig(llm=None, embedder=None))


def test_load_conversations_specs(tmp_path, data_file):
    from data.schema import DatasetError
    from eval.harness import load_conversations

    convs = load_conversations("synthetic:2:1", None)
    assert [c.sample_id for c in convs] == ["synthetic-100003", "synthetic-100004"]
    assert convs == load_conversations("synthetic:2:1", None)
    assert [c.sample_id for c in load_conversations(str(data_file), None)] == ["synthetic-1", "synthetic-2"]
    with pytest.raises(DatasetError, match="synthetic:<n>"):
        load_conversations("synthetic:x", None)
    with pytest.raises(DatasetError, match="--split"):
        load_conversations(str(data_file), "dev")


@pytest.mark.parametrize(
    ("summary", "label"),
    [
        ({"method": "rag", "model": "default"}, "rag (default)"),
        ({"method": "memory-r1", "model": "default", "manager_model": None, "answer_model": "runs/train/answer"},
         "memory-r1 (default, answer=train/answer)"),
        ({"method": "memory-r1", "model": "default", "manager_model": "/x/mgr/", "answer_model": "openai:m@h"},
         "memory-r1 (default, manager=x/mgr, answer=openai:m@h)"),
        ({"method": "memory-r1", "model": "default", "manager_model": "/mgr", "answer_model": "answer"},
         "memory-r1 (default, manager=mgr, answer=answer)"),
    ],
)
def test_run_label_tells_runs_of_one_method_apart(summary, label):
    from eval.report import run_label

    assert run_label(summary) == label


def test_run_identity_covers_every_prediction_option(tmp_path, data_file, models):
    from eval.harness import EvalConfig, run_eval

    out = tmp_path / "run"
    base = dict(out=out, methods=["rag"], data=str(data_file), model="scripted", embedder="hashing",
                progress=False, limit_questions=2)
    run_eval(EvalConfig(**base))
    for change in ({"top_k": 5}, {"retrieval": ("vector",)}, {"answer_model": "judge-ok"}):
        with pytest.raises(ConfigError, match="holds another run"):
            run_eval(EvalConfig(**base, **change))
    run_eval(EvalConfig(**base, context_window=999))  # full-context only: not part of a rag run's identity


def test_several_retrievals_share_one_ingest(tmp_path, data_file, models, monkeypatch):
    from eval import methods
    from eval.harness import EvalConfig, run_eval

    built = []
    real = methods.MemoryR1Method.ingest
    monkeypatch.setattr(methods.MemoryR1Method, "ingest",
                        lambda self, conv, d, **kw: built.append((self.name, conv.sample_id)) or real(self, conv, d, **kw))
    out = tmp_path / "modes"
    summaries = run_eval(EvalConfig(out=out, methods=["add-all", "memory-r1"], data=str(data_file), model="scripted",
                                    embedder="hashing", progress=False, limit_questions=4,
                                    retrieval=("vector", "keyword", "hybrid")))
    assert len(summaries) == 6 and sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        f"{m}-{r}" for m in ("add-all", "memory-r1") for r in ("vector", "keyword", "hybrid"))
    assert built.count(("memory-r1", "synthetic-1")) == 1  # built once, for the first mode
    assert built.count(("add-all", "synthetic-1")) == 1
    for mode in ("vector", "keyword", "hybrid"):
        run = json.loads((out / f"memory-r1-{mode}" / "run.json").read_text())
        assert run["retrieval"] == mode and run["top_k"] == 60
        assert (out / f"memory-r1-{mode}" / "stores" / "synthetic-1.ingested.json").is_file()
    # an earlier run lends its stores when the memory would be the same
    again = tmp_path / "again"
    run_eval(EvalConfig(out=again, methods=["memory-r1"], data=str(data_file), model="scripted", embedder="hashing",
                        progress=False, limit_questions=4, retrieval=("keyword",),
                        stores_from=out / "memory-r1-vector"))
    assert built.count(("memory-r1", "synthetic-1")) == 1
    with pytest.raises(ConfigError, match="retrieval"):
        run_eval(EvalConfig(out=tmp_path / "x", methods=["rag"], data=str(data_file), model="scripted",
                            embedder="hashing", progress=False, retrieval=("bm25",)))


def test_timed_search_is_the_answer_agents_own(tmp_path, data_file, models, monkeypatch):
    from eval.harness import EvalConfig, run_eval
    from memory_store import HashingEmbedder, MemoryStore

    calls = []
    real = MemoryStore.search
    monkeypatch.setattr(MemoryStore, "search", lambda self, *a, **kw: calls.append(kw.get("mode")) or real(self, *a, **kw))
    out = tmp_path / "timed"
    run_eval(EvalConfig(out=out, methods=["memory-r1"], data=str(data_file), model="scripted", embedder="hashing",
                        progress=False, limit_questions=3, retrieval=("keyword",)))
    # only the Answer Agent's searches (one per speaker, no time named in these questions), in its mode
    with MemoryStore(out / "stores" / "synthetic-1", embedder=HashingEmbedder(384)) as s:
        speakers = {r.metadata.get("speaker") for r in s.list("synthetic-1")}
    assert calls and set(calls) == {"keyword"} and len(calls) == 3 * (2 if len(speakers) == 2 else 1)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    # answer_ms is the batch's end-to-end time spread over its questions, searches included
    assert all(r["search_ms"] is not None for r in rows)
    assert sum(r["search_ms"] for r in rows) <= sum(r["answer_ms"] for r in rows)


def test_evidence_recall_on_known_answers(tmp_path):
    """A tiny memory where the retrievable evidence is known: recall is exact, not approximate."""
    from data.schema import QA, Conversation, Session, Turn
    from eval.harness import EvalConfig, run_eval
    from memory_agent.llms import ScriptedLLM

    turns = [Turn(dia_id="D1:1", speaker="Ann", text="I adopted a greyhound named Comet"),
             Turn(dia_id="D1:2", speaker="Bob", text="The weather is mild"),
             Turn(dia_id="D1:3", speaker="Ann", text="My sister lives in Oslo")]
    session = Session(index=1, date_time="1:00 pm on 8 May, 2023", timestamp="2023-05-08T13:00:00", turns=turns)
    conv = Conversation(sample_id="tiny", speaker_a="Ann", speaker_b="Bob", sessions=[session], qa=[
        QA(question="What is the greyhound called?", answer="Comet", evidence=("D1:1",), category=1),
        QA(question="Where do the greyhound and the sister live?", answer="Oslo",
           evidence=("D1:1", "D1:3", "D9:9"), category=1)])
    run_eval(EvalConfig(out=tmp_path / "r", methods=["rag"], model=ScriptedLLM(default=ANSWER), embedder="hashing",
                        progress=False, top_k=2, retrieval=("keyword",)), conversations=[conv])
    rows = [json.loads(line) for line in (tmp_path / "r" / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["ranked_sources"][0] == "D1:1" and rows[0]["evidence_recall"] == 1.0
    assert rows[1]["evidence_recall"] == pytest.approx(1 / 3)  # k=2, one per speaker; D9:9 does not exist


def test_eval_retrieval_scores_every_mode_without_a_model(tmp_path, data_file, models):
    from eval.harness import EvalConfig, run_eval

    res = _cli("retrieval", "--data", data_file, "--embedder", "hashing")
    report = json.loads(res.output)
    assert set(report["modes"]) == {"vector", "keyword", "hybrid"} and report["evidence_recall_ceiling"] == 100.0
    n = sum(len(generate(s).questions()) for s in (1, 2))
    assert report["questions"] == n
    for mode in report["modes"].values():
        assert 0 <= mode["evidence_recall@10"]["overall"] <= mode["evidence_recall@k"]["overall"] <= 100
    # over an eval run's memories, with the embedder that run used (and no other)
    out = tmp_path / "rag"
    run_eval(EvalConfig(out=out, methods=["add-all"], data=str(data_file), model="scripted", embedder="hashing",
                        progress=False))
    report = json.loads(_cli("retrieval", "--data", data_file, "--memory", out, "--mode", "keyword").output)
    assert list(report["modes"]) == ["keyword"]
    from memory_agent.cli import cli

    bad = CliRunner().invoke(cli, ["eval", "retrieval", "--data", str(data_file), "--memory", str(out),
                                   "--embedder", "default"])
    assert bad.exit_code != 0 and "hashing" in bad.output
