"""Running user SQL and named queries: read-only, SELECT only, results streamed in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

from newsindex.queries.named import NamedQuery, QueryError
from newsindex.queries.session import session

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
BATCH_ROWS = 2048

Emit = Callable[[list[str], Iterator[list[tuple]]], None]


def check_statements(con: duckdb.DuckDBPyConnection, text: str) -> list[str]:
    """The statements in `text`, if every one only reads; otherwise a QueryError naming the first
    that does not. The connection is read-only as well: this gives the clearer message first."""
    try:
        statements = con.extract_statements(text)
    except duckdb.ParserException as err:
        raise QueryError(str(err).strip().splitlines()[0]) from None
    if not statements:
        raise QueryError("no SQL statement given")
    for number, statement in enumerate(statements, start=1):
        if statement.type not in ALLOWED:
            kind = statement.type.name.replace("_", " ")
            raise QueryError(f"statement {number} is {kind}: only SELECT queries run here; the warehouse is read-only")
    return [s.query for s in statements]


def _batches(cursor: duckdb.DuckDBPyConnection) -> Iterator[list[tuple]]:
    while True:
        rows = cursor.fetchmany(BATCH_ROWS)
        if not rows:
            return
        yield rows


def run_readonly(db: str | Path, text: str, emit: Emit) -> None:
    with session(db) as con:
        for statement in check_statements(con, text):
            cursor = con.execute(statement)
            emit([d[0] for d in cursor.description], _batches(cursor))


def run_named(db: str | Path, query: NamedQuery, params: dict, emit: Emit) -> None:
    from newsindex.queries.search import fill_query_vector

    with session(db) as con:
        cursor = con.execute(query.sql, fill_query_vector(con, query, params))
        emit([d[0] for d in cursor.description], _batches(cursor))
