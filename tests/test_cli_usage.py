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
