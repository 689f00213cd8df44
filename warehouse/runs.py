"""Ingest runs: who started each one, its counters when it finished, the inputs it rejected, runs
that died unfinished, and the figures `newsindex stats` shows."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Sequence

import duckdb

from newsindex.warehouse.connection import transaction

log = logging.getLogger("newsindex.warehouse")

def start_run(con: duckdb.DuckDBPyConnection, paths: Sequence[str], flow_run_id: str | None, model: str) -> str:
    mark_crashed_runs(con)
    run_id = uuid.uuid4().hex[:12]
    con.execute(
        "INSERT INTO ingest_runs (run_id, flow_run_id, status, paths, started_at, model, pid, host)"
        " VALUES (?, ?, 'running', ?, current_timestamp, ?, ?, ?)",
        [run_id, flow_run_id, list(paths), model, os.getpid(), socket.gethostname()],
    )
    return run_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_crashed_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Runs still 'running' whose process on this host is gone (killed, power cut) become 'crashed':
    a run that never finished must not look as if it were still going. Runs of other hosts, and of
    live processes (an overlapping ingest), are left alone."""
    here = socket.gethostname()
    dead = [
        run_id
        for run_id, pid, host in con.execute("SELECT run_id, pid, host FROM ingest_runs WHERE status = 'running'").fetchall()
        if pid is None or (host == here and not _alive(pid))
    ]
    if dead:
        con.execute("UPDATE ingest_runs SET status = 'crashed' WHERE run_id IN (SELECT unnest(?))", [dead])
        log.warning("marked %d unfinished ingest run(s) as crashed: %s", len(dead), ", ".join(dead))
    return dead


# The one list of a run's counters, each a column of ingest_runs (migration 001): what finish_run
# records, the ingest summary and its Prefect artifact report, and `stats` shows (the documents'
# counts and the chunks embedded).
DOCUMENT_COUNTERS = ("seen", "added", "updated", "unchanged", "failed", "removed")
WORK_COUNTERS = ("chunks_embedded", "tokens_embedded", "parse_seconds", "embed_seconds", "write_seconds")
RUN_COUNTERS = DOCUMENT_COUNTERS + WORK_COUNTERS
# What each part of a run (an embedding task, a Dask part) counts and the run adds up: all but the
# files seen, the failures and the removals, which the flow counts itself.
PART_COUNTERS = tuple(name for name in RUN_COUNTERS if name not in ("seen", "failed", "removed"))
_SHOWN_COUNTERS = (*DOCUMENT_COUNTERS, "chunks_embedded")


def previous_failures(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[dt.datetime | None, set[tuple[str, int | None, str]]]:
    """When the last finished run before `run_id` started, and the inputs it rejected."""
    row = con.execute(
        "SELECT run_id, started_at FROM ingest_runs WHERE run_id <> ? AND finished_at IS NOT NULL"
        " ORDER BY started_at DESC LIMIT 1",
        [run_id],
    ).fetchone()
    if row is None:
        return None, set()
    errors = con.execute("SELECT source_path, line, message FROM ingest_errors WHERE run_id = ?", [row[0]]).fetchall()
    return row[1], {(path, line, message) for path, line, message in errors}


def finish_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    counts: dict[str, float],
    errors: Sequence[tuple[str, int | None, str]],
    status: str,
) -> None:
    assignments = ", ".join(f"{name} = ?" for name in RUN_COUNTERS)
    with transaction(con):
        con.execute(
            f"UPDATE ingest_runs SET {assignments}, status = ?, finished_at = current_timestamp,"
            " total_seconds = epoch(current_timestamp - started_at) WHERE run_id = ?",
            [counts.get(name, 0) for name in RUN_COUNTERS] + [status, run_id],
        )
        if errors:
            con.executemany(
                "INSERT INTO ingest_errors VALUES (?, ?, ?, ?)", [[run_id, path, line, msg] for path, line, msg in errors]
            )


def stats(con: duckdb.DuckDBPyConnection, last_runs: int = 5) -> dict:
    documents, dated, first, last = con.execute(
        "SELECT count(*), count(published), min(published), max(published) FROM documents"
    ).fetchone()
    chunks, tokens = con.execute("SELECT count(*), coalesce(sum(token_count), 0) FROM chunks").fetchone()
    models = [
        {"name": name, "fingerprint": fp, "dim": dim, "chunks": n}
        for fp, name, dim, n in con.execute(
            "SELECT m.fingerprint, m.name, m.dim, count(*) FROM chunks c JOIN models m ON c.model = m.fingerprint"
            " GROUP BY ALL ORDER BY 4 DESC"
        ).fetchall()
    ]
    runs = con.execute(
        f"SELECT run_id, status, started_at, {', '.join(_SHOWN_COUNTERS)},"
        " round(total_seconds, 2) FROM ingest_runs ORDER BY started_at DESC LIMIT ?",
        [last_runs],
    ).fetchall()
    run_columns = ["run_id", "status", "started_at", *_SHOWN_COUNTERS, "seconds"]
    return {
        "documents": documents,
        "dated_documents": dated,
        "first_published": first.isoformat() if first else None,
        "last_published": last.isoformat() if last else None,
        "chunks": chunks,
        "tokens": int(tokens),
        "models": models,
        "runs": [
            {k: (v.isoformat(sep=" ", timespec="seconds") if isinstance(v, dt.datetime) else v) for k, v in zip(run_columns, row)}
            for row in runs
        ],
    }
