"""Printing results: tables that fit the terminal, JSON lines and CSV streams, and escaping of
control characters a stored value could carry."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence

import click


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
