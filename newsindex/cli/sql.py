"""Commands that run SQL on the warehouse: sql (read-only, any statement), queries (the named
ones) and query (one of them, with bound parameters)."""

from __future__ import annotations

import json

import click

from newsindex import config
from newsindex.cli.app import cli
from newsindex.cli.common import CLIError, _bounded, _exit_on_ctrl_c, db_option, domain_errors, with_output
from newsindex.cli.output import _run_and_print

MAX_ROWS = 1_000_000

max_rows_option = click.option(
    "--max-rows", default=200, show_default=True, callback=_bounded(1, MAX_ROWS),
    help=f"Rows shown as a table (at most {MAX_ROWS:,}); --json/--csv stream all.",
)  # fmt: skip
timeout_option = click.option(
    "--timeout", default=None, metavar="SECONDS",  # a str: the library's check gives the one-line error
    help="Time limit for the whole run, fetching included (default $NEWSINDEX_SQL_TIMEOUT or 60; 0: none).",
)  # fmt: skip
memory_option = click.option(
    "--memory-limit", default=None, metavar="SIZE",
    help="DuckDB memory for the query, e.g. 500MB, 8GB; no spilling to disk (default $NEWSINDEX_SQL_MEMORY or a quarter of RAM, at most 4 GB).",
)  # fmt: skip


def sql_run_options(func):
    """What every command that runs SQL takes: its limits, the warehouse and the output format."""
    for option in reversed((max_rows_option, timeout_option, memory_option, db_option, with_output, domain_errors)):
        func = option(func)
    return func


@cli.command()
@click.argument("statement", required=False)
@click.option("-f", "--file", "sql_file", type=click.File("r"), help="Read the SQL from a file ('-' for stdin).")
@sql_run_options
def sql(statement, sql_file, max_rows, timeout, memory_limit, db, as_json, as_csv) -> None:
    """Run read-only SQL against the warehouse. `embed('text')` gives a query vector:

    \b
    newsindex sql "SELECT title, array_cosine_similarity(embedding, embed('who warned Russia')) AS s
                   FROM chunks JOIN documents USING (doc_id) ORDER BY s DESC LIMIT 5"
    """
    from newsindex.queries.readonly import run_readonly

    _exit_on_ctrl_c()

    if bool(statement) == bool(sql_file):
        raise CLIError("give SQL as an argument or with -f FILE (one of the two)")
    try:
        text = sql_file.read() if sql_file else statement
    except UnicodeDecodeError as err:
        raise CLIError(f"{sql_file.name}: not UTF-8 text (byte 0x{err.object[err.start]:02x})") from None
    path = config.db_path(db)
    _run_and_print(lambda emit: run_readonly(path, text, emit, timeout=timeout, memory_limit=memory_limit), as_json, as_csv, max_rows)


@cli.command("queries")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@click.option("--all", "show_all", is_flag=True, help="Also the internal helpers that search code runs for itself.")
def list_queries(as_json: bool, show_all: bool) -> None:
    """List the named queries and their parameters."""
    from newsindex.queries.named import FILLED_IN, all_queries

    queries = [q for q in all_queries().values() if show_all or not q.internal]
    if as_json:
        click.echo(json.dumps([
            {"name": q.name, "description": q.description, "file": q.file, "internal": q.internal,
             "params": [{"name": p.name, "type": p.type, "required": p.required, "default": p.default, "help": p.help} for p in q.params]}
            for q in queries], indent=2, default=str))  # fmt: skip
        return
    from rich.console import Console

    console = Console(highlight=False)
    for q in queries:
        console.print(f"[bold]{q.name}[/]  {q.description}")
        for p in q.params:
            if p.name in FILLED_IN and not show_all:
                continue
            default = "required" if p.required else f"default {p.default if p.default is not None else 'none'}"
            console.print(f"    --param {p.name}=<{p.type}>  {p.help} ({default})")


@cli.command("query")
@click.argument("name")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter; repeat for more.")
@sql_run_options
def run_query(name, params, max_rows, timeout, memory_limit, db, as_json, as_csv) -> None:
    """Run the named query NAME with bound parameters (see `newsindex queries`)."""
    from newsindex.queries import named
    from newsindex.queries.readonly import run_named

    _exit_on_ctrl_c()

    values = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--param takes KEY=VALUE, got {item!r}")
        values[key.strip()] = value
    query = named.get(name)
    path, bound = config.db_path(db), query.bind(values)
    _run_and_print(lambda emit: run_named(path, query, bound, emit, timeout=timeout, memory_limit=memory_limit), as_json, as_csv, max_rows)
