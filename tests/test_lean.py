"""The lean core and the CLI's manners (issue 17).

* ``import memory_agent``, ``Memory.open`` and the memory commands import none of the optional extras
  (train, eval, serve, postgres), so ``pip install memory-agent`` is enough for them.
* A command whose extra is missing fails with one line naming the extra.
* Read commands on a folder that holds no store fail with one line and create nothing.
* The libraries' "Loading weights" progress bars show only with ``memory-agent --verbose``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memory_agent.cli import main

ROOT = Path(__file__).resolve().parents[1]

# Top-level modules of the optional extras (pyproject.toml) that the core must never import.
EXTRA_ONLY = ["trl", "datasets", "matplotlib", "nltk", "fastapi", "starlette", "uvicorn", "mcp", "psycopg",
              "psycopg_pool", "pgvector"]
# peft is a core dependency (it loads the shipped LoRA policies) but only when a policy is loaded.
NOT_IMPORTED = [*EXTRA_ONLY, "peft"]


def _python(code: str, *args: str, env: dict[str, str] | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env or os.environ.copy())


LEAN_SCRIPT = """
import json, sys
from pathlib import Path

import memory_agent
after_import = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))

from memory_agent import Memory
from memory_agent.cli import main

folder = Path(sys.argv[1])
with Memory.open(folder / "api", llm="echo", embedder="hashing") as mem:
    mem.add([{"speaker": "Alice", "text": "I live in Munich and I love green tea.", "dia_id": "D1:1"}],
            user_id="alice", timestamp="2024-05-08T10:00:00")
    hits = mem.search("where does Alice live", user_id="alice")
    answer = mem.answer("Where does Alice live?", user_id="alice")

db = str(folder / "cli")
common = ["--db", db, "--user", "alice", "--embedder", "hashing"]
codes = {}
for argv in (["add", "I live in Munich and I love green tea.", "--speaker", "Alice", "--model", "echo", *common],
             ["search", "Munich", *common],
             ["ask", "Where does Alice live?", "--model", "echo", *common],
             ["history", "1", *common],
             ["info", *common]):
    try:
        main(argv)
    except SystemExit as exc:
        codes[argv[0]] = exc.code
print(json.dumps({
    "after_import": after_import,
    "imported": sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2]))),
    "hits": len(hits),
    "answer": answer.text,
    "codes": codes,
}))
"""


def test_core_imports_no_extra(tmp_path):
    """The memory API and the core commands, with the echo model and the hashing embedder, in a fresh
    interpreter: none of the extras' modules (nor peft) is imported."""
    res = _python(LEAN_SCRIPT, str(tmp_path), json.dumps(NOT_IMPORTED))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["after_import"] == []
    assert out["imported"] == [], f"the core imported optional modules: {out['imported']}"
    assert out["hits"] >= 1
    assert out["codes"] == {"add": 0, "search": 0, "ask": 0, "history": 0, "info": 0}, res.stderr


BLOCK_SCRIPT = """
import importlib.abc, sys

BLOCKED = set(sys.argv[1].split(","))

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from memory_agent.cli import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize(("blocked", "argv", "extra", "words"), [
    ("trl", ["train", "manager", "--out", "{tmp}/run"], "train", "train manager"),
    ("nltk", ["train", "score", "answer", "--policy", "untrained", "--data", "synthetic:1"], "train", "train score"),
    ("nltk,matplotlib", ["eval", "--data", "synthetic:1", "--out", "{tmp}/eval"], "eval", "eval"),
    ("uvicorn,fastapi,mcp", ["serve", "--db", "{tmp}/db", "--embedder", "hashing"], "serve", "serve"),
    # memory_store.postgres says it itself (for library users too), without the command's name
    ("psycopg", ["search", "x", "--db", "postgresql://nobody@127.0.0.1:1/none"], "postgres", None),
])
def test_missing_extra_is_one_line(tmp_path, blocked, argv, extra, words):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    res = _python(BLOCK_SCRIPT, blocked, *argv)
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"needs the {extra} extra" in lines[0]
    if words is not None:
        assert f"memory-agent {words} needs the {extra} extra" in lines[0]
    assert f"pip install 'memory-agent[{extra}]'" in lines[0]
    assert "Traceback" not in res.stderr


def test_other_missing_modules_still_raise(capsys, monkeypatch):
    """Only modules of known extras become the one-line message: anything else is a bug and keeps its traceback."""
    from memory_agent.cli import manners

    assert manners.missing_extra_line(ModuleNotFoundError("No module named 'foo'", name="foo"), ["x"]) is None
    assert manners.missing_extra_line(ImportError("cannot import name 'X' from 'trl'", name="trl"), ["x"]) is None
    line = manners.missing_extra_line(ModuleNotFoundError("x", name="matplotlib.pyplot"), ["eval", "compare"])
    assert line == ("memory-agent eval compare needs the eval extra (matplotlib.pyplot is not installed): "
                    "pip install 'memory-agent[eval]'")


# ---------------------------------------------------------------- read commands need an existing store
@pytest.mark.parametrize("argv", [
    ["search", "tea", "--embedder", "hashing"],
    ["ask", "what tea?", "--model", "echo", "--embedder", "hashing"],
    ["history", "1", "--embedder", "hashing"],
    ["info", "--embedder", "hashing"],
    ["rlm", "what tea?", "--model", "echo"],
    ["keys", "list"],
])
def test_read_commands_on_missing_store_create_nothing(tmp_path, capsys, argv):
    missing = tmp_path / "mistyped_db"
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--db", str(missing)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert str(missing) in err
    assert not missing.exists()


def test_migrate_from_missing_store_creates_nothing(tmp_path, capsys):
    source, target = tmp_path / "nope", tmp_path / "target"
    with pytest.raises(SystemExit) as exc:
        main(["migrate", "--from", str(source), "--to", str(target)])
    assert exc.value.code == 1
    assert "no memory store at" in capsys.readouterr().err
    assert not source.exists() and not target.exists()


def test_empty_folder_is_not_a_store(tmp_path, capsys):
    """An existing folder without the store's database is refused too, and left as it was."""
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(SystemExit):
        main(["search", "tea", "--db", str(folder), "--embedder", "hashing"])
    assert f"error: no memory store at {folder.resolve()}" in capsys.readouterr().err
    assert list(folder.iterdir()) == []


def test_write_commands_still_create(tmp_path, capsys):
    db = tmp_path / "new_db"
    with pytest.raises(SystemExit) as exc:
        main(["add", "I love green tea", "--db", str(db), "--model", "echo", "--embedder", "hashing"])
    assert exc.value.code == 0
    assert db.is_dir()
    with pytest.raises(SystemExit) as exc:
        main(["search", "tea", "--db", str(db), "--embedder", "hashing"])
    assert exc.value.code == 0


def test_postgres_urls_are_not_checked_as_folders():
    from memory_store.opening import store_exists

    assert store_exists("postgresql://u@localhost/db")
    assert not store_exists("/nonexistent/folder")


# ---------------------------------------------------------------- library progress output behind --verbose
@pytest.mark.slow
def test_library_progress_bars_only_with_verbose(tmp_path):
    db = str(tmp_path / "db")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS")}
    cli = "import sys; from memory_agent.cli import main; main(sys.argv[1:])"
    res = _python(cli, "add", "I live in Paris", "--db", db, "--model", "echo", env=env)
    assert res.returncode == 0, res.stderr
    quiet = _python(cli, "search", "where do I live", "--db", db, "--embedder", "default", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "Paris" in quiet.stdout
    assert "Loading weights" not in quiet.stderr
    loud = _python(cli, "--verbose", "search", "where do I live", "--db", db, "--embedder", "default", env=env)
    assert loud.returncode == 0, loud.stderr
    assert "Paris" in loud.stdout
    assert "Loading weights" in loud.stderr
