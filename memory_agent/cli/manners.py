"""How the command line behaves around other people's code: missing extras and library output.

* A command that needs an optional extra (``train``, ``eval``, ``serve``, ``postgres``) that is not
  installed fails with one line naming the extra: :func:`missing_extra_line`, called once, by
  :func:`memory_agent.cli.main`, for any ``ModuleNotFoundError`` that escapes a command.
* The libraries' own progress bars and log messages (transformers' "Loading weights" bar,
  huggingface_hub's download bars, their log messages and Python warnings) are switched off unless ``memory-agent --verbose``:
  :func:`quiet_libraries`, called by the top-level group. The project's own progress bars (rich, tqdm
  in ``eval``/``train``) are untouched. This is done through the libraries' environment variables, so
  nothing is imported for it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence

import click

__all__ = ["EXTRA_MODULES", "missing_extra_line", "command_words", "quiet_libraries"]

# top-level module -> the extras of pyproject.toml that install it (the first is the default answer;
# another is named when it is also a word of the failing command, e.g. nltk under `memory-agent train`).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "trl": ("train",),
    "datasets": ("train",),
    "accelerate": ("train",),
    "nltk": ("eval", "train"),
    "matplotlib": ("eval", "train"),
    "fastapi": ("serve",),
    "starlette": ("serve",),
    "uvicorn": ("serve",),
    "mcp": ("serve",),
    "psycopg": ("postgres",),
    "psycopg_pool": ("postgres",),
    "pgvector": ("postgres",),
}

# Environment variables the libraries read when they are imported; set (unless already set) for a quiet CLI.
_QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub's bars, and transformers' ("Loading weights")
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
_QUIET_LOGGERS = ("sentence_transformers", "huggingface_hub", "datasets", "accelerate", "peft")
# Python warnings raised from inside these packages (deprecations of one library used by another).
_QUIET_WARNINGS = r"(torch|transformers|sentence_transformers|huggingface_hub|peft|accelerate|datasets|trl)(\.|$)"


def command_words(group: click.Group, argv: Sequence[str]) -> list[str]:
    """The (sub)command names at the start of ``argv``: ``["bench", "train-step"]``, ``["search"]``."""
    words: list[str] = []
    command: click.Command | None = group
    ctx = click.Context(group)
    for token in argv:
        if token.startswith("-"):
            if words:
                break
            continue  # a global option (--verbose) before the command
        if not isinstance(command, click.Group) or token not in command.list_commands(ctx):
            break
        words.append(token)
        try:
            command = command.get_command(ctx, token)
        except ImportError:  # the command's own module cannot be imported: its name is enough
            break
    return words


def missing_extra_line(exc: BaseException, words: Sequence[str]) -> str | None:
    """``memory-agent train needs the train extra: pip install 'memory-agent[train]'``, or None when
    ``exc`` is not a module of a known extra that is missing."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    extras = EXTRA_MODULES.get(exc.name.split(".")[0])
    if not extras:
        return None
    extra = next((e for e in extras if e in words), extras[0])
    what = " ".join(["memory-agent", *words])
    return f"{what} needs the {extra} extra ({exc.name} is not installed): pip install 'memory-agent[{extra}]'"


def quiet_libraries() -> None:
    """Switch off the libraries' progress bars and warnings for this process (and its children)."""
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=_QUIET_WARNINGS)
    # Already imported (a caller running the CLI in-process): their import-time settings are past.
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":
        if "huggingface_hub" in sys.modules:
            sys.modules["huggingface_hub"].utils.disable_progress_bars()
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "transformers" in sys.modules and os.environ.get("TRANSFORMERS_VERBOSITY") == "error":
        sys.modules["transformers"].utils.logging.set_verbosity_error()
