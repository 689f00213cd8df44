"""The `newsindex` command. Thin: it parses arguments, calls flows and queries, prints results, and
turns domain errors into one-line messages. Heavy imports (Prefect, torch) happen inside the
commands that need them, so `search` and `sql` start fast.

One module per group of commands, each adding its commands to the `cli` group of app.py; a new
command goes in the module of its group (a new group: a new module, imported below)."""

from newsindex.cli.app import cli, main
from newsindex.cli import ingest, search, server, sql, web  # noqa: F401  (they register their commands)

__all__ = ["cli", "main"]
