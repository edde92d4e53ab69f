"""One home per concept: copies that cannot import the home are held equal to it, names resolve alike."""

from __future__ import annotations

import ast
import re
from datetime import date, datetime
from pathlib import Path

import pytest

from data.dates import display_day, parse_date
from memory_agent.defaults import DEFAULT_MODEL_NAMES, EMBEDDER_NAMES
from memory_agent.llms import ScriptedLLM
from memory_agent.llms.base import TokenCounting, UsageReporting, approx_tokens, prompt_tokens, text_tokens
from memory_agent.text import FACT_STOP_WORDS, FUNCTION_WORDS, QUESTION_STOP_WORDS, STOP_WORDS

ROOT = Path(__file__).resolve().parents[1]


def test_sandbox_stop_words_equal_the_shared_list():
    # strategies.py runs in the stdlib-only sandbox worker, loaded by path: it keeps a copy.
    from memory_agent.rlm import strategies

    assert strategies.STOPWORDS == QUESTION_STOP_WORDS


def test_every_stop_list_extends_the_one_base():
    for words in (STOP_WORDS, FACT_STOP_WORDS, QUESTION_STOP_WORDS):
        assert FUNCTION_WORDS < words


def test_no_other_stop_list_in_the_agents():
    # memory_store/keyword.py keeps its own FTS list: the store imports none of our packages.
    for package in ("memory_agent", "training", "eval", "data"):
        for path in (ROOT / package).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() in ("memory_agent/text.py", "memory_agent/rlm/strategies.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            assert not re.fullmatch(r"_?STOP(_?WORDS)?", t.id), f"{path}: {t.id}"


@pytest.mark.parametrize("text", ["1:56 pm on 8 May, 2023", "1:56 PM on 8 May, 2023", "1:56 pm on May 8, 2023",
                                  "2023-05-08T13:56", "2023-05-08T13:56:00"])
def test_one_date_parser_for_the_product_and_the_loaders(text):
    from data.schema import parse_locomo_datetime
    from memory_agent.extraction import parse_session_date

    assert parse_session_date(text) == parse_date(text) == datetime(2023, 5, 8, 13, 56)
    assert parse_locomo_datetime(text) == "2023-05-08T13:56:00"


def test_one_day_display():
    from data.synthetic import format_date
    from memory_agent.answer import display_date

    assert display_day(date(2023, 5, 8)) == "8 May 2023"
    assert display_date("2023-05-08T13:56:00") == format_date(datetime(2023, 5, 8)) == "8 May 2023"


def test_embedder_names_resolve_everywhere(monkeypatch):
    import memory_store
    from memory_agent.memory import resolve_embedder
    from training.config import EMBEDDERS

    monkeypatch.setattr(memory_store, "SentenceTransformerEmbedder", lambda: "minilm")  # no model load
    assert [type(resolve_embedder(n)).__name__ for n in EMBEDDER_NAMES] == ["str", "str", "HashingEmbedder"]
    assert EMBEDDERS == EMBEDDER_NAMES


def test_training_and_cli_offer_the_product_embedder_names():
    import click

    from memory_agent.cli.options import embedder_option

    @embedder_option
    def cmd(embedder):  # pragma: no cover - never invoked
        pass

    (param,) = [p for p in cmd.__click_params__ if p.name == "embedder"]
    assert tuple(param.type.choices) == EMBEDDER_NAMES
    assert isinstance(param.type, click.Choice)


def test_model_names_resolve_to_the_embedded_model():
    from memory_agent.llms.spec import _backend_for

    for name in DEFAULT_MODEL_NAMES:
        assert _backend_for(name) == ("default", "default")


def test_backends_declare_their_capabilities():
    from memory_agent.llms.echo import EchoLLM

    for llm in (ScriptedLLM(["x"]), EchoLLM()):
        assert isinstance(llm, UsageReporting)
        assert not isinstance(llm, TokenCounting)
    llm = ScriptedLLM(["x"])
    assert text_tokens(llm, "abcdefgh") == approx_tokens("abcdefgh") == 3
    assert prompt_tokens(llm, [{"role": "user", "content": "abcd"}, {"role": "user", "content": "efgh"}]) == 3


def test_recipes_use_the_resolvers_names():
    import yaml

    for path in sorted((ROOT / "training" / "recipes").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        assert cfg.get("embedder", "default") in EMBEDDER_NAMES, path
        assert cfg.get("model", "default") in DEFAULT_MODEL_NAMES or "/" in str(cfg.get("model")), path
        # the product's budgets come from memory_agent.defaults (load_config), never from a recipe
        assert "max_completion_length" not in cfg, path
