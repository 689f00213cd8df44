"""The `newsindex` command. Thin: it parses arguments, calls flows and queries, prints results, and
turns domain errors into one-line messages. Heavy imports (Prefect, torch) happen inside the
commands that need them, so `search` and `sql` start fast."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps

import click

from newsindex import config


class CLIError(click.ClickException):
    def show(self, file=None) -> None:
        click.echo(f"Error: {self.message}", err=True)


def domain_errors(func: Callable) -> Callable:
    """Known failures (bad warehouse, locked file, wrong model, bad SQL) become `Error: ...`."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        from newsindex.embedding import ModelError
        from newsindex.warehouse.store import WarehouseError

        try:
            return func(*args, **kwargs)
        except (WarehouseError, ModelError) as err:
            raise CLIError(str(err)) from None

    return wrapper


db_option = click.option(
    "--db", "db", type=click.Path(dir_okay=False), default=None,
    help="Warehouse file (default: $NEWSINDEX_DB or warehouse/newsindex.duckdb).",
)  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="newsindex")
def cli() -> None:
    """Turn a folder of news articles into a searchable DuckDB index."""


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@db_option
@click.option("--prune", is_flag=True, help="Remove documents whose source file under PATHS no longer exists.")
@click.option("--max-tokens", default=config.ChunkSettings.max_tokens, show_default=True, help="Token budget per chunk.")
@click.option("--overlap", default=config.ChunkSettings.overlap_sentences, show_default=True, help="Sentences repeated between chunks.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect's log lines.")
@domain_errors
def ingest(paths: Sequence[str], db: str | None, prune: bool, max_tokens: int, overlap: int, as_json: bool, verbose: bool) -> None:
    """Chunk, embed and store the articles under PATHS (default: seeds/)."""
    config.offline_env()
    # Prefect reads its settings at import; the summary below replaces its console lines.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "CRITICAL")
    from newsindex.flows import ingest as ingest_flow

    run_paths = list(paths) or [str(config.DEFAULT_SEEDS)]
    db_file = str(config.db_path(db))
    with _progress(enabled=not as_json and sys.stderr.isatty()) as report:
        ingest_flow.on_progress = report
        try:
            summary = ingest_flow.ingest(
                paths=run_paths, db=db_file, prune=prune, max_tokens=max_tokens, overlap_sentences=overlap
            )
        finally:
            ingest_flow.on_progress = None
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    if summary["failed"]:
        sys.exit(1)


class _progress:
    """A progress bar over characters to embed, shown only on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.task = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("embedding"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("embed", total=None)
        return self.update

    def update(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=max(total, 1))

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"ingest run {summary['run_id']} · {summary['status']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key in ("seen", "added", "updated", "unchanged", "failed", "removed"):
        table.add_row(key, str(summary[key]))
    table.add_row("chunks embedded", str(summary["chunks_embedded"]))
    tokens, seconds = summary["tokens_embedded"], summary["embed_seconds"]
    rate = f" ({tokens / seconds:,.0f} tokens/s)" if seconds > 0 else ""
    table.add_row("tokens embedded", f"{tokens:,}{rate}")
    table.add_row("time", f"{summary['total_seconds']:.1f}s (embed {seconds:.1f}s, write {summary['write_seconds']:.1f}s)")
    table.add_row("warehouse", summary["db"])
    console.print(table)
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning[/] {warning}", highlight=False, soft_wrap=True)
    for failure in summary["failures"]:
        console.print(f"[red]failed[/] {failure}", highlight=False, soft_wrap=True)


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@domain_errors
def stats(db: str | None, as_json: bool) -> None:
    """What the warehouse holds: documents, chunks, models and the last runs."""
    from newsindex.warehouse import store

    with store.opened(config.db_path(db), read_only=True) as con:
        info = store.stats(con)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    from rich.console import Console

    console = Console()
    dates = f"{info['first_published']} … {info['last_published']}" if info["first_published"] else "no dates"
    console.print(f"[bold]{info['documents']}[/] documents ({dates}), [bold]{info['chunks']}[/] chunks, {info['tokens']:,} tokens")
    for model in info["models"]:
        console.print(f"model {model['name']} ({model['dim']}-dim, weights {model['fingerprint']}): {model['chunks']} chunks")
    if info["runs"]:
        columns = ["started_at", "status", "seen", "added", "updated", "unchanged", "failed", "removed", "seconds"]
        headers = ["started", "status", "seen", "new", "upd", "same", "fail", "rm", "secs"]
        console.print(_table(headers, [[r[c] for c in columns] for r in info["runs"]], title="last runs"))


def _table(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(str(column), overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def main() -> None:
    cli(prog_name="newsindex")


if __name__ == "__main__":
    main()
