"""The `newsindex` command. Thin: it parses arguments, calls flows and queries, prints results, and
turns domain errors into one-line messages. Heavy imports (Prefect, torch) happen inside the
commands that need them, so `search` and `sql` start fast."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from functools import wraps

import click

from newsindex import config
from newsindex.queries.modes import DEFAULT as DEFAULT_MODE, MODES as SEARCH_MODES


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


def _not_nan(ctx, param, value):
    # FloatRange lets NaN through (every comparison with it is false).
    if value is not None and value != value:
        raise click.BadParameter("must be a number of seconds, not nan")
    return value


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
@domain_errors
def ingest(
    paths: Sequence[str], db: str | None, prune: bool, allow_mass_prune: bool, max_tokens: int, overlap: int, as_json: bool,
    wait: float, verbose: bool, workers: int, dask_address: str | None, precision: str,
) -> None:
    """Chunk, embed and store the articles under PATHS (default: seeds/).

    Uses the Prefect server from $PREFECT_API_URL or `newsindex server start` when one answers
    (the run shows in its UI); otherwise Prefect starts a temporary one for this run."""
    config.offline_env()
    _choose_prefect_api(verbose)
    # Prefect reads its settings at import; the summary below replaces its console lines.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "CRITICAL")
    from newsindex.flows import ingest as ingest_flow

    if workers or dask_address:
        # Before Prefect starts: a bad address is one line, at once.
        ingest_flow.Cluster(workers, dask_address).check()
    _show_warehouse_waits()
    run_paths = list(paths) or [str(config.DEFAULT_SEEDS)]
    db_file = str(config.db_path(db))
    with _progress(enabled=not as_json and sys.stderr.isatty()) as report:
        ingest_flow.on_progress = report
        try:
            summary = ingest_flow.ingest(
                paths=run_paths, db=db_file, prune=prune, max_tokens=max_tokens, overlap_sentences=overlap, wait=wait,
                allow_mass_prune=allow_mass_prune,
                workers=workers, dask_address=dask_address,
                precision=precision,
            )
        finally:
            ingest_flow.on_progress = None
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    if summary["failed"]:
        sys.exit(1)


def _choose_prefect_api(verbose: bool) -> None:
    """Point Prefect at a live server before it is imported, or at none (a temporary one)."""
    from newsindex.flows import server

    os.environ.setdefault(*config.PREFECT_EXTRA_LOGGERS)
    configured = os.environ.get("PREFECT_API_URL")
    chosen = server.api_url_for_run()
    if chosen:
        os.environ["PREFECT_API_URL"] = chosen
        if verbose:
            click.echo(f"Prefect server: {chosen}", err=True)
    elif configured:
        os.environ.pop("PREFECT_API_URL")
        click.echo(f"warning: no Prefect server answers at {configured}; using a temporary one for this run", err=True)


@cli.group()
def server() -> None:
    """A local Prefect server (SQLite, 127.0.0.1) for scheduled runs and the UI."""


@server.command("start")
@click.option("--port", default=4200, show_default=True, help="Port for the API and the UI.")
@domain_errors
def server_start(port: int) -> None:
    """Start the server in the background and wait until it answers."""
    from newsindex.flows import server as prefect_server

    state = prefect_server.start(port=port)
    click.echo(f"Prefect server running (pid {state.pid}); UI at {state.ui_url}")
    click.echo(f"newsindex ingest and schedule use it; for other Prefect tools: export PREFECT_API_URL={state.api_url}")


@server.command("stop")
@domain_errors
def server_stop() -> None:
    """Stop the server that `newsindex server start` started."""
    from newsindex.flows import server as prefect_server

    state = prefect_server.stop()
    click.echo(f"stopped the Prefect server (pid {state.pid})" if state else "no newsindex Prefect server is running")


@server.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def server_status(as_json: bool) -> None:
    """Whether the server runs and answers; exit 1 when it does not."""
    from newsindex.flows import server as prefect_server

    state = prefect_server.recorded()
    healthy = bool(state) and prefect_server.healthy(state.api_url)
    if as_json:
        click.echo(json.dumps({"running": bool(state), "healthy": healthy, "pid": state and state.pid,
                               "api_url": state and state.api_url, "ui_url": state and state.ui_url, "log": state and state.log}))  # fmt: skip
    elif not state:
        click.echo(f"not running (start it with `newsindex server start`; home {config.prefect_home()})")
    else:
        click.echo(f"{'running' if healthy else 'not answering'}: pid {state.pid}, UI at {state.ui_url}, log {state.log}")
    sys.exit(0 if healthy else 1)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--cron", help="Cron expression, e.g. '*/10 * * * *'.")
@click.option("--every", help="Interval, e.g. 90s, 5m, 1h30m.")
@click.option("--prune", is_flag=True, help="Also remove documents whose file under PATHS is gone.")
@click.option("--name", help="Deployment name (default: from the folder names).")
@click.option("--allow-mass-prune", is_flag=True, help="With --prune: let a run empty a folder or remove more than half of it.")
@click.option("--workers", type=click.IntRange(0, 512), default=0, help="Encode each run on a local Dask cluster of N worker processes.")
@click.option("--dask-address", metavar="tcp://HOST:PORT", help="Encode each run on the workers of this running Dask scheduler.")
@db_option
@domain_errors
def schedule(
    paths: Sequence[str], cron: str | None, every: str | None, prune: bool, name: str | None,
    allow_mass_prune: bool, workers: int, dask_address: str | None, db: str | None,
) -> None:
    """Ingest PATHS (default: seeds/) on a schedule, served until Ctrl-C or SIGTERM (which pause it).

    One process serves a deployment: a second `schedule` of the same --name is refused.
    Needs a Prefect server: `newsindex server start`, or $PREFECT_API_URL."""
    config.offline_env()
    from newsindex.flows import schedule as scheduling

    extra = {}
    if allow_mass_prune:
        extra["allow_mass_prune"] = True
    if workers or dask_address:
        from newsindex.flows.ingest import Cluster

        Cluster(workers, dask_address).check()
        extra.update(workers=workers, dask_address=dask_address)
    chosen = scheduling.plan(list(paths), db, prune, cron, every, name, extra)
    when = f"cron {chosen.cron}" if chosen.cron else f"every {every}"
    ui = chosen.api_url.removesuffix("/api")
    with scheduling.serving_lock(chosen):
        click.echo(f"serving deployment ingest/{chosen.name} ({when}) into {chosen.parameters['db']}")
        click.echo(f"runs show at {ui}/runs; Ctrl-C or SIGTERM stops serving and pauses the schedule")
        # Prefect configures its logging once, when first imported, from the environment: no
        # settings context exists yet to carry this.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO")
        scheduling.serve(chosen)
    click.echo(f"stopped; deployment ingest/{chosen.name} is paused")


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
    from newsindex.warehouse import connection, documents

    path = config.db_path(db)
    if not path.exists():
        raise CLIError(f"{path}: no warehouse here yet; run `newsindex ingest` first")
    _show_warehouse_waits()
    with connection.ingest_lock(path, wait):
        with connection.opened(path) as con:
            removed = documents.delete_documents(con, list(doc_ids), path)
    if as_json:
        click.echo(json.dumps({"deleted": [{"doc_id": d, "source": w} for d, w in removed]}, indent=2))
        return
    for doc_id, where in removed:
        click.echo(f"deleted {_printable(doc_id)} ({_printable(where)})")
    click.echo(f"{len(removed)} document{'s' if len(removed) != 1 else ''} deleted from {path}")


# --- search -------------------------------------------------------------------------------------

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


MAX_K = 10_000
MAX_ROWS = 1_000_000


def _bounded(low: int, high: int) -> Callable:
    """An option callback: a value outside [low, high] is refused with one line."""

    def check(ctx, param, value):
        if value is not None and not low <= value <= high:
            raise CLIError(f"{param.opts[0]} must be between {low:,} and {high:,}, got {value:,}", exit_code=2)
        return value

    return check


k_bounds = _bounded(1, MAX_K)


def _date(ctx, param, value):
    if value is None:
        return None
    import datetime as dt

    import re

    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise click.BadParameter(f"malformed date {value!r}; expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"impossible date {value!r}") from None


def _date_range(since, until) -> None:
    if since and until and since > until:
        raise CLIError(f"--since {since.isoformat()} is after --until {until.isoformat()}; no article can match")


@cli.command()
@click.argument("query")
@click.option("-k", default=10, show_default=True, callback=k_bounds, help=f"How many results (at most {MAX_K:,}).")
@click.option("--mode", type=click.Choice(list(SEARCH_MODES)), default=DEFAULT_MODE, show_default=True,
              help="; ".join(f"{m.name}: {m.help}" for m in SEARCH_MODES.values()))
@click.option("--since", callback=_date, help="Only articles published on or after this date.")
@click.option("--until", callback=_date, help="Only articles published on or before this date.")
@click.option("--source", help="Glob on the source path, e.g. 'seeds/*.txt'.")
@click.option("--doc", help="Only this document id.")
@click.option("--per-doc", is_flag=True, help="One result per article: its best passage (hybrid always ranks articles).")
@click.option("--ann", is_flag=True, help="Semantic mode: approximate index (built beside the warehouse on first use) instead of the exact scan.")
@db_option
@with_output
@domain_errors
def search(query, k, mode, since, until, source, doc, per_doc, ann, db, as_json, as_csv) -> None:
    """Find passages that answer QUERY: semantic, keyword (BM25) or hybrid (both, fused)."""
    from newsindex.queries.search import Filters, Hit, search as run_search

    _exit_on_ctrl_c()
    _date_range(since, until)

    result = run_search(
        config.db_path(db), query, k=k, mode=mode, per_doc=per_doc, ann=ann,
        filters=Filters(since=since, until=until, source=source, doc=doc),
    )  # fmt: skip
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if as_json or as_csv:
        _emit_records(list(Hit.__dataclass_fields__), [hit.as_json() for hit in result.hits], as_json, as_csv)
        return
    _print_hits(result)


def _print_hits(result) -> None:
    from rich.console import Console
    from rich.padding import Padding
    from rich.text import Text

    console = Console(highlight=False)
    if not result.hits:
        console.print(f"No results for {result.query!r} ({result.mode}).")
        return
    fused = SEARCH_MODES[result.mode].side is None
    for hit in result.hits:
        head = Text.assemble((f"{hit.rank:>2}. ", "bold"), (_printable(hit.title), "bold cyan"), f"  {hit.published or 'no date'}",
                             (f"  score {hit.score:.4f}", "dim"))  # fmt: skip
        console.print(head)
        where = _where(hit.source_path, hit.chunk_id, console.width - 4)
        if fused:
            side = lambda r, s: f"#{r} ({s:.3f})" if r else "–"  # noqa: E731
            ranks = f"semantic {side(hit.semantic_rank, hit.semantic_score)} · keyword {side(hit.keyword_rank, hit.keyword_score)}"
            console.print(Padding(Text(ranks, style="dim"), (0, 0, 0, 4)))
        # Padding, not leading spaces: lines that wrap keep the indent.
        console.print(Padding(Text(where, style="dim", no_wrap=True), (0, 0, 0, 4)))
        shown = _printable(hit.snippet)
        line = Text(shown)
        if shown == hit.snippet:  # offsets hold only while no character was escaped
            for start, end in hit.snippet_highlights:
                line.stylize("bold yellow", start, end)
        console.print(Padding(line, (0, 0, 0, 4)))
    console.print(Text(f"{len(result.hits)} result{'s' if len(result.hits) != 1 else ''} · {result.mode} · {result.seconds * 1000:.0f} ms", style="dim"))


def _where(source_path: str, chunk_id: str, width: int) -> str:
    """Source and chunk on one line of WIDTH: a long path loses its head, not the file name,
    and is never folded (a fold could split an escape such as \\x1b across lines)."""
    tail = f"  ·  {_printable(chunk_id)}"
    path = _printable(_short_path(source_path))
    room = width - len(tail)
    if len(path) > room:
        path = "…" + path[len(path) - room + 1 :] if room > 1 else ""
    return path + tail


def _short_path(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


@cli.command()
@click.argument("doc_id")
@click.option("-k", default=10, show_default=True, callback=k_bounds, help=f"How many documents (at most {MAX_K:,}).")
@db_option
@with_output
@domain_errors
def related(doc_id, k, db, as_json, as_csv) -> None:
    """Documents most similar to DOC_ID (by the mean of their chunk vectors)."""
    from newsindex.queries.search import related as run_related

    _exit_on_ctrl_c()

    rows = run_related(config.db_path(db), doc_id, k)
    _emit_records(["doc_id", "title", "published", "source_path", "score"], rows, as_json, as_csv)


# --- SQL and named queries ----------------------------------------------------------------------

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


@cli.command()
@click.argument("statement", required=False)
@click.option("-f", "--file", "sql_file", type=click.File("r"), help="Read the SQL from a file ('-' for stdin).")
@max_rows_option
@timeout_option
@memory_option
@db_option
@with_output
@domain_errors
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
@max_rows_option
@timeout_option
@memory_option
@db_option
@with_output
@domain_errors
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


# --- serving ------------------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but 127.0.0.1 exposes the warehouse to the network.")
@click.option("--port", default=8750, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages from this origin to call the API (repeat for more); off by default.")
@domain_errors
def serve(db: str | None, host: str, port: int, cors_origins: tuple[str, ...]) -> None:
    """Serve the search page at / and the JSON API at /api (docs at /docs) until Ctrl-C.

    Answers from a private snapshot of the warehouse (vectors in memory) and never keeps the
    file open, so ingests run meanwhile; their changes show within seconds."""
    from newsindex.web.app import serve as run_server

    config.offline_env()

    def ready(path, loaded) -> None:
        click.echo(f"newsindex: {path}: {loaded}", err=True)
        click.echo(f"serving http://{host}:{port}/ (API docs at /docs); Ctrl-C stops", err=True)

    try:
        run_server(db, host=host, port=port, cors_origins=list(cors_origins) or None, on_ready=ready)
    except KeyboardInterrupt:
        pass


# --- evaluation ---------------------------------------------------------------------------------


@cli.command("eval")
@click.argument("queries_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", default=10, show_default=True, help="Cut-off for recall and MRR.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(list(SEARCH_MODES)), help="Modes to compare (default: all).")
@click.option("--split", default="all", show_default=True, help="Only the queries of this split (tune, heldout), or all.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="As JSON (with each query's first relevant rank).")
@domain_errors
def evaluate(queries_file, k, modes, split, db, as_json) -> None:
    """Measure search on labelled queries, per class and mode: lines of {"query": ..., "relevant":
    [doc ids or file names], "class": ..., "split": ..., "since"/"until"/"source": filters}."""
    from newsindex.queries.evaluate import evaluate as run_eval, load_labelled

    _exit_on_ctrl_c()

    report = run_eval(config.db_path(db), load_labelled(queries_file, split), k=k, modes=list(modes) or None)
    report["split"] = split
    for warning in report["warnings"]:
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    columns = ["class", "queries", "mode", "hit@1", "hit@5", f"mrr@{k}", f"recall@{k}"]
    rows = []
    for cls, count in [("all", report["queries"]), *report["classes"].items()]:
        for i, m in enumerate(report["modes"]):
            values = m if cls == "all" else m["classes"][cls]
            rows.append([cls if i == 0 else "", count if i == 0 else "", m["mode"],
                         *(f"{values[key]:.3f}" for key in ("hit@1", "hit@5", "mrr", "recall"))])  # fmt: skip
    from rich.console import Console

    Console().print(_table(columns, rows, title=f"search quality on {queries_file} (split {split})"))


# --- output -------------------------------------------------------------------------------------


def _plain(value):
    import datetime as dt
    import decimal

    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def _emit_records(columns: Sequence[str], rows: Sequence[dict], as_json: bool, as_csv: bool) -> None:
    if as_json or as_csv:
        _emit_stream(list(columns), [[[row.get(c) for c in columns] for row in rows]], as_json, as_csv)
        return
    from rich.console import Console

    Console().print(_table(columns, [[_cell(row.get(c)) for c in columns] for row in rows]))


def _run_and_print(run: Callable, as_json: bool, as_csv: bool, max_rows: int) -> None:
    """JSON lines and CSV stream every row while the query runs (the file stays open until the
    last row is written); a table keeps the first max_rows rows, closes the warehouse, then prints,
    so a slow terminal never holds the file."""
    if as_json or as_csv:
        run(lambda columns, batches: _emit_stream(columns, batches, as_json, as_csv))
        return
    tables: list[tuple[list[str], list[list[str]], bool]] = []
    run(lambda columns, batches: tables.append((columns, *_first_rows(batches, max_rows))))
    from rich.console import Console

    console = Console()
    for columns, shown, truncated in tables:
        console.print(_table(columns, shown))
        note = f"{len(shown)} row{'s' if len(shown) != 1 else ''}"
        if truncated:
            note += f" shown; truncated at --max-rows {max_rows} (use --max-rows, --json or --csv for more)"
        console.print(note, style="dim", highlight=False)


def _first_rows(batches, max_rows: int) -> tuple[list[list[str]], bool]:
    """Up to max_rows rows as table cells, and whether there were more. Stops reading there: the
    rest of an enormous result is never fetched."""
    shown: list[list[str]] = []
    for batch in batches:
        room = max_rows - len(shown)
        shown.extend([_cell(v) for v in row] for row in batch[:room])
        if len(batch) > room:
            return shown, True
    return shown, False


def _emit_stream(columns: list[str], batches, as_json: bool, as_csv: bool) -> None:
    """Print rows as they arrive, as JSON lines or CSV: everything, however many."""
    if as_json:
        for batch in batches:
            for row in batch:
                click.echo(json.dumps(dict(zip(columns, (_plain(v) for v in row))), ensure_ascii=False, default=str))
        return
    import csv

    writer = csv.writer(sys.stdout)
    writer.writerow(columns)
    for batch in batches:
        plain_rows = ([_plain(v) for v in row] for row in batch)
        writer.writerows([json.dumps(v) if isinstance(v, (list, dict)) else v for v in row] for row in plain_rows)


def _cell(value) -> str:
    """A value as a table shows it: vectors and long lists elided, floats to 4 places, times to the
    second, one line. JSON and CSV keep every value whole."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    value = _plain(value)
    if isinstance(value, list) and len(value) > 6:
        if all(isinstance(v, float) for v in value):
            return f"[{len(value)} floats]"
        return f"[{len(value)} values]"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = "" if value is None else str(value)
    return text.replace("\r\n", "↵").replace("\n", "↵")


# The widest a table cell is printed; longer values end in an ellipsis (the whole value: --json/--csv).
MAX_CELL = 48


# C0 and C1 control characters and DEL, bar newline and tab: ESC, CSI (0x9b) and OSC would let a
# stored value recolour, retitle or rewrite the user's terminal. Rich strips only a few (BEL, CR).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """Text for a terminal: each control character shown as its escape, e.g. \\x1b."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _table(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None, width: int | None = None):
    """Rows as a table that fits the terminal: cells on one line, cut with an ellipsis, headers
    whole. When even that cannot fit (many columns on 80), one record per block instead, each
    field on its own line, as psql's expanded display does."""
    import shutil

    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    width = width or shutil.get_terminal_size((80, 24)).columns
    headers = [_printable(str(c)) for c in columns]
    cells = [[_printable("" if v is None else str(v)) for v in row] for row in rows]
    widths = _column_widths(headers, cells, width - 1 - 3 * len(headers))
    if widths is None:
        label = max(len(h) for h in headers)
        room = max(width - label - 3, 10)
        blocks: list = [Text(title, style="bold")] if title else []
        for n, row in enumerate(cells, start=1):
            blocks.append(Text(f"─[ {n} ]" + "─" * max(0, min(width, label + room + 3) - len(f"─[ {n} ]")), style="dim"))
            for header, cell in zip(headers, row):
                blocks.append(Text.assemble((header.ljust(label), "bold"), " │ ", _clip(cell, room)))
        return Group(*blocks)
    table = Table(title=title, title_justify="left")
    for header, size in zip(headers, widths):
        table.add_column(Text(header), no_wrap=True, width=size)
    for row in cells:
        # Text(), not str: a value like "[red]" is data, not markup.
        table.add_row(*(Text(_clip(v, size)) for v, size in zip(row, widths)))
    return table


def _column_widths(headers: list[str], cells: list[list[str]], room: int) -> list[int] | None:
    """Widths that fit `room` characters: each column as wide as its widest value (at most
    MAX_CELL), the widest cut first, none narrower than its header or 8. None when not even that fits."""
    if len(headers) == 1:
        return [max(min(room, max([len(headers[0])] + [len(r[0]) for r in cells])), 1)]
    want = [min(MAX_CELL, max([len(h)] + [len(r[i]) for r in cells])) for i, h in enumerate(headers)]
    floor = [min(w, max(len(h), 8)) for w, h in zip(want, headers)]
    if sum(floor) > room:
        return None
    widths = list(want)
    while sum(widths) > room:
        widest = max(range(len(widths)), key=lambda i: widths[i] - floor[i])
        excess = sum(widths) - room
        widths[widest] -= min(excess, widths[widest] - floor[widest])
    return widths


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def main() -> None:
    global _standalone
    _standalone = True
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


if __name__ == "__main__":
    main()
