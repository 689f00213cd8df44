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
        import duckdb

        from newsindex.embedding import ModelError
        from newsindex.flows.schedule import ScheduleError
        from newsindex.flows.server import ServerError
        from newsindex.queries.named import QueryError
        from newsindex.warehouse.store import WarehouseError

        try:
            return func(*args, **kwargs)
        except (WarehouseError, ModelError, QueryError, ServerError, ScheduleError) as err:
            raise CLIError(str(err)) from None
        except (KeyboardInterrupt, duckdb.InterruptException):
            raise CLIError("interrupted", INTERRUPTED) from None
        except RuntimeError as err:
            # DuckDB reports a query cancelled by Ctrl-C as a plain RuntimeError.
            if "interrupted" not in str(err).lower():
                raise
            raise CLIError("interrupted", INTERRUPTED) from None
        except duckdb.Error as err:
            # DuckDB messages can run to several lines of context; the first says what went wrong.
            raise CLIError(str(err).strip().splitlines()[0]) from None

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
@click.option("--wait", default=600.0, show_default=True, help="Seconds to wait for another ingestion of this warehouse to finish.")
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect's log lines.")
@click.option("--precision", type=click.Choice(["exact", "int8"]), default="exact", show_default=True,
              help="int8: quantised encoder, faster but less accurate; its vectors are kept apart from exact ones.")
@domain_errors
def ingest(
    paths: Sequence[str], db: str | None, prune: bool, max_tokens: int, overlap: int, as_json: bool, wait: float, verbose: bool,
    precision: str,
) -> None:
    """Chunk, embed and store the articles under PATHS (default: seeds/).

    Uses the Prefect server from $PREFECT_API_URL or `newsindex server start` when one answers
    (the run shows in its UI); otherwise Prefect starts a temporary one for this run."""
    config.offline_env()
    _choose_prefect_api(verbose)
    # Prefect reads its settings at import; the summary below replaces its console lines.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "CRITICAL")
    from newsindex.flows import ingest as ingest_flow

    _show_warehouse_waits()
    run_paths = list(paths) or [str(config.DEFAULT_SEEDS)]
    db_file = str(config.db_path(db))
    with _progress(enabled=not as_json and sys.stderr.isatty()) as report:
        ingest_flow.on_progress = report
        try:
            summary = ingest_flow.ingest(
                paths=run_paths, db=db_file, prune=prune, max_tokens=max_tokens, overlap_sentences=overlap, wait=wait,
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
@db_option
@domain_errors
def schedule(paths: Sequence[str], cron: str | None, every: str | None, prune: bool, name: str | None, db: str | None) -> None:
    """Ingest PATHS (default: seeds/) on a schedule, served until Ctrl-C (which pauses it).

    Needs a Prefect server: `newsindex server start`, or $PREFECT_API_URL."""
    config.offline_env()
    from newsindex.flows import schedule as scheduling

    chosen = scheduling.plan(list(paths), db, prune, cron, every, name)
    when = f"cron {chosen.cron}" if chosen.cron else f"every {every}"
    ui = chosen.api_url.removesuffix("/api")
    click.echo(f"serving deployment ingest/{chosen.name} ({when}) into {chosen.parameters['db']}")
    click.echo(f"runs show at {ui}/runs; Ctrl-C stops serving and pauses the schedule")
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
    console.print(table)
    # Escaped: a file called "[red].txt" or a JSON error quoting brackets is text, not markup.
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning[/] {escape(warning)}", highlight=False, soft_wrap=True)
    for failure in summary["failures"]:
        console.print(f"[red]failed[/] {escape(failure)}", highlight=False, soft_wrap=True)


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


# --- search -------------------------------------------------------------------------------------

output_options = [
    click.option("--json", "as_json", is_flag=True, help="One JSON object per line."),
    click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row."),
]


def with_output(func: Callable) -> Callable:
    for option in reversed(output_options):
        func = option(func)
    return func


def _date(ctx, param, value):
    if value is None:
        return None
    import datetime as dt

    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@cli.command()
@click.argument("query")
@click.option("-k", default=10, show_default=True, help="How many results.")
@click.option("--mode", type=click.Choice(["hybrid", "semantic", "keyword"]), default="hybrid", show_default=True)
@click.option("--since", callback=_date, help="Only articles published on or after this date.")
@click.option("--until", callback=_date, help="Only articles published on or before this date.")
@click.option("--source", help="Glob on the source path, e.g. 'seeds/*.txt'.")
@click.option("--doc", help="Only this document id.")
@click.option("--per-doc", is_flag=True, help="One result per article: its best passage.")
@click.option("--ann", is_flag=True, help="Semantic mode: approximate index (built beside the warehouse on first use) instead of the exact scan.")
@db_option
@with_output
@domain_errors
def search(query, k, mode, since, until, source, doc, per_doc, ann, db, as_json, as_csv) -> None:
    """Find passages that answer QUERY: semantic, keyword (BM25) or hybrid (both, fused)."""
    from newsindex.queries.search import Filters, Hit, search as run_search

    _exit_on_ctrl_c()

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
    from rich.text import Text

    console = Console(highlight=False)
    if not result.hits:
        console.print(f"No results for {result.query!r} ({result.mode}).")
        return
    for hit in result.hits:
        ranks = ""
        if result.mode == "hybrid":
            side = lambda r: f"#{r}" if r else "–"  # noqa: E731
            ranks = f"  semantic {side(hit.semantic_rank)} · keyword {side(hit.keyword_rank)}"
        head = Text.assemble((f"{hit.rank:>2}. ", "bold"), (hit.title, "bold cyan"), f"  {hit.published or 'no date'}",
                             (f"  score {hit.score:.4f}{ranks}", "dim"))  # fmt: skip
        console.print(head)
        console.print(Text(f"    {_short_path(hit.source_path)}  ·  {hit.chunk_id}", style="dim"))
        console.print(Text(f"    {hit.snippet}"))
    console.print(Text(f"{len(result.hits)} results · {result.mode} · {result.seconds * 1000:.0f} ms", style="dim"))


def _short_path(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


@cli.command()
@click.argument("doc_id")
@click.option("-k", default=10, show_default=True, help="How many documents.")
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


@cli.command()
@click.argument("statement", required=False)
@click.option("-f", "--file", "sql_file", type=click.File("r"), help="Read the SQL from a file ('-' for stdin).")
@click.option("--max-rows", default=200, show_default=True, help="Rows shown as a table; --json/--csv stream all.")
@db_option
@with_output
@domain_errors
def sql(statement, sql_file, max_rows, db, as_json, as_csv) -> None:
    """Run read-only SQL against the warehouse. `embed('text')` gives a query vector:

    \b
    newsindex sql "SELECT title, array_cosine_similarity(embedding, embed('who warned Russia')) AS s
                   FROM chunks JOIN documents USING (doc_id) ORDER BY s DESC LIMIT 5"
    """
    from newsindex.queries.readonly import run_readonly

    _exit_on_ctrl_c()

    if bool(statement) == bool(sql_file):
        raise CLIError("give SQL as an argument or with -f FILE (one of the two)")
    text = sql_file.read() if sql_file else statement
    _run_and_print(lambda emit: run_readonly(config.db_path(db), text, emit), as_json, as_csv, max_rows)


@cli.command("queries")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def list_queries(as_json: bool) -> None:
    """List the named queries and their parameters."""
    from newsindex.queries.named import all_queries

    queries = all_queries().values()
    if as_json:
        click.echo(json.dumps([
            {"name": q.name, "description": q.description, "file": q.file,
             "params": [{"name": p.name, "type": p.type, "required": p.required, "default": p.default, "help": p.help} for p in q.params]}
            for q in queries], indent=2, default=str))  # fmt: skip
        return
    from rich.console import Console

    console = Console(highlight=False)
    for q in queries:
        console.print(f"[bold]{q.name}[/]  {q.description}")
        for p in q.params:
            default = "required" if p.required else f"default {p.default if p.default is not None else 'none'}"
            console.print(f"    --param {p.name}=<{p.type}>  {p.help} ({default})")


@cli.command("query")
@click.argument("name")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter; repeat for more.")
@click.option("--max-rows", default=200, show_default=True, help="Rows shown as a table; --json/--csv stream all.")
@db_option
@with_output
@domain_errors
def run_query(name, params, max_rows, db, as_json, as_csv) -> None:
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
    _run_and_print(lambda emit: run_named(config.db_path(db), query, query.bind(values), emit), as_json, as_csv, max_rows)


# --- evaluation ---------------------------------------------------------------------------------


@cli.command("eval")
@click.argument("queries_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-k", default=10, show_default=True, help="Cut-off for recall and MRR.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["hybrid", "semantic", "keyword"]), help="Modes to compare (default: all).")
@db_option
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@domain_errors
def evaluate(queries_file, k, modes, db, as_json) -> None:
    """Measure search on labelled queries: lines of {"query": ..., "relevant": [doc ids or file names]}."""
    from newsindex.queries.evaluate import evaluate as run_eval, load_labelled

    report = run_eval(config.db_path(db), load_labelled(queries_file), k=k, modes=list(modes) or None)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    columns = ["mode", "queries", "hit@1", "hit@5", f"mrr@{k}", f"recall@{k}"]
    rows = [[m["mode"], m["queries"], f"{m['hit@1']:.3f}", f"{m['hit@5']:.3f}", f"{m['mrr']:.3f}", f"{m['recall']:.3f}"] for m in report["modes"]]
    from rich.console import Console

    Console().print(_table(columns, rows, title=f"search quality on {queries_file}"))


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
    value = _plain(value)
    if isinstance(value, list) and len(value) > 6:
        head = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value[:3])
        return f"[{head}, … {len(value)} values]"
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _table(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None):
    from rich.table import Table

    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(str(column), overflow="fold")
    for row in rows:
        # Text(), not str: a value like "[red]" is data, not markup.
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    return table


def main() -> None:
    global _standalone
    _standalone = True
    cli(prog_name="newsindex")


if __name__ == "__main__":
    main()
