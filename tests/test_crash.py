"""Crashes: a real ingest process killed with SIGKILL while parsing, between embedding batches,
inside the write transaction and right after a commit leaves a warehouse that opens, holds every
document wholly old or wholly new, and converges to an uninterrupted run's state when run again.

The kill points are newsindex.faults points, switched on in the subprocess by $NEWSINDEX_FAULT.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import CORPUS, warehouse_problems

from newsindex.warehouse import connection, keyword as keyword_index, runs

# Small batches: the 15-article corpus becomes several batches, so a crash can fall between them.
BATCH_CHARS = 4000
INGEST = (
    "import sys\n"
    "from newsindex.flows.ingest import ingest\n"
    "ingest(paths=[sys.argv[1]], db=sys.argv[2], batch_chars=int(sys.argv[3]))\n"
)

DOC_COLUMNS = "doc_id, source_path, format, line, title, lead, published, url, text, content_hash, chunk_key"
CHUNK_COLUMNS = "chunk_id, ordinal, text, char_start, char_end, token_count, model"


@dataclass
class State:
    """A canonical dump: per document, its row and its chunks (no timestamps), and every vector."""

    docs: dict[str, tuple]
    vectors: dict[str, np.ndarray]


def dump(db: Path) -> State:
    con = duckdb.connect(str(db), read_only=True)
    try:
        chunks: dict[str, list] = {}
        for row in con.execute(f"SELECT doc_id, {CHUNK_COLUMNS} FROM chunks ORDER BY doc_id, ordinal").fetchall():
            chunks.setdefault(row[0], []).append(row[1:])
        docs = {
            row[0]: (row, tuple(chunks.get(row[0], ())))
            for row in con.execute(f"SELECT {DOC_COLUMNS} FROM documents").fetchall()
        }
        vectors = {cid: np.asarray(v, dtype=np.float32) for cid, v in con.execute("SELECT chunk_id, embedding FROM chunks").fetchall()}
        vectors |= {f"doc:{d}": np.asarray(v, dtype=np.float32) for d, v in con.execute("SELECT doc_id, doc_embedding FROM documents").fetchall()}
        return State(docs, vectors)
    finally:
        con.close()


def revise(folder: Path) -> None:
    """Change every article at its start and its end, so every chunk of every document changes."""
    for path in sorted(folder.glob("*.txt")):
        keyword, day, rest = path.read_text(encoding="utf-8").split(" ", 2)  # "date YYYY-MM-DD lead..."
        path.write_text(f"{keyword} {day} Updated report. {rest}\n\nFigures were revised on Monday.\n", encoding="utf-8")


@dataclass
class Versions:
    articles: Path
    old_db: Path  # the corpus ingested, before the revision: the starting point of every crash
    old: State
    new: State  # the revised corpus, ingested over old_db without interruption


@pytest.fixture(scope="module")
def versions(prefect_server, tmp_path_factory) -> Versions:
    from newsindex.flows.ingest import ingest

    root = tmp_path_factory.mktemp("crash")
    articles = root / "articles"
    shutil.copytree(CORPUS, articles)
    old_db = root / "old.duckdb"
    assert ingest(paths=[str(articles)], db=str(old_db), batch_chars=BATCH_CHARS)["added"] == 14
    revise(articles)
    new_db = root / "new.duckdb"
    shutil.copy(old_db, new_db)
    summary = ingest(paths=[str(articles)], db=str(new_db), batch_chars=BATCH_CHARS)
    assert summary["updated"] == 14 and summary["failed"] == 0
    versions = Versions(articles, old_db, dump(old_db), dump(new_db))
    assert set(versions.old.docs) == set(versions.new.docs)
    # Every document differs between the versions, so a mix of the two would show.
    for doc_id, (row, chunks) in versions.new.docs.items():
        old_row, old_chunks = versions.old.docs[doc_id]
        assert row != old_row and not set(chunks) & set(old_chunks)
    return versions


def crash(versions: Versions, db: Path, fault: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    shutil.copy(versions.old_db, db)
    proc = subprocess.run(
        [sys.executable, "-c", INGEST, str(versions.articles), str(db), str(BATCH_CHARS)],
        env={**env, "NEWSINDEX_FAULT": fault}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, f"{fault}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


# (fault point, whether some documents are already new when it fires)
POINTS = [
    ("parse:3", False),  # parsing the third file: nothing written yet
    # The fourth of five batches (3 articles each at BATCH_CHARS): the writer takes batch k off a
    # queue of one only after committing batch k-1, so handing over batch 3 waits for batch 1's
    # commit, and the kill before batch 4 is handed over finds batch 1 committed, however fast the
    # encoder. At "embed:3" batch 1 was only taken, and a fast encoder (OpenVINO bf16) could
    # finish batch 3 before that commit; "embed:2" failed that way once.
    ("embed:4", True),  # fourth batch embedded, not written; at least the first is committed
    ("write:2", True),  # second batch's rows deleted and inserted, not committed
    ("commit:2", True),  # right after the second batch's commit
]


@pytest.mark.parametrize("fault, some_new", POINTS, ids=[p for p, _ in POINTS])
def test_killed_ingest_leaves_whole_documents_and_rerun_converges(versions, subprocess_env, tmp_path, fault, some_new):
    from newsindex.flows.ingest import ingest
    from newsindex.queries.search import search

    db = tmp_path / "warehouse.duckdb"
    crash(versions, db, fault, subprocess_env)

    # The warehouse opens read-write (nothing to repair) and is consistent.
    with connection.opened(db) as con:
        assert warehouse_problems(con) == []
        index_current = keyword_index.search_index_is_current(con)
        runs = con.execute("SELECT status FROM ingest_runs ORDER BY started_at").fetchall()
    assert runs == [("completed",), ("running",)]
    state = dump(db)
    assert set(state.docs) == set(versions.old.docs)
    new = {doc for doc, rows in state.docs.items() if rows == versions.new.docs[doc]}
    old = {doc for doc, rows in state.docs.items() if rows == versions.old.docs[doc]}
    assert new | old == set(state.docs), f"documents neither old nor new: {set(state.docs) - new - old}"
    if some_new:
        assert 0 < len(new) < len(state.docs), "the crash should fall between batches"
    else:
        assert new == set()
    # The keyword index is written in the chunks' own transaction: a kill leaves both at the same
    # version, exactly what a fresh build from the stored chunks gives.
    assert index_current and not search(db, "volcano", mode="keyword").warnings
    with connection.opened(db) as con:
        assert keyword_index.problems(con) == []

    # A re-run finishes the job: exactly the state of the uninterrupted run.
    summary = ingest(paths=[str(versions.articles)], db=str(db), batch_chars=BATCH_CHARS)
    assert summary["status"] == "completed" and summary["failed"] == 0
    assert summary["updated"] == len(state.docs) - len(new) and summary["unchanged"] == len(new)
    assert summary["search_index_rebuilt"] is False  # nothing to repair: it never fell behind
    final = dump(db)
    assert final.docs == versions.new.docs
    assert final.vectors.keys() == versions.new.vectors.keys()
    for key, vector in final.vectors.items():
        # Batches group texts differently from the uninterrupted run; padding moves the last bits.
        np.testing.assert_allclose(vector, versions.new.vectors[key], atol=1e-5, err_msg=key)
    with connection.opened(db) as con:
        assert warehouse_problems(con) == []
        assert keyword_index.search_index_is_current(con) and keyword_index.problems(con) == []
        # The killed run is not left looking as if it were still going.
        assert con.execute("SELECT status FROM ingest_runs ORDER BY started_at").fetchall() == [
            ("completed",), ("crashed",), ("completed",)
        ]
    assert not search(db, "volcano", mode="keyword").warnings


def test_only_runs_of_dead_processes_are_marked_crashed(db):
    import os
    import socket

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    with connection.opened(db) as con:
        for run_id, pid, host in [("mine", os.getpid(), socket.gethostname()), ("dead", dead_pid, socket.gethostname()),
                                  ("elsewhere", dead_pid, "another-host"), ("legacy", None, None)]:  # fmt: skip
            con.execute("INSERT INTO ingest_runs (run_id, status, paths, started_at, pid, host)"
                        " VALUES (?, 'running', [], current_timestamp, ?, ?)", [run_id, pid, host])  # fmt: skip
        assert sorted(runs.mark_crashed_runs(con)) == ["dead", "legacy"]
        assert con.execute("SELECT run_id, status FROM ingest_runs ORDER BY run_id").fetchall() == [
            ("dead", "crashed"), ("elsewhere", "running"), ("legacy", "crashed"), ("mine", "running")
        ]
