"""The import rules between packages, checked on the source with ``ast``.

memory_store imports none of our packages; data imports none but
memory_store's pure errors; memory_agent (outside its CLI) never imports eval
or training; nothing imports the CLI package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"memory_agent", "memory_store", "data", "eval", "training"}

# package -> the project packages it may import
ALLOWED = {
    "memory_store": set(),
    "data": {"memory_store"},
    "memory_agent": {"memory_store", "data"},
    "eval": {"memory_agent", "memory_store", "data"},
    "training": {"memory_agent", "memory_store", "data", "eval"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _modules():
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path


@pytest.mark.parametrize("package,path", list(_modules()), ids=lambda v: str(v).split(str(ROOT))[-1])
def test_imports_point_one_way(package, path):
    is_cli = "cli" in path.relative_to(ROOT).parts
    for name in _imports(path):
        top = name.split(".")[0]
        if name.startswith("memory_agent.cli"):
            assert is_cli, f"{path} imports the CLI package ({name})"
        if top not in OURS or top == package or is_cli:
            continue
        assert top in ALLOWED[package], f"{path} imports {name}: {package} may not import {top}"


def test_import_memory_store_does_not_import_torch():
    code = "import sys, memory_store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_import_memory_agent_is_light():
    code = "import sys, memory_agent; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False False"


def test_import_memory_agent_and_its_client_pull_no_server_package():
    code = ("import sys, memory_agent, memory_agent.client; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'mcp', 'trl', 'peft', 'datasets') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
