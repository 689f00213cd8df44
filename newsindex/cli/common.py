"""What every command shares: the one-line error, turning domain errors into it, Ctrl-C, and the
options several commands take."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps

import click


class CLIError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.message}", err=True)


# Ctrl-C: 128 + SIGINT, as shells report it.
INTERRUPTED = 130


def domain_errors(func: Callable) -> Callable:
    """Known failures (bad warehouse, locked file, wrong model, bad SQL) become `Error: ...`."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        from newsindex.errors import NewsindexError

        try:
            return func(*args, **kwargs)
        except NewsindexError as err:
            # DuckDB's errors were turned into these where they arose (warehouse/connection.py).
            raise CLIError(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise CLIError("interrupted", INTERRUPTED) from None

    return wrapper


# True in the `newsindex` program itself (main), not when the CLI is called in-process.
_standalone = False
# Set by a read-only command once its output is written (search): main() then ends the process
# without the interpreter's teardown of ONNX Runtime, DuckDB and the vector file's memory map,
# 0.1-0.15 s of a one-second cold search. Nothing is left to flush or close by then.
exit_fast = False


def _exit_on_ctrl_c() -> None:
    """For commands that only read: Ctrl-C says so and leaves at once, also in the middle of a
    query. Nothing is written back (the file is open read-only, the OS drops the lock), and DuckDB
    1.5 can hang closing a connection whose multi-threaded query was interrupted."""
    if not _standalone:
        return  # invoked in-process (tests, notebooks): leave the host's Ctrl-C alone
    import signal

    def leave(signum, frame):
        try:
            sys.stdout.flush()
        except OSError:
            pass
        os.write(2, b"Error: interrupted\n")
        os._exit(INTERRUPTED)

    signal.signal(signal.SIGINT, leave)


db_option = click.option(
    "--db", "db", type=click.Path(dir_okay=False), default=None,
    help="Warehouse file (default: $NEWSINDEX_DB or warehouse/newsindex.duckdb).",
)  # fmt: skip

# `ingest` and `schedule`: whether each run keeps warehouse/vector_file.py's copy.
vector_file_option = click.option(
    "--vector-file/--no-vector-file", default=True, show_default=True,
    help="Keep a copy of the vectors beside the warehouse (<db>.vectors/) that one-shot searches read: about 1 s faster "
         "at 1M chunks, for 1.5 GB of disk there; each run appends its changed articles' rows.",
)  # fmt: skip


def _not_nan(ctx, param, value):
    # FloatRange lets NaN through (every comparison with it is false).
    if value is not None and value != value:
        raise click.BadParameter("must be a number of seconds, not nan")
    return value


output_options = [
    click.option("--json", "as_json", is_flag=True, help="One JSON object per line."),
    click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row."),
]


def with_output(func: Callable) -> Callable:
    @wraps(func)
    def one_format(*args, **kwargs):
        if kwargs.get("as_json") and kwargs.get("as_csv"):
            raise CLIError("--json and --csv cannot be used together; choose one")
        return func(*args, **kwargs)

    for option in reversed(output_options):
        one_format = option(one_format)
    return one_format



def _bounded(low: int, high: int) -> Callable:
    """An option callback: a value outside [low, high] is refused with one line."""

    def check(ctx, param, value):
        if value is not None and not low <= value <= high:
            raise CLIError(f"{param.opts[0]} must be between {low:,} and {high:,}, got {value:,}", exit_code=2)
        return value

    return check
