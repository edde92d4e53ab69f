"""The ``memory-agent`` command line: one entry point, subcommands.

This package is the composition root: it is the only place allowed to import
``eval`` and ``training`` next to the library, and nothing imports it. Each
command group lives in its own module and is imported lazily, so
``memory-agent --help`` stays fast and a missing optional extra cannot break
unrelated commands; a command that needs one says which (:mod:`memory_agent.cli.manners`).
"""

from __future__ import annotations

import importlib
import sys

import click

from memory_agent.errors import MemoryAgentError

__all__ = ["main", "cli"]

# command name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "setup": "memory_agent.cli.memory_cmds:setup",
    "demo": "memory_agent.cli.memory_cmds:demo",
    "add": "memory_agent.cli.memory_cmds:add",
    "ask": "memory_agent.cli.memory_cmds:ask",
    "search": "memory_agent.cli.memory_cmds:search",
    "history": "memory_agent.cli.memory_cmds:history",
    "chat": "memory_agent.cli.memory_cmds:chat",
    "info": "memory_agent.cli.memory_cmds:info",
    "migrate": "memory_agent.cli.store_cmds:migrate",
    "bench": "memory_agent.cli.bench_cmds:bench",
    "eval": "memory_agent.cli.eval_cmds:eval_group",
    "train": "memory_agent.cli.train_cmds:train",
    "rlm": "memory_agent.cli.rlm_cmds:rlm",
    "serve": "memory_agent.cli.serve_cmds:serve",
    "keys": "memory_agent.cli.serve_cmds:keys",
    "mcp": "memory_agent.cli.serve_cmds:mcp",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used."""

    commands_map: dict[str, str] = COMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands_map)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = self.commands_map.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="memory-agent")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show the libraries' own output: model-loading progress bars and their warnings.")
def cli(verbose: bool) -> None:
    """Long-lived memory for LLM assistants (Memory-R1 style)."""
    if not verbose:
        from memory_agent.cli.manners import quiet_libraries

        quiet_libraries()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: project errors become one line and exit code 1."""
    try:
        code = cli.main(args=argv, prog_name="memory-agent", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MemoryAgentError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except ModuleNotFoundError as exc:  # an optional extra that is not installed: say which
        from memory_agent.cli.manners import command_words, missing_extra_line

        line = missing_extra_line(exc, command_words(cli, sys.argv[1:] if argv is None else argv))
        if line is None:
            raise
        click.echo(f"error: {line}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
