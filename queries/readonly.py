"""The one gate for SQL that a user wrote: `newsindex sql`, named queries, and any API over them.

What may run is decided from what DuckDB's parser says each statement is, never from its first
word: plain queries (SELECT, WITH, VALUES, set operations, DESCRIBE/SHOW/SUMMARIZE, which DuckDB
parses as SELECT) and EXPLAIN [ANALYZE] of one such query. DuckDB's sandbox alone is not enough:
with external access off it still lets a statement write the open database's own file and its
`.wal` siblings (`EXPLAIN ANALYZE COPY ... TO 'warehouse.duckdb'`). An EXPLAIN is taken apart, the
statement it wraps is parsed on its own, and what runs is an EXPLAIN rebuilt around that checked
query, not the text as typed.

Sessions run under a memory limit with spilling off, and under a time limit enforced by a timer
that interrupts the connection, so no query can exhaust memory or disk, or hold the file forever.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from newsindex.queries.named import NamedQuery
from newsindex.queries.session import session
from newsindex.warehouse.connection import (
    OutOfMemory, QueryError, QueryInterrupted, QuerySyntaxError, database_error, driver_errors,
)

BATCH_ROWS = 2048
DEFAULT_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 24 * 3600.0
# A quarter of the machine, but no more than this: one query must not crowd out everything else.
DEFAULT_MEMORY_SHARE = 0.25
DEFAULT_MEMORY_CAP = 4 * 1000**3
MIN_MEMORY = 32 * 1000**2
MAX_ROWS_CAP = 1_000_000
TIMEOUT_ENV = "NEWSINDEX_SQL_TIMEOUT"
MEMORY_ENV = "NEWSINDEX_SQL_MEMORY"

Emit = Callable[[list[str], Iterator[list[tuple]]], None]

_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*$", re.IGNORECASE)
_EXPLAIN_FORMATS = {"TEXT", "JSON", "HTML", "GRAPHVIZ", "YAML"}


@dataclass(frozen=True)
class Limits:
    """What one run may use: seconds of wall time (None: unlimited) and bytes of DuckDB memory."""

    timeout: float | None
    memory_bytes: int

    @property
    def memory(self) -> str:
        return _show_size(self.memory_bytes)


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple]
    truncated: bool


def limits(timeout: float | str | None = None, memory_limit: str | None = None) -> Limits:
    """The limits to use: the values given, else $NEWSINDEX_SQL_TIMEOUT / $NEWSINDEX_SQL_MEMORY,
    else 60 s and a quarter of the RAM (at most 4 GB). A QueryError says what is wrong with one."""
    if timeout is None:
        timeout = os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_TIMEOUT_S:
        raise QueryError(
            f"time limit {timeout!r} is not a number of seconds between 0 (none) and {MAX_TIMEOUT_S:.0f} (--timeout, ${TIMEOUT_ENV})"
        )
    memory = memory_limit or os.environ.get(MEMORY_ENV)
    return Limits(timeout=seconds or None, memory_bytes=_parse_size(memory) if memory else _default_memory())


def _ram() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _default_memory() -> int:
    ram = _ram()
    if ram is None:
        return DEFAULT_MEMORY_CAP
    return max(MIN_MEMORY, min(DEFAULT_MEMORY_CAP, int(ram * DEFAULT_MEMORY_SHARE)))


def _parse_size(text: str) -> int:
    match = _SIZE.match(str(text))
    if not match:
        raise QueryError(f"memory limit {text!r} is not a size such as 500MB or 4GB (--memory-limit, ${MEMORY_ENV})")
    size = int(float(match[1]) * _UNITS[(match[2] or "").upper()])
    if size < MIN_MEMORY:
        raise QueryError(f"memory limit {text!r} is below the minimum of {_show_size(MIN_MEMORY)}")
    ram = _ram()
    # A limit the machine cannot honour is no limit: the kernel would end the process first.
    if ram is not None and size > ram:
        raise QueryError(f"memory limit {text!r} is more than this machine's {_show_size(ram)} of RAM")
    return size


def _show_size(size: int) -> str:
    for unit in ("TB", "GB", "MB", "KB"):
        if size >= _UNITS[unit]:
            value = size / _UNITS[unit]
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


# --- the statement gate -------------------------------------------------------------------------


def check_statements(con: duckdb.DuckDBPyConnection, text: str) -> list[duckdb.Statement]:
    """The statements to run for `text`, if every one only reads; otherwise a QueryError naming the
    first that does not, before any runs. Run the returned Statements, not the text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        # A command-line argument that was not UTF-8 arrives with surrogate escapes.
        raise QueryError(f"the SQL is not valid UTF-8 (at character {err.start + 1})") from None
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as err:
        raise database_error(err) from None
    if not statements:
        raise QuerySyntaxError("no SQL statement given")
    return [_runnable(con, number, statement) for number, statement in enumerate(statements, start=1)]


def _refuse(number: int, kind: str) -> QueryError:
    return QueryError(
        f"statement {number} is {kind}: only SELECT queries run here (and EXPLAIN [ANALYZE] of one); the warehouse is read-only"
    )


def _kind(statement: duckdb.Statement) -> str:
    return statement.type.name.replace("_", " ")


def _runnable(con: duckdb.DuckDBPyConnection, number: int, statement: duckdb.Statement) -> duckdb.Statement:
    if statement.type == duckdb.StatementType.SELECT:
        return statement
    if statement.type != duckdb.StatementType.EXPLAIN:
        raise _refuse(number, _kind(statement))
    analyze, explain_format, wrapped = _take_apart_explain(statement.query)
    prefix = "EXPLAIN ANALYZE" if analyze else "EXPLAIN"
    if wrapped is None:
        raise _refuse(number, f"{prefix} with options other than ANALYZE and FORMAT")
    try:
        inner = con.extract_statements(wrapped)
    except duckdb.Error:
        inner = []
    if len(inner) != 1:
        raise _refuse(number, f"{prefix} of something other than one query")
    if inner[0].type != duckdb.StatementType.SELECT:
        raise _refuse(number, f"{prefix} {_kind(inner[0])}")
    options = [name for name, wanted in (("ANALYZE", analyze), (f"FORMAT {explain_format}", explain_format)) if wanted]
    rebuilt = con.extract_statements(f"EXPLAIN ({', '.join(options)}) {wrapped}" if explain_format else f"{prefix} {wrapped}")
    if len(rebuilt) != 1 or rebuilt[0].type != duckdb.StatementType.EXPLAIN:
        raise _refuse(number, f"{prefix} of something other than one query")
    return rebuilt[0]


def _take_apart_explain(text: str) -> tuple[bool, str | None, str | None]:
    """(ANALYZE given, FORMAT given, the text of the wrapped statement) of an EXPLAIN statement,
    read from DuckDB's own tokens (comments skipped); None for the text when its options are not
    ones this gate knows. Token offsets are in UTF-8 bytes."""
    raw = text.encode("utf-8")
    starts = [offset for offset, _ in duckdb.tokenize(text)]
    words = [_token_text(raw, offset) for offset in starts]
    if not words or words[0] != "EXPLAIN":
        return False, None, None
    i, analyze, explain_format = 1, False, None
    if i < len(words) and words[i] in ("ANALYZE", "ANALYSE"):
        analyze, i = True, i + 1
    # "EXPLAIN (" opens either an option list or a parenthesised query; options start with a name.
    if i + 1 < len(words) and words[i] == "(" and words[i + 1] in ("ANALYZE", "ANALYSE", "FORMAT"):
        i += 1
        while True:
            if words[i] in ("ANALYZE", "ANALYSE"):
                analyze, i = True, i + 1
            elif words[i] == "FORMAT" and i + 1 < len(words) and words[i + 1].strip("'") in _EXPLAIN_FORMATS:
                explain_format, i = words[i + 1].strip("'"), i + 2
            else:
                return analyze, explain_format, None
            if i < len(words) and words[i] == ",":
                i += 1
            elif i < len(words) and words[i] == ")":
                i += 1
                break
            else:
                return analyze, explain_format, None
    if i >= len(words):
        return analyze, explain_format, None
    return analyze, explain_format, raw[starts[i]:].decode("utf-8")


def _token_text(raw: bytes, offset: int) -> str:
    """A token's text in upper case: a word, a quoted string, or one character of punctuation."""
    match = re.match(rb"[A-Za-z_][A-Za-z0-9_$]*|'[^']*'", raw[offset:])
    return (match[0] if match else raw[offset:offset + 1]).decode("utf-8", "replace").upper()


# --- running under limits ----------------------------------------------------------------------


class _Deadline:
    """Interrupts the connection's running query once the time is up (DuckDB has no statement
    timeout of its own); `expired` tells a timeout from a Ctrl-C."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float | None):
        self.expired = False
        self._con: duckdb.DuckDBPyConnection | None = con
        # Held while interrupting, so that cancel() returns only once the timer can no longer
        # touch the connection, which is closed right after.
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire) if seconds else None
        if self._timer:
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._con is not None:
                self.expired = True
                self._con.interrupt()

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()
        with self._lock:
            self._con = None


@contextmanager
def _limited(db: str | Path, limits_: Limits) -> Iterator[tuple[duckdb.DuckDBPyConnection, _Deadline]]:
    """A sandboxed read-only session under `limits_`; their breaches become one-line QueryErrors.
    The file is closed on the way out, whatever happened."""
    with session(db, memory_limit=f"{limits_.memory_bytes}B") as con:
        deadline = _Deadline(con, limits_.timeout)
        try:
            with driver_errors():
                yield con, deadline
        except QueryInterrupted:
            if deadline.expired:
                raise _timed_out(limits_) from None
            raise
        except OutOfMemory:
            raise QueryError(
                f"query needs more than the {limits_.memory} memory limit (raise it with --memory-limit or ${MEMORY_ENV})"
            ) from None
        finally:
            deadline.cancel()


def _timed_out(limits_: Limits) -> QueryError:
    return QueryError(f"query exceeded the {limits_.timeout:g} s time limit (raise it with --timeout or ${TIMEOUT_ENV}; 0 for none)")


def _batches(cursor: duckdb.DuckDBPyConnection, deadline: _Deadline, limits_: Limits) -> Iterator[list[tuple]]:
    while True:
        # The timer may fire while the caller writes rows out, between two fetches.
        if deadline.expired:
            raise _timed_out(limits_)
        rows = cursor.fetchmany(BATCH_ROWS)
        if not rows:
            return
        yield rows


def _columns(cursor: duckdb.DuckDBPyConnection) -> list[str]:
    return [d[0] for d in cursor.description]


def run_readonly(
    db: str | Path, text: str, emit: Emit, *, timeout: float | str | None = None, memory_limit: str | None = None
) -> None:
    """Run the SQL `text` through the gate; `emit(columns, batches)` receives each statement's
    result while the file is open. The time limit covers the whole run, fetching included."""
    chosen = limits(timeout, memory_limit)
    with _limited(db, chosen) as (con, deadline):
        for statement in check_statements(con, text):
            cursor = con.execute(statement)
            emit(_columns(cursor), _batches(cursor, deadline, chosen))


def run_named(
    db: str | Path, query: NamedQuery, params: dict, emit: Emit, *, timeout: float | str | None = None, memory_limit: str | None = None
) -> None:
    from newsindex.queries.search import fill_query_vector, statement_sql

    chosen = limits(timeout, memory_limit)
    with _limited(db, chosen) as (con, deadline):
        statements = check_statements(con, statement_sql(con, query))
        if len(statements) != 1:
            raise QueryError(f"{query.file}: a named query is one statement, this has {len(statements)}")
        cursor = con.execute(statements[0], fill_query_vector(con, query, params, db))
        emit(_columns(cursor), _batches(cursor, deadline, chosen))


def run(
    db: str | Path,
    sql: str,
    params: dict[str, object] | None = None,
    *,
    timeout: float | str | None = None,
    memory_limit: str | None = None,
    max_rows: int = 10_000,
) -> list[Result]:
    """User SQL for a library or HTTP caller: every statement gated, values bound from `params` by
    name ($name), at most `max_rows` rows kept per statement (the rest is never fetched)."""
    if not 0 <= max_rows <= MAX_ROWS_CAP:
        raise QueryError(f"max_rows must be between 0 and {MAX_ROWS_CAP:,}, got {max_rows}")
    params = params or {}
    chosen = limits(timeout, memory_limit)
    results = []
    with _limited(db, chosen) as (con, deadline):
        for statement in check_statements(con, sql):
            cursor = con.execute(statement, {name: params[name] for name in statement.named_parameters if name in params})
            rows: list[tuple] = []
            truncated = False
            for batch in _batches(cursor, deadline, chosen):
                room = max_rows - len(rows)
                rows.extend(batch[:room])
                if len(batch) > room:
                    truncated = True
                    break
            results.append(Result(_columns(cursor), rows, truncated))
    return results
