"""The `newsindex` group and the program's entry point: one-line errors, Ctrl-C and a closed pipe
handled the same way for every command."""

from __future__ import annotations

import os
import sys

import click

from newsindex.cli import common
from newsindex.cli.common import INTERRUPTED


class _Group(click.Group):
    def invoke(self, ctx):
        # Click turns a closed pipe into exit 1 before main() could see it.
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_broken_pipe()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="newsindex")
def cli() -> None:
    """Turn a folder of news articles into a searchable DuckDB index."""


def main() -> None:
    common._standalone = True
    import rich.console

    # rich exits 1 on a closed pipe; make it the same closed pipe as everywhere else.
    rich.console.Console.on_broken_pipe = _raise_broken_pipe
    try:
        code = cli.main(prog_name="newsindex", standalone_mode=False)
    except click.UsageError as err:
        # One line, as every other error: Click's default adds the usage and a "Try --help" line.
        click.echo(f"Error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.Abort:
        click.echo("Error: interrupted", err=True)
        sys.exit(INTERRUPTED)
    except BrokenPipeError:
        _quiet_broken_pipe()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    if common.exit_fast and not (isinstance(code, int) and code):
        sys.stderr.flush()
        os._exit(0)
    if isinstance(code, int) and code:  # --help/--version and ctx.exit(n) return their status here
        sys.exit(code)


def _raise_broken_pipe(console) -> None:
    raise BrokenPipeError


def _quiet_broken_pipe() -> None:
    """The reader of our output went away (`| head -1`): that is its choice, not a failure, so exit
    0 as standard tools do. stdout is pointed at /dev/null so the interpreter's final flush of the
    buffered rest cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)
