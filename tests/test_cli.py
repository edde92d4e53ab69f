"""CLI: commands on a hashing-embedder store, scripted models via `scripted:FILE.json`, error paths."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memory_agent.cli import cli, main


def run(args, input=None):
    return CliRunner().invoke(cli, args, input=input)


@pytest.fixture
def script(tmp_path):
    def make(replies, default=None):
        path = tmp_path / f"script{len(list(tmp_path.glob('script*')))}.json"
        path.write_text(json.dumps({"replies": replies, "default": default}))
        return f"scripted:{path}"

    return make


def test_help_lists_commands():
    res = run(["--help"])
    assert res.exit_code == 0
    for name in ("demo", "add", "ask", "search", "history", "chat", "info", "setup"):
        assert name in res.output


def test_add_search_history_ask_info(tmp_path, script):
    db = str(tmp_path / "db")
    common = ["--db", db, "--user", "alice", "--embedder", "hashing"]
    res = run(["add", "I moved to Berlin last month.", "--speaker", "Alice", "--timestamp", "2024-05-08T13:56",
               "--model", script(["- Alice moved to Berlin last month"]), "--json", *common])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["facts"] == ["Alice moved to Berlin in April 2024"] and out["counts"]["add"] == 1
    mid = out["applied"][0]["id"]

    res = run(["add", "Now I live in Munich.", "--speaker", "Alice", "--timestamp", "2024-06-01T10:00",
               "--model", script(["- Alice lives in Munich", "UPDATE 0: Alice lives in Munich"]), *common])
    assert res.exit_code == 0, res.output
    assert f"UPDATE #{mid} Alice lives in Munich" in res.output

    res = run(["search", "where does Alice live", "--json", *common])
    hits = json.loads(res.stdout)
    assert hits[0]["id"] == mid and hits[0]["text"] == "Alice lives in Munich"
    for mode in ("vector", "keyword", "hybrid"):
        res = run(["search", "Munich", "--mode", mode, "--json", *common])
        assert res.exit_code == 0 and json.loads(res.stdout)[0]["id"] == mid
    res = run(["search", "Munich", "--filter", '{"created_at": {"$lt": "2024-01-01"}}', "--json", *common])
    assert json.loads(res.stdout) == []  # the memory is dated 2024
    res = run(["search", "Munich", "--filter", '{"speaker": {"$regex": "A"}}', *common])
    from memory_store import InvalidFilter  # `memory-agent` (main) prints it as one "error:" line

    assert isinstance(res.exception, InvalidFilter) and "unknown operator" in str(res.exception)
    res = run(["search", "Munich", "--filter", "{not json", *common])
    assert res.exit_code != 0 and "not JSON" in res.output

    res = run(["history", str(mid), *common])
    assert res.exit_code == 0 and "ADD" in res.output and "UPDATE" in res.output

    res = run(["ask", "Where does Alice live?", "--model", script(["Relevant: [0]\n**Answer:** Munich"]), "--json",
               *common])
    assert json.loads(res.stdout)["answer"] == "Munich"

    res = run(["info", "--json", *common])
    info = json.loads(res.stdout)
    assert info["user_memories"] == 1 and info["n"] == 1


def test_other_user_sees_nothing(tmp_path, script):
    db = str(tmp_path / "db")
    run(["add", "I like tea", "--speaker", "A", "--model", script(["- A likes tea"]), "--db", db, "--user", "a",
         "--embedder", "hashing"])
    res = run(["search", "tea", "--db", db, "--user", "b", "--embedder", "hashing"])
    assert "no memories" in res.output
    res = run(["history", "1", "--db", db, "--user", "b", "--embedder", "hashing"])
    assert res.exit_code != 0


def test_chat_remembers_and_exits_on_eof(tmp_path, script):
    db = str(tmp_path / "db")
    model = script(["- Sam has a dog named Rex", "**Answer:** Rex", "NONE"])
    res = run(["chat", "--name", "Sam", "--model", model, "--db", db, "--user", "sam", "--embedder", "hashing"],
              input="I have a dog named Rex.\nWhat is my dog called?\n")
    assert res.exit_code == 0, res.output
    assert "Rex" in res.output
    res = run(["search", "dog", "--db", db, "--user", "sam", "--embedder", "hashing", "--json"])
    assert json.loads(res.stdout)[0]["text"] == "Sam has a dog named Rex"


def test_demo_with_scripted_model(tmp_path, script):
    pytest.importorskip("data.synthetic")
    model = script([], default="NONE")  # extraction says NONE for every turn; answers are invalid
    res = run(["demo", "--db", str(tmp_path / "demo"), "--model", model, "--embedder", "hashing", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["questions"]) == 6 and out["summary"]["answers_invalid"] == 6
    assert out["summary"]["db"].endswith("demo")


def test_errors_are_one_line_and_nonzero(tmp_path, capsys):
    db = str(tmp_path / "db")
    for argv in (
        ["ask", "x", "--model", "no-such-model", "--db", db, "--embedder", "hashing"],
        ["history", "99", "--db", db, "--embedder", "hashing"],
        ["add", "x", "--model", "scripted:/nonexistent.json", "--db", db, "--embedder", "hashing"],
        ["add", "I like tea", "--timestamp", "yesterday-ish", "--model", "default", "--db", db, "--embedder", "hashing"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err


def test_demo_refuses_non_empty_folder(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(SystemExit):
        main(["demo", "--db", str(tmp_path / "full"), "--embedder", "hashing"])
    assert "not empty" in capsys.readouterr().err


def test_every_registered_command_loads():
    # The lazy groups import command modules on use: a broken one must fail here, not for a user.
    import click

    from memory_agent.cli import COMMANDS, cli
    from memory_agent.cli.bench_cmds import BENCHMARKS, bench

    ctx = click.Context(cli)
    for name in COMMANDS:
        assert isinstance(cli.get_command(ctx, name), click.Command), name
    for name in BENCHMARKS:
        assert isinstance(bench.get_command(click.Context(bench), name), click.Command), name
