"""Read-only SQL with embed(), named queries, and the documented views, through the real CLI."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pytest
from click.testing import CliRunner
from conftest import SEED_FILE, doc_id_of

from newsindex.cli import cli
from newsindex.queries import named


def run(*args, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def counts(db) -> tuple:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks)").fetchone()
    finally:
        con.close()


def test_sql_prints_table_json_and_csv(search_db):
    table = run("sql", "SELECT doc_id, title FROM articles ORDER BY published LIMIT 2", "--db", search_db).output
    assert "Volcano eruption" in table and "2 rows" in table
    lines = run("sql", "SELECT title, published FROM articles ORDER BY published", "--json", "--db", search_db).output.splitlines()
    assert len(lines) == 15 and json.loads(lines[0]) == {"title": "Volcano eruption indonesia", "published": "2023-11-26"}
    rows = list(csv.reader(io.StringIO(run("sql", "SELECT count(*) AS n FROM passages", "--csv", "--db", search_db).output)))
    assert rows[0] == ["n"] and int(rows[1][0]) == counts(search_db)[1]


def test_embed_in_sql(search_db):
    sql = ("SELECT title, array_cosine_similarity(embedding, embed('who warned Russia')) AS s "
           "FROM chunks JOIN documents USING (doc_id) ORDER BY s DESC LIMIT 5")  # fmt: skip
    rows = [json.loads(line) for line in run("sql", sql, "--json", "--db", search_db).output.splitlines()]
    assert len(rows) == 5 and rows[0]["title"] == "Crocus city hall warning"
    assert rows[0]["s"] >= rows[-1]["s"]
    dims = run("sql", "SELECT len(embed('x')) AS d, embed(NULL) IS NULL AS n", "--json", "--db", search_db).output
    assert json.loads(dims) == {"d": 384, "n": True}


@pytest.mark.parametrize(
    "statement",
    ["DROP TABLE chunks", "INSERT INTO documents SELECT * FROM documents", "DELETE FROM chunks",
     "UPDATE documents SET title = 'x'", "CREATE TABLE t (a INT)", "SELECT 1; DROP TABLE chunks",
     "ATTACH '/tmp/other.duckdb' AS o", "COPY chunks TO '/tmp/out.csv'", "INSTALL httpfs", "LOAD httpfs",
     "SET enable_external_access = true", "CHECKPOINT"],
)  # fmt: skip
def test_sql_refuses_writes(search_db, statement):
    before = counts(search_db)
    result = run("sql", statement, "--db", search_db, ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "only SELECT queries run here" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert counts(search_db) == before


def test_sql_cannot_read_other_files(search_db, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    result = run("sql", f"SELECT * FROM read_csv('{secret}')", "--db", search_db, ok=False)
    assert result.exit_code == 1 and "Error:" in result.output and "1" not in result.output.split("Error:")[0]


def test_sql_from_file_and_errors(search_db, tmp_path):
    script = tmp_path / "q.sql"
    script.write_text("-- a comment\nSELECT count(*) AS documents FROM articles;\n")
    assert json.loads(run("sql", "-f", script, "--json", "--db", search_db).output) == {"documents": 15}
    bad = run("sql", "SELEC nonsense", "--db", search_db, ok=False)
    assert bad.exit_code == 1 and bad.output.startswith("Error: Parser Error")
    missing = run("sql", "SELECT * FROM nope", "--db", search_db, ok=False)
    assert missing.output.startswith("Error: Catalog Error: Table with name nope does not exist")


def test_max_rows_limits_the_table_not_json(search_db):
    out = run("sql", "SELECT range AS i FROM range(500)", "--max-rows", "10", "--db", search_db).output
    assert "10 rows shown; truncated at --max-rows 10" in out
    assert len(run("sql", "SELECT range AS i FROM range(500)", "--json", "--db", search_db).output.splitlines()) == 500


def test_every_named_query_runs(search_db):
    seed = doc_id_of(search_db, SEED_FILE.stem)
    values = {"query": "flood", "since": "2024-01-01", "until": "2024-12-31", "doc": seed, "k": "3", "limit": "5", "chunk_ids": f"['{seed}#0']"}
    listed = json.loads(run("queries", "--all", "--json").output)
    assert {q["name"] for q in listed} == set(named.all_queries())
    assert len(listed) >= 10
    for query in named.all_queries().values():
        args = []
        for param in query.params:
            if param.required:
                args += ["--param", f"{param.name}={values[param.name]}"]
        out = run("query", query.name, *args, "--json", "--db", search_db).output
        rows = [json.loads(line) for line in out.splitlines()]
        # This warehouse had no rejected inputs; every other query has something to show.
        assert rows or query.name == "ingest_errors", f"{query.name} returned nothing"
        assert query.file.endswith(".sql") and query.description


def test_named_query_headers_parse():
    for query in named.all_queries().values():
        assert query.sql.startswith(f"-- name: {query.name}\n-- description: ")
        for param in query.params:
            assert f"${param.name}" in query.sql, f"{query.name} declares {param.name} but never uses it"


def test_hostile_parameter_is_bound_not_pasted(search_db):
    before = counts(search_db)
    hostile = "'; DROP TABLE chunks; --"
    out = run("query", "document_chunks", "--param", f"doc={hostile}", "--json", "--db", search_db).output
    assert out == ""
    out = run("search", hostile, "--json", "--db", search_db).output
    assert len(out.splitlines()) == 10
    assert counts(search_db) == before


def test_named_query_parameter_errors(search_db):
    bad_date = run("query", "articles_between", "--param", "since=yesterday", "--param", "until=2024-01-01", "--db", search_db, ok=False)
    assert bad_date.output == "Error: articles_between: parameter since must be a date, got 'yesterday'\n"
    missing = run("query", "articles_between", "--param", "since=2024-01-01", "--db", search_db, ok=False)
    assert missing.output.startswith("Error: articles_between: missing parameter until")
    unknown = run("query", "latest_articles", "--param", "colour=red", "--db", search_db, ok=False)
    assert unknown.output.startswith("Error: latest_articles: unknown parameter colour")
    assert run("query", "nope", "--db", search_db, ok=False).output == "Error: no query named 'nope'; `newsindex queries` lists them\n"


def test_search_cli_outputs(search_db):
    out = run("search", "Crocus City Hall warning", "-k", "3", "--db", search_db).output
    assert "Crocus city hall warning" in out and "semantic #" in out and "3 results · hybrid" in out
    rows = [json.loads(line) for line in run("search", "flood", "--per-doc", "-k", "4", "--json", "--db", search_db).output.splitlines()]
    assert len(rows) == 4 and len({r["doc_id"] for r in rows}) == 4
    assert {"doc_id", "chunk_id", "char_start", "char_end", "score", "semantic_rank", "keyword_rank", "semantic_score", "keyword_score"} <= set(rows[0])
    table = list(csv.DictReader(io.StringIO(run("search", "flood", "-k", "2", "--csv", "--db", search_db).output)))
    assert len(table) == 2 and table[0]["rank"] == "1" and table[0]["chunk_id"].startswith(table[0]["doc_id"] + "#")
    none = run("search", "flood", "--until", "1990-01-01", "--db", search_db).output
    assert "No results" in none
    assert run("search", "x", "--since", "soon", "--db", search_db, ok=False).exit_code == 2


def test_views_work_from_a_plain_duckdb_client(search_db):
    con = duckdb.connect(str(search_db), read_only=True)
    try:
        articles = con.execute("SELECT doc_id, title, published, chunks FROM articles ORDER BY published DESC LIMIT 1").fetchone()
        passages = con.execute("SELECT count(*), count(DISTINCT doc_id) FROM passages").fetchone()
    finally:
        con.close()
    assert articles[1] == "Wildfire evacuation canada" and articles[3] > 0
    assert passages[1] == 15 and passages[0] == counts(search_db)[1]


def test_eval_and_stats_commands(search_db):
    from conftest import EVAL_SET

    report = json.loads(run("eval", EVAL_SET, "--json", "--db", search_db).output)
    assert [m["mode"] for m in report["modes"]] == ["hybrid", "semantic", "keyword"]
    assert report["queries"] == 30
    table = run("eval", EVAL_SET, "--mode", "keyword", "--db", search_db).output
    assert "hit@1" in table and "keyword" in table
    stats = json.loads(run("stats", "--json", "--db", search_db).output)
    assert stats["documents"] == 15 and stats["models"][0]["dim"] == 384
