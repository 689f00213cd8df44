"""Commands that search: search, related, and eval, which measures search on labelled queries.
The modes, their help and how a hit is printed come from the registry in queries/modes.py."""

from __future__ import annotations

import json
import os

import click

from newsindex import config
from newsindex.cli import common
from newsindex.cli.app import cli
from newsindex.cli.common import CLIError, _bounded, _exit_on_ctrl_c, db_option, domain_errors, with_output
from newsindex.cli.output import _emit_records, _printable, _table
from newsindex.queries.modes import DEFAULT as DEFAULT_MODE, MODES as SEARCH_MODES

MAX_K = 10_000
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
    if SEARCH_MODES[mode].embeds:
        # Before the imports below (~0.2 s), which the encoder's load then overlaps.
        from newsindex.embedding import prefetch_query_encoder

        prefetch_query_encoder()
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
    else:
        _print_hits(result)
    common.exit_fast = True


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
