"""Everyday CLI edges a new user trips over (issue 16): usage errors in one line, a closed pipe is
not a failure, contradictory options are refused, internal helper queries are not listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NEWSINDEX = Path(sys.executable).with_name("newsindex")


def run(*args, db: Path, pipe_to: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEWSINDEX_DB": str(db), "HF_HUB_OFFLINE": "1"}
    command = " ".join(map(_quote, [NEWSINDEX, *args]))
    if pipe_to:
        # pipefail: the status is newsindex's own, not head's.
        return subprocess.run(["bash", "-o", "pipefail", "-c", f"{command} | {pipe_to} >/dev/null"],
                              capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    return subprocess.run([str(NEWSINDEX), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def _quote(value) -> str:
    import shlex

    return shlex.quote(str(value))


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "x", "--since", "2024/01/01"], "Error: Invalid value for '--since': malformed date '2024/01/01'; expected YYYY-MM-DD\n"),
        (["search", "x", "--since", "2024-02-30"], "Error: Invalid value for '--since': impossible date '2024-02-30'\n"),
        (["search", "x", "--mode", "fuzzy"], None),
        (["search", "x", "--db", "/tmp"], None),
        (["search", "x", "--since", "2024-03-01", "--until", "2024-02-01"],
         "Error: --since 2024-03-01 is after --until 2024-02-01; no article can match\n"),
        (["sql", "SELECT 1", "--json", "--csv"], "Error: --json and --csv cannot be used together; choose one\n"),
        (["no-such-command"], None),
    ],
)
def test_usage_errors_are_one_line(search_db, args, message):
    result = run(*args, db=search_db)
    assert result.returncode in (1, 2) and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    if message:
        assert result.stderr == message


@pytest.mark.parametrize(
    "args",
    [
        ["sql", "SELECT * FROM range(1000000)", "--json"],
        ["sql", "SELECT * FROM range(1000000)", "--csv"],
        ["sql", "SELECT * FROM range(1000)", "--max-rows", "1000"],
        ["search", "who warned Russia", "-k", "20"],
        ["search", "who warned Russia", "-k", "20", "--json"],
        ["stats"],
    ],
)
def test_closed_pipe_exits_zero(search_db, args):
    result = run(*args, db=search_db, pipe_to="head -c 1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_real_failure_still_exits_nonzero_through_a_pipe(search_db):
    result = run("sql", "SELECT nonsense FROM nowhere", db=search_db, pipe_to="head -1")
    assert result.returncode == 1 and result.stderr.startswith("Error: ")


def test_queries_lists_what_users_run(search_db):
    listed = json.loads(run("queries", "--json", db=search_db).stdout)
    names = {q["name"] for q in listed}
    assert {"latest_articles", "semantic_search", "hybrid_search"} <= names
    assert not names & {"search_vectors", "passages_by_id", "filtered_documents"}
    text = run("queries", db=search_db).stdout
    assert "--param vector=" not in text and "--param query=" in text
    everything = {q["name"] for q in json.loads(run("queries", "--all", "--json", db=search_db).stdout)}
    assert {"search_vectors", "passages_by_id"} <= everything


def test_tables_fit_80_columns_with_headers_whole(search_db):
    env_db = search_db
    wide = run("sql", "SELECT * FROM passages LIMIT 2", db=env_db)
    assert wide.returncode == 0, wide.stderr
    lines = wide.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines)
    # Too many columns for 80: one field a line, every header whole, the vector elided.
    for header in ("chunk_id", "source_path", "token_count", "embedding"):
        assert any(line.startswith(header) for line in lines), header
    assert "[384 floats]" in wide.stdout and "0." not in wide.stdout.split("embedding")[-1].split("\n")[0]
    narrow = run("sql", "SELECT title, published, lead FROM articles ORDER BY title", db=env_db)
    rows = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in rows)
    assert any("title" in line and "published" in line and "lead" in line for line in rows)
    assert "…" in narrow.stdout  # long leads are cut, not wrapped onto more lines
    assert len(rows) == 15 + 5  # 15 articles, one line each, plus borders, header and count
    stats = run("stats", db=env_db).stdout
    import re

    assert re.search(r"│ \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} │", stats)  # started_at on one line


def test_an_empty_folder_is_named_in_a_warning(ingest, tmp_path):
    empty = tmp_path / "news"
    empty.mkdir()
    summary = ingest(empty)
    assert summary["seen"] == 0 and summary["failed"] == 0
    assert f"{empty}: no article files found under it (.txt, .md, .markdown, .jsonl)" in summary["warnings"]


def test_runs_name_their_prefect_flow_run_and_say_when_files_failed(ingest, tmp_path, prefect_server):
    import asyncio

    from prefect.client.orchestration import get_client

    folder = tmp_path / "news"
    folder.mkdir()
    (folder / "broken.txt").write_text("date 2024-02-30 Impossible.")
    first = ingest(folder)
    assert first["failed"] == 1 and first["repeated_failures"] == 0
    assert first["flow_run_url"] is None or first["flow_run_url"].endswith(f"/runs/flow-run/{first['flow_run_id']}")

    async def state_of(run_id):
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state

    state = asyncio.run(state_of(first["flow_run_id"]))
    assert state.is_completed() and state.message == "1 input(s) failed; see the ingest-summary artifact"
    # The same bad file, unchanged: reported once, then counted (a schedule would repeat it).
    second = ingest(folder)
    assert second["failed"] == 1 and second["repeated_failures"] == 1
    (folder / "broken.txt").write_text("date 2024-02-31 Still impossible.")
    third = ingest(folder)
    assert third["failed"] == 1 and third["repeated_failures"] == 0


def test_delete_removes_documents_from_every_index_at_once(ingest, db, tmp_path):
    import duckdb

    from conftest import CORPUS

    ingest(CORPUS)
    con = duckdb.connect(str(db), read_only=True)
    doomed, keep = [r[0] for r in con.execute("SELECT doc_id FROM documents ORDER BY doc_id LIMIT 2").fetchall()]
    word = con.execute("SELECT title FROM documents WHERE doc_id = ?", [doomed]).fetchone()[0].split()[0]
    before = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    con.close()

    def ids(mode):
        result = run("search", word, "--mode", mode, "-k", "50", "--json", db=db)
        assert result.returncode == 0, result.stderr
        return {json.loads(line)["doc_id"] for line in result.stdout.splitlines()}

    assert doomed in ids("keyword") and doomed in ids("semantic")
    refused = run("delete", doomed, "no-such-doc", db=db)
    assert refused.returncode == 1 and refused.stderr.startswith("Error: ") and "'no-such-doc'" in refused.stderr
    assert doomed in ids("keyword")  # all or nothing: the known id stayed too
    done = run("delete", doomed, "--json", db=db)
    assert done.returncode == 0, done.stderr
    assert [d["doc_id"] for d in json.loads(done.stdout)["deleted"]] == [doomed]
    for mode in ("keyword", "semantic", "hybrid"):
        assert doomed not in ids(mode), mode
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == before - 1
    assert con.execute("SELECT count(*) FROM chunks WHERE doc_id = ?", [doomed]).fetchone()[0] == 0
    from newsindex.warehouse import vector_file

    # The copy that the searches above read was updated with the delete, not left stale.
    copy = vector_file.open_current(con, db)
    assert copy is not None and vector_file._meta(db)["dead"] > 0
    con.close()
    assert keep in ids("semantic") or keep


def test_float_parameters_refuse_nan_and_infinity(search_db):
    for value in ("nan", "inf", "-inf"):
        result = run("query", "hybrid_search", "--param", "query=flood", "--param", f"semantic_weight={value}", db=search_db)
        assert result.returncode == 1
        assert result.stderr == f"Error: hybrid_search: parameter semantic_weight must be a float, got '{value}'\n"
