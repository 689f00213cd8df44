"""Hostile input to the query side: values are bound, never pasted; `sql` cannot write, reach other
files or loosen its own sandbox; Ctrl-C stops a long query and the next command works; an enormous
result is streamed (JSON lines, CSV) or cut at --max-rows (tables), never loaded whole."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from conftest import doc_id_of

from newsindex.cli import cli

NEWSINDEX = str(Path(sys.executable).with_name("newsindex"))
LONG_QUERY = "SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def fingerprint(db: Path) -> tuple:
    """Everything a hostile statement could change: the file itself, its schema, its rows."""
    stat = db.stat()
    con = duckdb.connect(str(db), read_only=True)
    try:
        content = con.execute(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks),"
            " (SELECT bit_xor(hash(doc_id, title, text, content_hash)) FROM documents),"
            " (SELECT bit_xor(hash(chunk_id, text, embedding)) FROM chunks),"
            " (SELECT list(table_name ORDER BY table_name) FROM duckdb_tables()),"
            " (SELECT list(view_name ORDER BY view_name) FROM duckdb_views() WHERE NOT internal),"
            " (SELECT list(version ORDER BY version) FROM _migrations)"
        ).fetchone()
    finally:
        con.close()
    return stat.st_size, stat.st_mtime_ns, sorted(os.listdir(db.parent)), content


REFUSED_BY_KIND = [
    "ATTACH '/tmp/other.duckdb' AS other",
    "ATTACH ':memory:' AS scratch",
    "DETACH search",
    "COPY chunks TO '{out}'",
    "COPY (SELECT * FROM documents) TO '{out}' (FORMAT parquet)",
    "EXPORT DATABASE '{dir}'",
    "INSTALL httpfs",
    "LOAD '{ext}'",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET lock_configuration = false",
    "SET GLOBAL allowed_directories = ['/']",
    "PRAGMA enable_checkpoint_on_shutdown",
    "CALL read_csv('/etc/passwd')",
    "CALL checkpoint()",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW articles AS SELECT 1 AS doc_id",
    "CREATE MACRO embed(x) AS 1",
    "INSERT INTO articles (doc_id) VALUES ('x')",
    "UPDATE passages SET text = 'x'",
    "DELETE FROM articles",
    "DROP VIEW passages",
    "ALTER TABLE documents ADD COLUMN x INTEGER",
    "VACUUM",
    "CHECKPOINT",
    "BEGIN TRANSACTION",
    "SELECT 1; DELETE FROM chunks",
    "SELECT 1;\n-- harmless, honest\nSELECT 2; ATTACH '/tmp/x.duckdb' AS x",
    "WITH t AS (SELECT 1) DELETE FROM chunks",
    "EXPLAIN ANALYZE COPY chunks TO '{out}'",
    "EXPLAIN ANALYZE DELETE FROM chunks",
    "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
]


@pytest.mark.parametrize("statement", REFUSED_BY_KIND)
def test_sql_refuses_every_statement_that_is_not_a_query(search_db, tmp_path, statement):
    out = tmp_path / "out.file"
    ext = tmp_path / "evil.duckdb_extension"
    ext.write_bytes(b"\0not an extension")
    statement = statement.format(out=out, dir=tmp_path / "export", ext=ext)
    before = fingerprint(search_db)
    result = run("sql", statement, "--db", search_db)
    assert result.exit_code == 1
    assert result.output.startswith("Error: statement ") and "only SELECT queries run here" in result.output
    assert result.output.count("\n") == 1
    assert fingerprint(search_db) == before
    assert not out.exists() and not (tmp_path / "export").exists()


# SELECTs that would reach outside the warehouse: stopped by DuckDB's sandbox (external access off,
# configuration locked), not by the statement check.
ESCAPES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd', header = false)",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM read_json('/etc/passwd')",
    "SELECT content FROM read_text('/etc/passwd')",
    "SELECT content FROM read_blob('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM query('DELETE FROM chunks')",
    "SELECT * FROM query('EXPLAIN ANALYZE COPY chunks TO ''{out}''')",
]


@pytest.mark.parametrize("statement", ESCAPES)
def test_sql_sandbox_stops_queries_that_reach_outside(search_db, tmp_path, statement):
    out = tmp_path / "out.csv"
    before = fingerprint(search_db)
    result = run("sql", statement.format(out=out), "--db", search_db)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "root:" not in result.output and "/bin/" not in result.output.replace("/etc/passwd", "")
    assert fingerprint(search_db) == before
    assert not out.exists()


def test_values_are_bound_never_pasted(search_db):
    before = fingerprint(search_db)
    hostile = ["'; DROP TABLE chunks; --", "x' OR '1'='1", "\"); DELETE FROM documents; --", "$query", "embed('x')"]
    for text in hostile:
        for mode in ("hybrid", "semantic", "keyword"):
            result = run("search", text, "--mode", mode, "--json", "--db", search_db)
            assert result.exit_code == 0, result.output
            assert all(json.loads(line)["chunk_id"] for line in result.output.splitlines())
        # As filters: pasted, "x' OR '1'='1" would match every document; bound, it matches none.
        for option in ("--doc", "--source"):
            result = run("search", "flood", option, text, "--json", "--db", search_db)
            assert result.exit_code == 0 and result.output == "", (option, text, result.output)
        result = run("query", "document_chunks", "--param", f"doc={text}", "--json", "--db", search_db)
        assert result.exit_code == 0 and result.output == ""
        result = run("related", text, "--db", search_db)
        assert result.output == f"Error: no document with id {text!r}\n"
    # Sane results: quotes and punctuation around real words still find them.
    top = json.loads(run("search", "flood'); DROP TABLE chunks; --", "--mode", "keyword", "--json", "--db", search_db).output.splitlines()[0])
    assert "flood" in top["text"].lower()
    seed = doc_id_of(search_db, "crocus-city-hall-warning")
    assert run("search", "warning", "--doc", seed, "--json", "--db", search_db).output
    assert fingerprint(search_db) == before


@pytest.fixture
def own_copy(search_db, tmp_path) -> Path:
    """A copy of the search warehouse for tests that kill processes holding it."""
    db = tmp_path / "copy.duckdb"
    shutil.copy(search_db, db)
    return db


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_ctrl_c_stops_a_long_query_and_the_next_command_works(own_copy, subprocess_env):
    db = own_copy
    proc = subprocess.Popen([NEWSINDEX, "sql", LONG_QUERY, "--db", db], env=subprocess_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # Wait until the query itself is running: the process burns a second of CPU past start-up.
        deadline = time.monotonic() + 60
        start_cpu = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                # Read-write: read-only openers share the file, only a writer finds it held.
                duckdb.connect(str(db)).close()
            except duckdb.IOException:
                start_cpu = _cpu_seconds(proc.pid) if start_cpu is None else start_cpu
                if _cpu_seconds(proc.pid) - start_cpu > 1.0:
                    break
            time.sleep(0.05)
        assert proc.poll() is None and start_cpu is not None, "the query never started"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stopped < 5, f"took {stopped:.1f}s to stop"
    assert proc.returncode == 130
    assert err == "Error: interrupted\n" and out == ""
    duckdb.connect(str(db)).close()  # free at once, read-write
    after = run("sql", "SELECT count(*) AS n FROM articles", "--json", "--db", db)
    assert after.exit_code == 0 and json.loads(after.output) == {"n": 15}


def test_enormous_result_streams_with_bounded_memory(own_copy, subprocess_env):
    db = own_copy
    started = time.monotonic()
    proc = subprocess.Popen([NEWSINDEX, "sql", "SELECT * FROM range(50_000_000)", "--json", "--db", db],
                            env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = [json.loads(proc.stdout.readline()) for _ in range(5)]
        first_rows = time.monotonic() - started
        peak = _peak_rss_mb(proc.pid)
        # What `| head -n 5` does: stop reading. The writer gets EPIPE and leaves quietly.
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first == [{"range": i} for i in range(5)]
    # 50 million rows loaded whole would be 400 MB in DuckDB and several GB as Python tuples.
    assert peak < 300, f"peak RSS {peak:.0f} MB"
    assert first_rows < 20, f"first rows after {first_rows:.1f}s"
    assert "Traceback" not in err
    duckdb.connect(str(db)).close()

    table = subprocess.run([NEWSINDEX, "sql", "SELECT * FROM range(50_000_000)", "--db", db], env=subprocess_env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "200 rows shown; truncated at --max-rows 200" in table.stdout
