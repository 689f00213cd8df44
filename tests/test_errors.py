"""DuckDB's exceptions become newsindex's errors at the warehouse boundary (warehouse/connection.py):
each class of driver error, provoked on a real DuckDB file, maps to its domain error, keeps DuckDB's
first line as its message, and derives from NewsindexError, the one base the CLI catches."""

from __future__ import annotations

import selectors
import subprocess
import sys
import threading

import duckdb
import pytest

from newsindex.errors import NewsindexError
from newsindex.warehouse import connection
from newsindex.warehouse.connection import (
    ConstraintViolated, OutOfMemory, QueryError, QueryInterrupted, QueryRefused, QuerySyntaxError,
    WarehouseError, WarehouseLocked, database_error, driver_errors,
)  # fmt: skip

LONG_QUERY = "SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b"


@pytest.fixture
def con(tmp_path):
    db = duckdb.connect(str(tmp_path / "w.duckdb"))
    db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (1)")
    yield db
    db.close()


def raised(con: duckdb.DuckDBPyConnection, sql: str) -> BaseException:
    """The domain error that `sql` raises inside driver_errors()."""
    with pytest.raises(NewsindexError) as caught:
        with driver_errors():
            con.execute(sql).fetchall()
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no DuckDB traceback behind it
    return caught.value


@pytest.mark.parametrize(
    "sql, kind, message",
    [
        ("SELEC nonsense", QuerySyntaxError, 'Parser Error: syntax error at or near "SELEC"'),
        ("SELECT * FROM nope", QueryError, "Catalog Error: Table with name nope does not exist!"),
        ("SELECT nope FROM t", QueryError, 'Binder Error: Referenced column "nope" not found in FROM clause!'),
        ("SELECT 1 LIMIT -1", QueryError, "Binder Error: LIMIT/OFFSET cannot be negative"),
        ("SELECT 'a'::INTEGER", QueryError, "Conversion Error: Could not convert string 'a' to INT32"),
        ("INSERT INTO t VALUES (1)", ConstraintViolated, 'Constraint Error: Duplicate key "a: 1" violates primary key constraint.'),
    ],
)
def test_each_driver_error_becomes_its_domain_error(con, sql, kind, message):
    err = raised(con, sql)
    assert type(err) is kind and isinstance(err, WarehouseError)
    assert str(err) == message  # DuckDB's first line, the rest of its context dropped


def test_the_sandbox_and_the_memory_limit(con, tmp_path):
    (tmp_path / "other.csv").write_text("a\n1\n")
    con.execute("SET memory_limit = '32MB'")
    con.execute("SET temp_directory = ''")
    assert isinstance(raised(con, "SELECT list(range) FROM range(100000000)"), OutOfMemory)
    con.execute("SET enable_external_access = false")
    refused = raised(con, f"SELECT * FROM read_csv('{tmp_path / 'other.csv'}')")
    assert type(refused) is QueryRefused and str(refused).startswith("Permission Error:")


def test_an_interrupted_query(con):
    done = threading.Event()

    def keep_interrupting():
        # Until the query has stopped: an interrupt that comes before it starts is lost.
        while not done.wait(0.05):
            con.interrupt()

    threading.Thread(target=keep_interrupting, daemon=True).start()
    try:
        err = raised(con, LONG_QUERY)
    finally:
        done.set()
    assert type(err) is QueryInterrupted and str(err) == "interrupted" and err.exit_code == 130


def test_a_file_held_by_another_process(tmp_path):
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys\nc = duckdb.connect({str(db)!r})\nprint('held', flush=True)\nsys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with selectors.DefaultSelector() as ready:
            ready.register(holder.stdout, selectors.EVENT_READ)
            assert ready.select(timeout=60), "the holder never opened the file"
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(duckdb.IOException) as raw:
            duckdb.connect(str(db))
        mapped = database_error(raw.value, db)
        assert type(mapped) is WarehouseLocked and str(mapped).startswith(f"{db}: held by process {holder.pid} ")
        # What opening the warehouse says once its wait is over, with the holder named.
        with pytest.raises(WarehouseLocked, match=rf"^{db}: held by process {holder.pid} .* for more than 0s; close that session"):
            connection.connect(db, wait=0)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_what_is_not_duckdbs_passes_through():
    for err in (ValueError("x"), RuntimeError("something else"), KeyError("k")):
        assert database_error(err) is err
    with pytest.raises(ValueError, match="^x$"):
        with driver_errors():
            raise ValueError("x")
    # DuckDB reports some interrupted queries as a plain RuntimeError.
    assert type(database_error(RuntimeError("Query interrupted"))) is QueryInterrupted


def test_a_file_problem_names_the_file(tmp_path):
    bad = tmp_path / "not-a-warehouse.duckdb"
    bad.write_text("this is not a DuckDB file\n" * 100)
    with pytest.raises(WarehouseError) as caught:
        connection.connect(bad)
    assert str(caught.value).startswith(f"{bad}: ") and "\n" not in str(caught.value)
    assert not isinstance(caught.value, QueryError)
