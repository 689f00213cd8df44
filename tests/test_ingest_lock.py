"""One ingestion writes a warehouse at a time: an overlapping run waits and says so, gives up after
its bound naming the holder, and two real runs started together leave one copy of everything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from conftest import CORPUS

from newsindex.warehouse import store

NEWSINDEX = str(Path(sys.executable).with_name("newsindex"))


def run_ingest(folder: Path, db: Path, *extra: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [NEWSINDEX, "ingest", str(folder), "--db", str(db), "--json", *extra],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=dict(os.environ),
    )  # fmt: skip


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def copies(db: Path) -> tuple[dict[str, int], int]:
    """Documents per source file, and chunk rows that repeat a (doc, ordinal) pair."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        per_file = dict(con.execute("SELECT source_path, count(*) FROM documents GROUP BY ALL").fetchall())
        repeated = con.execute(
            "SELECT count(*) FROM (SELECT doc_id, ordinal FROM chunks GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        return per_file, repeated
    finally:
        con.close()


def tables(db: Path) -> set[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


def test_a_run_gives_up_after_its_bound_naming_the_holder(prefect_server, tmp_path):
    db = tmp_path / "busy.duckdb"
    with store.ingest_lock(db):
        done = run_ingest(CORPUS, db, "--wait", "1")
        out, err = done.communicate(timeout=300)
    assert done.returncode == 1
    assert err.strip().splitlines()[-1].startswith(f"Error: {db}: ingest run (pid {os.getpid()}, since ")
    assert err.strip().endswith("is still writing after 1s; try again later")
    # The holder (this process) made an empty warehouse file to lock; the run that never got the
    # lock must not have written anything into it.
    assert tables(db) == set(), "a run that never got the lock must not have touched the warehouse"


def test_an_overlapping_run_waits_says_so_and_then_finishes(prefect_server, tmp_path):
    db = tmp_path / "waiting.duckdb"
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("w") as err, store.ingest_lock(db):
        waiting = run_ingest(CORPUS, db, stderr=err)
        wait_for(lambda: f"newsindex: {db}: waiting for ingest run (pid {os.getpid()}" in stderr_file.read_text(),
                 240, "the second run to report that it waits")  # fmt: skip
        assert waiting.poll() is None, "it must wait while the lock is held, not fail"
    out, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, stderr_file.read_text()
    assert json.loads(out)["added"] == len(list(CORPUS.glob("*.txt")))


def test_two_runs_started_together_store_one_copy_of_each_document(prefect_server, tmp_path):
    folder = tmp_path / "news"
    shutil.copytree(CORPUS, folder)
    db = tmp_path / "together.duckdb"
    first, second = run_ingest(folder, db), run_ingest(folder, db)
    results = []
    for process in (first, second):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    files = len(list(folder.glob("*.txt")))
    # Whichever ran second found everything already stored and embedded nothing again.
    assert sorted(r["added"] for r in results) == [0, files]
    assert sorted(r["unchanged"] for r in results) == [0, files]
    per_file, repeated = copies(db)
    assert len(per_file) == files and set(per_file.values()) == {1}
    assert repeated == 0
