"""The SQL gate (queries/readonly.py) against DuckDB's whole grammar, and its limits: what may run is
decided by DuckDB's parser, an EXPLAIN by the statement it wraps; a statement that would write,
even to the warehouse's own file or its `.wal` siblings, is refused with one line and leaves every
byte of the folder as it was. Endless and memory-hungry queries end with one line and free the file.
Option values out of bounds are one line; control characters in values never reach the terminal raw."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from newsindex.cli import cli
from newsindex.queries import readonly
from newsindex.queries.named import QueryError
from newsindex.queries.session import session

NEWSINDEX = str(Path(sys.executable).with_name("newsindex"))
ENDLESS = "SELECT count(*) FROM range(1_000_000) a, range(1_000_000) b, range(1_000_000) c"
HUNGRY = "SELECT len(list(range)) FROM range(2_500_000_000)"
# C0 and C1 controls other than newline and tab: what a terminal would act on.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry of the folder and its bytes: the warehouse, `.wal`, `.wal.recovery`, `.tmp`..."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        found[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
    return found


def quick_look(folder: Path) -> list[tuple]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


@pytest.fixture(scope="module")
def gate_db(search_db, tmp_path_factory) -> Path:
    """A copy of the search warehouse alone in its folder: a statement that got through the gate
    could only change this copy, and any file it left beside it shows in the snapshot."""
    db = tmp_path_factory.mktemp("gate") / "gate.duckdb"
    shutil.copy(search_db, db)
    return db


def one_error_line(output: str) -> str:
    assert output.startswith("Error: ") and output.count("\n") == 1 and "Traceback" not in output, output
    return output


# --- the reproductions, through the real program -------------------------------------------------


def test_reproductions_are_refused_with_one_line_and_change_no_byte(gate_db, subprocess_env):
    folder = gate_db.parent
    before = snapshot(folder)
    cases = {
        f"SELECT count(*) FROM documents; EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{gate_db}' (USE_TMP_FILE false)":
            "Error: statement 2 is EXPLAIN ANALYZE COPY: only SELECT queries run here",
        "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1":
            "Error: statement 1 is EXPLAIN ANALYZE CREATE: only SELECT queries run here",
        f"EXPLAIN ANALYZE COPY (SELECT * FROM range(1e9)) TO '{gate_db}.wal.recovery'":
            "Error: statement 1 is EXPLAIN ANALYZE COPY: only SELECT queries run here",
    }  # fmt: skip
    for statement, expected in cases.items():
        done = subprocess.run([NEWSINDEX, "sql", statement, "--db", gate_db], env=subprocess_env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 1 and done.stdout == "", (statement, done.stdout, done.stderr)
        assert one_error_line(done.stderr).startswith(expected), done.stderr
        assert snapshot(folder) == before, statement


# --- the gate, against every kind of statement ----------------------------------------------------

# One of each statement type DuckDB parses, aimed where it would hurt most: the warehouse's own file
# and its siblings, which DuckDB's sandbox lets the open database write.
HOSTILE = [
    "COPY (SELECT 1 AS x) TO '{db}' (USE_TMP_FILE false)",
    "COPY (SELECT 1 AS x) TO '{db}.wal' (FORMAT csv)",
    "COPY (SELECT * FROM range(10)) TO '{db}.wal.recovery'",
    "COPY documents TO '{db}.tmp' (FORMAT parquet)",
    "COPY documents FROM '{db}'",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE OR REPLACE TEMP TABLE t AS SELECT * FROM chunks",
    "CREATE VIEW v AS SELECT 1",
    "CREATE TEMP VIEW articles AS SELECT 1 AS doc_id",
    "CREATE MACRO embed(x) AS 1",
    "CREATE TEMP MACRO m(x) AS x",
    "CREATE SEQUENCE s",
    "CREATE TYPE mood AS ENUM ('a', 'b')",
    "CREATE INDEX i ON documents (title)",
    "CREATE SCHEMA s",
    "CREATE SECRET (TYPE s3, KEY_ID 'k', SECRET 's')",
    "CREATE TABLE t2 (a INTEGER)",
    "INSERT INTO documents SELECT * FROM documents",
    "INSERT INTO articles (doc_id) VALUES ('x')",
    "UPDATE documents SET title = 'x'",
    "DELETE FROM chunks",
    "MERGE INTO documents USING documents AS d2 ON documents.doc_id = d2.doc_id WHEN MATCHED THEN DELETE",
    "ATTACH '{folder}/other.duckdb' AS other",
    "ATTACH '{db}' AS again",
    "ATTACH ':memory:' AS scratch",
    "DETACH gate",
    "USE memory",
    "EXPORT DATABASE '{folder}/export'",
    "IMPORT DATABASE '{folder}/export'",
    "INSTALL httpfs",
    "FORCE INSTALL httpfs",
    "LOAD httpfs",
    "UPDATE EXTENSIONS",
    "SET memory_limit = '100GB'",
    "SET GLOBAL enable_external_access = true",
    "SET lock_configuration = false",
    "SET temp_directory = '{folder}'",
    "SET VARIABLE x = 1",
    "RESET memory_limit",
    "PRAGMA memory_limit = '100GB'",
    "PRAGMA enable_profiling",
    "CALL checkpoint()",
    "CALL pragma_database_size()",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "VACUUM",
    "VACUUM ANALYZE documents",
    "ANALYZE",
    "ALTER TABLE documents RENAME TO d",
    "ALTER TABLE documents ADD COLUMN x INTEGER",
    "ALTER VIEW articles RENAME TO a",
    "DROP TABLE chunks",
    "DROP VIEW passages",
    "COMMENT ON TABLE documents IS 'x'",
    "BEGIN TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "DEALLOCATE p",
    "PIVOT (SELECT 1 AS a, 2 AS b) ON a USING sum(b)",
]

# How a statement can be wrapped so that a first-keyword check, or a look at only the outer
# statement, would let it through. `é` before the wrapped statement moves DuckDB's byte offsets
# away from Python's character offsets.
WRAPPERS = [
    "{s}",
    "explain {s}",
    "EXPLAIN ANALYZE {s}",
    "EXPLAIN ANALYSE {s}",
    "EXPLAIN (ANALYZE) {s}",
    "EXPLAIN (FORMAT JSON, ANALYZE) {s}",
    "EXPLAIN /* é é é é é é é é é é é é é é é é é é é é */ ANALYZE -- ééé\n {s}",
    "WITH x AS (SELECT 1) {s}",
    "EXPLAIN ANALYZE WITH x AS (SELECT 1) {s}",
    "SELECT 1; {s}",
    "SELECT count(*) FROM documents;\n-- harmless first\nEXPLAIN ANALYZE {s};",
]


def generated(db: Path) -> list[str]:
    return [w.format(s=s.format(db=db, folder=db.parent)) for s in HOSTILE for w in WRAPPERS]


def test_every_hostile_statement_is_one_duckdb_parses(tmp_path):
    """The list is real grammar: each base statement parses, so its refusal is the gate's doing."""
    # DuckDB's parser reads an IMPORT's files; the gate's session has no access to them at all.
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "schema.sql").write_text("CREATE TABLE t (a INTEGER);")
    (tmp_path / "export" / "load.sql").write_text("")
    con = duckdb.connect()
    try:
        for statement in HOSTILE:
            parsed = con.extract_statements(statement.format(db=tmp_path / "x.duckdb", folder=tmp_path))
            assert any(p.type != duckdb.StatementType.SELECT for p in parsed), statement
    finally:
        con.close()


def test_gate_refuses_every_statement_type_however_wrapped(gate_db):
    folder = gate_db.parent
    before, look = snapshot(folder), quick_look(folder)
    statements = generated(gate_db)
    assert len(statements) == len(HOSTILE) * len(WRAPPERS) > 600
    refused_by_type = 0
    with session(gate_db, memory_limit="1GB") as con:
        for text in statements:
            # What readonly.run does, on one open session (opening one costs a third of a second).
            try:
                checked = readonly.check_statements(con, text)
            except QueryError as err:
                message = str(err)
                assert "\n" not in message, (text, message)
                refused_by_type += message.startswith("statement ")
            else:
                for statement in checked:
                    con.execute(statement).fetchall()
                pytest.fail(f"the gate let through {text!r}")
            assert quick_look(folder) == look, text
    assert snapshot(folder) == before
    # Most are refused by type; the rest are statements DuckDB cannot parse in that position.
    assert refused_by_type > len(statements) * 0.7


@pytest.mark.parametrize(
    "statement",
    ["EXPLAIN ANALYZE COPY (SELECT 1) TO '{db}'", "EXPLAIN (ANALYZE) INSERT INTO documents SELECT * FROM documents",
     "EXPLAIN /* éééééééééééééééééééééé */ CREATE TABLE t AS SELECT 1", "SELECT 1; EXPLAIN ANALYZE DELETE FROM chunks"],
)  # fmt: skip
def test_refusal_names_the_statement_the_explain_wraps(gate_db, statement):
    with pytest.raises(QueryError) as err:
        readonly.run(gate_db, statement.format(db=gate_db))
    number = 2 if statement.startswith("SELECT 1;") else 1
    kind = {"COPY": "COPY", "INSERT": "INSERT", "CREATE": "CREATE", "DELETE": "DELETE"}
    wrapped = next(v for k, v in kind.items() if k in statement)
    prefix = "EXPLAIN" if "ANALYZE" not in statement else "EXPLAIN ANALYZE"
    assert str(err.value).startswith(f"statement {number} is {prefix} {wrapped}: only SELECT queries run here")


ALLOWED = {
    "SELECT count(*) AS n FROM documents": [(15,)],
    "WITH d AS (SELECT doc_id FROM documents) SELECT count(*) FROM d": [(15,)],
    "SELECT 1 AS x UNION ALL SELECT 2 ORDER BY x": [(1,), (2,)],
    "VALUES (1, 'a')": [(1, "a")],
    "FROM documents SELECT count(*)": [(15,)],
    "SELECT $n::INTEGER + 1 AS y": [(42,)],
    "-- a comment first\nSELECT 'é' AS e;": [("é",)],
}
ALLOWED_SHAPES = ["SUMMARIZE documents", "DESCRIBE documents", "SHOW TABLES", "EXPLAIN SELECT count(*) FROM chunks",
                  "EXPLAIN ANALYZE SELECT count(*) FROM chunks", "EXPLAIN (FORMAT JSON) SELECT 1",
                  "EXPLAIN (ANALYZE, FORMAT JSON) SELECT 1", "EXPLAIN (SELECT 1)",
                  "EXPLAIN /* é */ ANALYZE (SELECT 'é') UNION ALL (SELECT 'b')"]  # fmt: skip


def test_gate_lets_queries_and_their_explain_run(gate_db):
    before = snapshot(gate_db.parent)
    results = readonly.run(gate_db, ";\n".join([*ALLOWED, *ALLOWED_SHAPES]), {"n": 41}, max_rows=50)
    assert [r.rows for r in results[: len(ALLOWED)]] == list(ALLOWED.values())
    shapes = results[len(ALLOWED):]
    assert shapes[0].columns[0] == "column_name" and len(shapes[0].rows) == len(shapes[1].rows) > 5
    assert ("chunks",) in shapes[2].rows
    plans = [r.rows[0] for r in shapes[3:]]
    assert [p[0] for p in plans] == ["physical_plan", "analyzed_plan", "physical_plan", "analyzed_plan", "physical_plan", "analyzed_plan"]
    assert json.loads(plans[2][1]) and json.loads(plans[3][1])["children"]
    limited = readonly.run(gate_db, "SELECT * FROM range(10)", max_rows=3)[0]
    assert limited.rows == [(0,), (1,), (2,)] and limited.truncated
    assert not readonly.run(gate_db, "SELECT * FROM range(3)", max_rows=3)[0].truncated
    assert snapshot(gate_db.parent) == before


def test_named_queries_pass_the_same_gate(gate_db):
    result = run("query", "latest_articles", "--param", "limit=2", "--json", "--db", gate_db)
    assert result.exit_code == 0 and len(result.output.splitlines()) == 2


# --- limits --------------------------------------------------------------------------------------


def _released(db: Path) -> None:
    duckdb.connect(str(db)).close()  # read-write: fails while any process still holds the file


def test_time_limit_ends_an_endless_query_with_one_line_and_frees_the_file(gate_db, subprocess_env):
    before = snapshot(gate_db.parent)
    started = time.monotonic()
    done = subprocess.run([NEWSINDEX, "sql", ENDLESS, "--timeout", "1", "--db", gate_db], env=subprocess_env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 1 and done.stdout == ""
    assert one_error_line(done.stderr).startswith("Error: query exceeded the 1 s time limit")
    assert took < 30, f"took {took:.1f}s"
    _released(gate_db)

    # Streaming JSON lines: the limit covers fetching too, so a result that never ends frees the file.
    streamed = subprocess.run([NEWSINDEX, "sql", "SELECT * FROM range(10_000_000_000)", "--json", "--db", gate_db],
                              env={**subprocess_env, "NEWSINDEX_SQL_TIMEOUT": "2"}, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
    assert streamed.returncode == 1 and json.loads(streamed.stdout.splitlines()[0]) == {"range": 0}
    assert one_error_line(streamed.stderr).startswith("Error: query exceeded the 2 s time limit")
    _released(gate_db)
    assert snapshot(gate_db.parent) == before


def test_time_limit_in_process_and_by_environment(gate_db, monkeypatch):
    with pytest.raises(QueryError, match=r"^query exceeded the 0.5 s time limit"):
        readonly.run(gate_db, ENDLESS, timeout=0.5)
    _released(gate_db)
    monkeypatch.setenv("NEWSINDEX_SQL_TIMEOUT", "1")
    result = run("sql", ENDLESS, "--db", gate_db)
    assert result.exit_code == 1 and one_error_line(result.output).startswith("Error: query exceeded the 1 s time limit")
    _released(gate_db)


def test_memory_limit_ends_a_hungry_query_with_one_line(gate_db, subprocess_env):
    before = snapshot(gate_db.parent)
    # A child forked from this (large) test process inherits its peak RSS across exec, so a small
    # wrapper starts the command and reports the peak of that grandchild alone (wait4).
    peak_file = gate_db.parent / "peak-kb"
    wrapper = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[2:])\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, str(peak_file), NEWSINDEX, "sql", HUNGRY, "--memory-limit", "100MB",
                           "--db", gate_db], env=subprocess_env, capture_output=True, text=True, timeout=300)  # fmt: skip
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 1 and out == ""
    assert one_error_line(err).startswith("Error: query needs more than the 100 MB memory limit"), err
    # Unlimited, this list reaches 19 GB; the model, Python and DuckDB need about 250 MB besides.
    peak_mb = int(peak_file.read_text()) / 1024
    peak_file.unlink()
    assert peak_mb < 900, f"peak RSS {peak_mb:.0f} MB"
    _released(gate_db)
    assert snapshot(gate_db.parent) == before


def test_memory_limit_by_environment_and_no_spill_files(gate_db, monkeypatch):
    monkeypatch.setenv("NEWSINDEX_SQL_MEMORY", "64MB")
    # DuckDB would spill this sort into `<db>.tmp/`, beside the warehouse; here it fails instead.
    sort = "SELECT max(n) FROM (SELECT row_number() OVER (ORDER BY range DESC) AS n FROM range(20_000_000))"
    result = run("sql", sort, "--db", gate_db)
    assert result.exit_code == 1 and one_error_line(result.output).startswith("Error: query needs more than the 64 MB memory limit")
    assert not Path(f"{gate_db}.tmp").exists()
    _released(gate_db)


def test_default_limits(monkeypatch):
    monkeypatch.delenv("NEWSINDEX_SQL_TIMEOUT", raising=False)
    monkeypatch.delenv("NEWSINDEX_SQL_MEMORY", raising=False)
    chosen = readonly.limits()
    assert chosen.timeout == 60
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert chosen.memory_bytes == min(4 * 1000**3, int(ram / 4))
    assert readonly.limits(0, "1.5GB") == readonly.Limits(timeout=None, memory_bytes=1_500_000_000)


# --- option bounds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["search", "flood", "-k", str(10**12)], "Error: -k must be between 1 and 10,000, got 1,000,000,000,000"),
        (["search", "flood", "-k", "0"], "Error: -k must be between 1 and 10,000, got 0"),
        (["related", "x", "-k", str(10**12)], "Error: -k must be between 1 and 10,000"),
        (["sql", "SELECT 1", "--max-rows", "-1"], "Error: --max-rows must be between 1 and 1,000,000, got -1"),
        (["sql", "SELECT 1", "--max-rows", str(10**9)], "Error: --max-rows must be between 1 and 1,000,000"),
        (["query", "latest_articles", "--max-rows", "-5"], "Error: --max-rows must be between 1 and 1,000,000"),
        (["query", "latest_articles", "-p", f"limit={10**30}"], "Error: latest_articles: parameter limit must be an integer"),
        (["query", "latest_articles", "-p", "limit=-1"], "Error: Binder Error: LIMIT/OFFSET cannot be negative"),
        (["query", "semantic_search", "-p", "query=flood", "-p", f"k={10**12}", "--max-rows", "3"], None),
        (["sql", "SELECT 1", "--timeout", "-1"], "Error: time limit '-1' is not a number of seconds between 0 (none) and 86400"),
        (["sql", "SELECT 1", "--timeout", "nan"], "Error: time limit 'nan' is not a number of seconds"),
        (["sql", "SELECT 1", "--timeout", "1e12"], "Error: time limit '1e12' is not a number of seconds"),
        (["sql", "SELECT 1", "--memory-limit", "lots"], "Error: memory limit 'lots' is not a size such as 500MB or 4GB"),
        (["sql", "SELECT 1", "--memory-limit", "1KB"], "Error: memory limit '1KB' is below the minimum of 32 MB"),
        (["query", "latest_articles", "--memory-limit", "1000TB"], "Error: memory limit '1000TB' is more than this machine's"),
        (["query", "latest_articles", "--timeout", "soon"], "Error: time limit 'soon' is not a number of seconds"),
    ],
)
def test_option_values_out_of_bounds_are_one_line(gate_db, args, expected):
    result = run(*args, "--db", gate_db)
    if expected is None:  # accepted: a huge k on a small warehouse is just "all of it"
        assert result.exit_code == 0 and "3 rows shown; truncated" in result.output
        return
    assert result.exit_code in (1, 2)
    assert one_error_line(result.output).startswith(expected), result.output


def test_sql_that_is_not_utf8_is_one_line(gate_db, tmp_path, subprocess_env):
    script = tmp_path / "latin1.sql"
    script.write_bytes(b"SELECT 'caf\xe9' AS x")
    result = run("sql", "-f", script, "--db", gate_db)
    assert result.exit_code == 1 and one_error_line(result.output) == f"Error: {script}: not UTF-8 text (byte 0xe9)\n"
    # The same bytes as an argument reach Python as surrogate escapes.
    done = subprocess.run([NEWSINDEX.encode(), b"sql", b"EXPLAIN SELECT 'caf\xe9'", b"--db", str(gate_db).encode()],
                          env=subprocess_env, capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and done.stderr == b"Error: the SQL is not valid UTF-8 (at character 20)\n", done.stderr


# --- control characters ---------------------------------------------------------------------------


def test_control_characters_are_escaped_in_tables_and_kept_in_json(gate_db):
    sql = "SELECT chr(27) || '[2J' || chr(27) || ']0;pwned' || chr(7) AS \"h\x1bdr\", chr(155) || '31m' AS c1, 'a' || chr(13) || 'b' AS cr"
    table = run("sql", sql, "--db", gate_db)
    assert table.exit_code == 0
    assert not RAW_CONTROL.search(table.output), repr(table.output)
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in table.output and "\\x9b31m" in table.output and "a\\x0db" in table.output
    assert "h\\x1bdr" in table.output
    exact = json.loads(run("sql", sql, "--json", "--db", gate_db).output)
    assert exact == {"h\x1bdr": "\x1b[2J\x1b]0;pwned\x07", "c1": "\x9b31m", "cr": "a\rb"}


def test_control_characters_in_stored_ids_and_urls_never_reach_the_terminal(ingest, db, tmp_path):
    # Ingest refuses control characters in ids and strips them from urls (tests/test_bad_input.py);
    # a file name is stored as it is, so it is what carries ESC into the warehouse here.
    # A folder deep enough that the path never fits one 80-column line, whatever the temp root:
    # the search's source line must keep the file name, whole, rather than fold it.
    folder = tmp_path / ("deep" * 20)
    folder.mkdir()
    feed = folder / "feed\x1b[31m\x9b2J.jsonl"
    record = {"id": "evil", "url": "https://example.org/\x1b]0;pwned\x07", "title": "Harbour strike",
              "date": "2024-03-01", "text": "Dock workers at the harbour went on strike over pay on Friday."}  # fmt: skip
    feed.write_text(json.dumps(record) + "\n", encoding="utf-8")
    summary = ingest(feed)
    assert summary["added"] == 1, summary
    outputs = [
        # The file name, not the whole path: a table cuts long cells, and the name is where ESC is.
        run("sql", "SELECT doc_id, url, regexp_replace(source_path, '^.*/', '') AS file FROM articles", "--db", db).output,
        run("search", "harbour strike", "--db", db).output,
        run("search", "harbour strike", "--mode", "keyword", "--db", db).output,
    ]
    for output in outputs:
        assert "Harbour strike" in output or "evil" in output, output
        assert not RAW_CONTROL.search(output), repr(output)
        assert "\\x1b" in output
    assert not RAW_CONTROL.search(run("query", "latest_articles", "--db", db).output)
    stored = json.loads(run("sql", "SELECT doc_id, url, source_path FROM articles", "--json", "--db", db).output)
    # JSON keeps the value whole (escaped by JSON itself), for scripts.
    assert stored == {"doc_id": "evil", "url": "https://example.org/]0;pwned", "source_path": str(feed.resolve())}


def test_the_source_line_of_a_hit_keeps_the_file_name_and_never_splits_an_escape():
    from newsindex.cli.search import _where

    path = "/tmp/" + "deep" * 30 + "/feed\x1b[31m.jsonl"
    for width in range(30, 200):
        line = _where(path, "evil#0", width)
        assert len(line) <= width and "\n" not in line, (width, line)
        assert line.endswith("feed\\x1b[31m.jsonl  ·  evil#0"), (width, line)
    assert _where("seeds/a.txt", "a#1", 80) == "seeds/a.txt  ·  a#1"
