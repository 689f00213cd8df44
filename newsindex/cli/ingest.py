"""Commands that fill the warehouse, remove from it and say what it holds: ingest, delete, stats."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import click

from newsindex import config
from newsindex.cli.app import cli
from newsindex.cli.common import CLIError, _not_nan, db_option, domain_errors, vector_file_option
from newsindex.cli.output import _cell, _printable, _table


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@db_option
@click.option("--prune", is_flag=True, help="Remove documents whose source file under PATHS no longer exists.")
@click.option("--allow-mass-prune", is_flag=True,
              help="With --prune: also prune a folder where no files were found, or that loses more than half of its documents.")
@click.option("--max-tokens", default=config.ChunkSettings.max_tokens, show_default=True, type=click.IntRange(min=1),
              help="Token budget per chunk (the model's limit caps it).")
@click.option("--overlap", default=config.ChunkSettings.overlap_sentences, show_default=True, type=click.IntRange(min=0),
              help="Sentences repeated between chunks.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--wait", default=600.0, show_default=True, type=click.FloatRange(min=0), callback=_not_nan,
              help="Seconds to wait for another ingestion of this warehouse to finish.")
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect's log lines.")
@click.option("--workers", type=int, default=0, help="Encode on a local Dask cluster of N worker processes.")
@click.option("--dask-address", metavar="tcp://HOST:PORT", help="Encode on the workers of this running Dask scheduler.")
@click.option("--precision", type=click.Choice(["exact", "int8"]), default="exact", show_default=True,
              help="int8: quantised encoder, faster but less accurate; its vectors are kept apart from exact ones.")
@vector_file_option
@domain_errors
def ingest(
    paths: Sequence[str], db: str | None, prune: bool, allow_mass_prune: bool, max_tokens: int, overlap: int, as_json: bool,
    wait: float, verbose: bool, workers: int, dask_address: str | None, precision: str, vector_file: bool,
) -> None:
    """Chunk, embed and store the articles under PATHS (default: seeds/).

    Uses the Prefect server from $PREFECT_API_URL or `newsindex server start` when one answers
    (the run shows in its UI); otherwise Prefect starts a temporary one for this run."""
    config.offline_env()
    # Environment variables, not settings: Prefect sets up its logging once, when first imported
    # (below), and reads the console level from the environment only (no setting holds it). The
    # summary below replaces its console lines.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "CRITICAL")
    os.environ.setdefault(*config.PREFECT_EXTRA_LOGGERS)
    prefect_api = _choose_prefect_api(verbose)
    from newsindex.flows import ingest as ingest_flow

    if workers or dask_address:
        # Before Prefect starts: a bad address is one line, at once.
        ingest_flow.Cluster(workers, dask_address).check()
    _show_warehouse_waits()
    run_paths = list(paths) or [str(config.DEFAULT_SEEDS)]
    db_file = str(config.db_path(db))
    with prefect_api, _progress(enabled=not as_json and sys.stderr.isatty()) as report:
        summary = ingest_flow.run_ingest(
            paths=run_paths, db=db_file, prune=prune, max_tokens=max_tokens, overlap_sentences=overlap, wait=wait,
            allow_mass_prune=allow_mass_prune,
            workers=workers, dask_address=dask_address,
            precision=precision, vector_file=vector_file, on_progress=report,
        )
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    if summary["failed"]:
        sys.exit(1)


def _choose_prefect_api(verbose: bool) -> AbstractContextManager:
    """Prefect settings that point the run at a live server, or at none (Prefect then starts a
    temporary one); the run and the Dask workers it starts read them."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from newsindex.flows import server

    configured = os.environ.get("PREFECT_API_URL")
    chosen = server.api_url_for_run()
    if chosen:
        if verbose:
            click.echo(f"Prefect server: {chosen}", err=True)
        return temporary_settings(updates={PREFECT_API_URL: chosen})
    if configured:
        click.echo(f"warning: no Prefect server answers at {configured}; using a temporary one for this run", err=True)
        return temporary_settings(restore_defaults={PREFECT_API_URL})
    return nullcontext()


def _show_warehouse_waits() -> None:
    """Say on stderr when ingestion waits for the warehouse: another process holding the file, or
    another ingestion running."""
    import logging

    logger = logging.getLogger("newsindex.warehouse")
    # Prefect has attached its own handlers by now (PREFECT_LOGGING_EXTRA_LOGGERS); add ours once.
    if not any(getattr(h, "newsindex_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.newsindex_cli = True
        handler.setFormatter(logging.Formatter("newsindex: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _progress:
    """What an ingest is doing, shown only on a terminal: starting Prefect, reading files (n of N),
    embedding (a bar over characters, with chunks stored), then updating the keyword index."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.task = None

    def __enter__(self) -> Callable[..., None] | None:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(), transient=True,
        )  # fmt: skip
        self.bar.start()
        # Prefect's start (a temporary server, the flow run) takes seconds before the first report.
        self.task = self.bar.add_task("starting Prefect", total=None, counts="")
        return self.update

    def update(self, phase: str, done: int, total: int, chunks: int = 0) -> None:
        if phase == "reading":
            self.bar.update(self.task, description="reading files", completed=done, total=max(total, 1),
                            counts=f"{done:,}/{total:,} files")  # fmt: skip
        elif phase == "embedding":
            percent = 100 * done / total if total else 100
            self.bar.update(self.task, description="embedding", completed=done, total=max(total, 1),
                            counts=f"{percent:3.0f}% · {chunks:,} chunks stored")  # fmt: skip
        else:
            self.bar.update(self.task, description="updating the keyword index", total=None, counts="")

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
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
    table.add_row("encoder", f"{summary['model']} · {summary['runtime']}")
    table.add_row("time", f"{summary['total_seconds']:.1f}s (embed {seconds:.1f}s, write {summary['write_seconds']:.1f}s)")
    table.add_row("warehouse", summary["db"])
    if summary.get("cluster"):
        table.add_row("encoded on", f"{summary['cluster']['cluster']} ({len(summary['cluster']['workers'])} took part)")
    console.print(table)
    if summary.get("flow_run_url"):
        console.print(f"Prefect flow run {summary['flow_run_id']}: {summary['flow_run_url']}", highlight=False, soft_wrap=True)
    # Escaped: a file called "[red].txt" or a JSON error quoting brackets is text, not markup.
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning[/] {escape(warning)}", highlight=False, soft_wrap=True)
    for failure in summary["failures"]:
        console.print(f"[red]failed[/] {escape(failure)}", highlight=False, soft_wrap=True)
    pruned = summary.get("pruned", [])
    for where, doc_id in pruned[:PRUNED_SHOWN]:
        console.print(f"removed {escape(where)} ({escape(doc_id)})", highlight=False, soft_wrap=True)
    if summary["removed"] > min(len(pruned), PRUNED_SHOWN):
        console.print(f"removed … and {summary['removed'] - PRUNED_SHOWN} more (--json lists the first {len(pruned)})",
                      highlight=False, soft_wrap=True)


# Removed documents named one a line after the summary table; the rest are counted.
PRUNED_SHOWN = 20


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@domain_errors
def stats(db: str | None, as_json: bool) -> None:
    """What the warehouse holds: documents, chunks, models and the last runs."""
    from newsindex.warehouse import connection, runs

    path = config.db_path(db)
    with connection.opened(path, read_only=True) as con:
        info = runs.stats(con)
    info = {"warehouse": str(path), **info}
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    from rich.console import Console

    from rich.markup import escape

    console = Console()
    console.print(f"warehouse {escape(str(path))}", highlight=False, soft_wrap=True)
    dates = f"{info['first_published']} … {info['last_published']}" if info["first_published"] else "no dates"
    console.print(f"[bold]{info['documents']}[/] documents ({dates}), [bold]{info['chunks']}[/] chunks, {info['tokens']:,} tokens")
    for model in info["models"]:
        console.print(f"model {model['name']} ({model['dim']}-dim, weights {model['fingerprint']}): {model['chunks']} chunks")
    if info["runs"]:
        columns = ["started_at", "status", "seen", "added", "updated", "unchanged", "failed", "removed", "seconds"]
        headers = ["started", "status", "seen", "new", "upd", "same", "fail", "rm", "secs"]
        console.print(_table(headers, [[_cell(r[c]) if c != "seconds" else f"{r[c] or 0:.1f}" for c in columns] for r in info["runs"]], title="last runs"))


@cli.command()
@click.argument("doc_ids", nargs=-1, required=True)
@db_option
@click.option("--wait", default=600.0, show_default=True, type=click.FloatRange(min=0), callback=_not_nan,
              help="Seconds to wait for an ingestion of this warehouse to finish.")
@click.option("--json", "as_json", is_flag=True, help="Print what was deleted as JSON.")
@domain_errors
def delete(doc_ids: Sequence[str], db: str | None, wait: float, as_json: bool) -> None:
    """Remove the documents DOC_IDS, with their chunks, from the warehouse and its keyword index, in
    one transaction. Their files are not touched: the next ingest of them stores them again."""
    from newsindex.warehouse import connection, documents, vector_file

    path = config.db_path(db)
    if not path.exists():
        raise CLIError(f"{path}: no warehouse here yet; run `newsindex ingest` first")
    _show_warehouse_waits()
    with connection.ingest_lock(path, wait):
        with connection.opened(path) as con:
            removed = documents.delete_documents(con, list(doc_ids), path)
        if removed and vector_file.folder(path).exists():
            # As an ingest would: the copy cold searches read marks these rows dead (a cache: a
            # failure leaves it stale, and searches scan the warehouse until the next ingest).
            try:
                vector_file.write(path)
            except (OSError, ValueError, connection.WarehouseError) as err:
                click.echo(f"warning: vector file not updated: {err}", err=True)
    if as_json:
        click.echo(json.dumps({"deleted": [{"doc_id": d, "source": w} for d, w in removed]}, indent=2))
        return
    for doc_id, where in removed:
        click.echo(f"deleted {_printable(doc_id)} ({_printable(where)})")
    click.echo(f"{len(removed)} document{'s' if len(removed) != 1 else ''} deleted from {path}")
