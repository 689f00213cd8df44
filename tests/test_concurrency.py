"""Concurrent access to one warehouse file, with real processes.

DuckDB lets one process hold the file at a time. An ingest that meets a reader (a `newsindex sql`
session, a stock duckdb connection) waits with backoff for $NEWSINDEX_LOCK_WAIT seconds, says for
whom, and then fails with one line naming the holder's pid; if the reader lets go in time, it goes
ahead. Readers retry briefly while an ingest writes and never see half a document. Queries hold
the file only while they run.
"""

from __future__ import annotations

import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from conftest import CORPUS, SEED_FILE, warehouse_problems

from newsindex.warehouse import connection

NEWSINDEX = str(Path(sys.executable).with_name("newsindex"))
# Runs until interrupted: a hundred billion rows, ten times the ten billion that once seemed enough,
# so that on a fast machine too it still holds the file when the ingest started after it looks.
LONG_QUERY = "SELECT sum(a.range * b.range) FROM range(1000000) a, range(100000) b"


def wait_until_held_by(db: Path, pid: int, timeout: float = 60.0) -> None:
    """Poll until process `pid` holds the file (DuckDB names the holder in its lock error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Read-write: read-only openers share the file, only a writer finds it held.
            duckdb.connect(str(db)).close()
        except duckdb.IOException as err:
            if f"PID {pid})" in str(err):
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never took {db}")


def lines_of(stream) -> queue.Queue:
    """The stream's lines as they come, read by a thread (None at the end)."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue, pattern: str, timeout: float = 90.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no line matching {pattern!r}; got {seen}")


@pytest.fixture
def empty_warehouse(db) -> Path:
    with connection.opened(db):
        pass
    return db


def document_count(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM documents").fetchone()[0]
    finally:
        con.close()


def test_ingest_waits_for_a_sql_session_then_fails_naming_it(empty_warehouse, subprocess_env):
    db = empty_warehouse
    reader = subprocess.Popen([NEWSINDEX, "sql", LONG_QUERY, "--db", db], env=subprocess_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until_held_by(db, reader.pid)
        started = time.monotonic()
        ingest = subprocess.run([NEWSINDEX, "ingest", SEED_FILE, "--db", db],
                                env={**subprocess_env, "NEWSINDEX_LOCK_WAIT": "2"},
                                capture_output=True, text=True, timeout=180)  # fmt: skip
        waited = time.monotonic() - started
    finally:
        reader.send_signal(signal.SIGINT)
        reader.communicate(timeout=30)
    assert ingest.returncode == 1, ingest.stderr
    lines = ingest.stderr.strip().splitlines()
    # e.g. "Error: /x/test.duckdb: held by process 4242 (python3.11) for more than 2s; close that session and retry"
    assert re.fullmatch(rf"Error: {re.escape(str(db))}: held by process {reader.pid} \(\S+\) for more than 2s; "
                        "close that session and retry", lines[-1]), lines  # fmt: skip
    assert any(f"{db} is held by process {reader.pid}" in line and "waiting up to 2s" in line for line in lines[:-1]), lines
    assert "Traceback" not in ingest.stderr
    assert waited >= 2
    assert document_count(db) == 0


def test_ingest_goes_ahead_when_the_reader_lets_go(empty_warehouse, subprocess_env):
    db = empty_warehouse
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys\n"
         "con = duckdb.connect(sys.argv[1], read_only=True)\n"
         "print(con.execute('SELECT count(*) FROM documents').fetchone()[0], flush=True)\n"
         "sys.stdin.readline()\n"
         "con.close()\n", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    ingest = None
    try:
        assert holder.stdout.readline().strip() == "0"
        ingest = subprocess.Popen([NEWSINDEX, "ingest", SEED_FILE, "--db", db, "--json"],
                                  env={**subprocess_env, "NEWSINDEX_LOCK_WAIT": "120"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        errors = lines_of(ingest.stderr)
        wait_for_line(errors, rf"is held by process {holder.pid}\b.*waiting up to 120s")
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        out = ingest.stdout.read()
        assert ingest.wait(timeout=180) == 0, out
    finally:
        for proc in (holder, ingest):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert '"added": 1' in out
    assert document_count(db) == 1


REVISE = """
import sys
from pathlib import Path
from newsindex.flows.ingest import ingest

folder, db, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
originals = {p: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))}
for revision in range(1, rounds + 1):
    # Before each run, the reader is sure to find the previous revision whole: it says when it has.
    print(f"before revision {revision}", flush=True)
    sys.stdin.readline()
    for path, text in originals.items():
        keyword, day, rest = text.split(" ", 2)
        path.write_text(f"{keyword} {day} Revision {revision}. {rest}\\n\\nEnd of revision {revision}.\\n", encoding="utf-8")
    summary = ingest(paths=[str(folder)], db=db, batch_chars=8000)  # a few commits per run
    assert summary["updated"] == len(originals), summary
"""


def test_readers_never_see_a_half_written_document(ingest, db, tmp_path, subprocess_env):
    from newsindex.queries.search import search
    from newsindex.queries.session import session

    articles = tmp_path / "articles"
    shutil.copytree(CORPUS, articles)
    ingest(articles, batch_chars=4000)
    writer = subprocess.Popen([sys.executable, "-c", REVISE, str(articles), str(db), "2"], env=subprocess_env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    output = lines_of(writer.stdout)
    printed: list[str] = []
    reads = 0
    waiting_revisions: set[str] = set()  # what reads found while the writer waited before a run
    try:
        while writer.poll() is None:
            waiting = None  # set when the writer waits, so this read sees the previous revision whole
            while not output.empty():
                line = output.get()
                if line is not None:
                    printed.append(line)
                    waiting = waiting or re.fullmatch(r"before revision \d+", line)
            with session(db) as con:
                assert warehouse_problems(con) == []
                # Every document (and so, by the check above, every chunk) is of one revision.
                seen = {r for (r,) in con.execute(
                    "SELECT DISTINCT regexp_extract(text, 'Revision (\\d+)\\.', 1) FROM documents").fetchall()}  # fmt: skip
                if reads % 3 == 0:
                    assert len(search(con, "volcano eruption", k=3).hits) == 3
            reads += 1
            if waiting:
                waiting_revisions |= seen
                writer.stdin.write("\n")
                writer.stdin.flush()
            # A user's pace, not a tight loop: the writer needs gaps between queries to get in (a
            # reader that never pauses starves it, and the ingest fails after NEWSINDEX_LOCK_WAIT).
            time.sleep(0.25)
        writer.wait()
        while (line := output.get(timeout=30)) is not None:
            printed.append(line)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, "\n".join(printed)[-3000:]
    # The reads saw the warehouse change under them while the writer ran: the original text ('')
    # before its first run, the first revision before its second.
    assert waiting_revisions == {"", "1"}, waiting_revisions
    with session(db) as con:
        assert warehouse_problems(con) == []
        assert con.execute("SELECT count(*) FROM documents WHERE text LIKE '%Revision 2.%'").fetchone()[0] == 14


def test_queries_hold_the_file_only_while_they_run(search_db, tmp_path, subprocess_env):
    db = tmp_path / "copy.duckdb"
    shutil.copy(search_db, db)
    for command in (["sql", "SELECT count(*) FROM passages"], ["search", "flood warning", "-k", "3"]):
        done = subprocess.run([NEWSINDEX, *command, "--db", db], env=subprocess_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        duckdb.connect(str(db)).close()  # read-write, at once: no retry

    # A table is printed after the file is closed: a reader stuck writing to a full pipe (a paused
    # pager, a slow terminal) does not keep ingestion out.
    # Cells are cut to one line in a table, so it takes rows, not wide values, to fill the pipe.
    reader = subprocess.Popen([NEWSINDEX, "sql", "SELECT repeat('x', 2000) AS t FROM range(3000)", "--max-rows", "3000", "--db", db],
                              env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        ready, _, _ = select.select([reader.stdout], [], [], 60)
        assert ready, "the table was never printed"
        # Give the table time to fill the pipe (64 KiB of a ~170 KiB table): poll the process state.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _state(reader.pid) not in {"S", "D"}:
            time.sleep(0.05)
        assert reader.poll() is None, "the table fitted in the pipe; make it larger"
        duckdb.connect(str(db)).close()
    finally:
        out = reader.stdout.read()
        reader.wait(timeout=30)
    assert reader.returncode == 0
    assert b"3000 rows" in out


def _state(pid: int) -> str:
    """The process state letter from /proc: R running, S sleeping (blocked on the full pipe)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "?"


def test_lock_wait_setting(monkeypatch):
    monkeypatch.delenv("NEWSINDEX_LOCK_WAIT", raising=False)
    assert connection.lock_wait() == connection.DEFAULT_LOCK_WAIT == 60
    monkeypatch.setenv("NEWSINDEX_LOCK_WAIT", "2.5")
    assert connection.lock_wait() == 2.5
    for bad in ("soon", "-1"):
        monkeypatch.setenv("NEWSINDEX_LOCK_WAIT", bad)
        with pytest.raises(connection.WarehouseError, match=f"NEWSINDEX_LOCK_WAIT must be a number of seconds, got '{bad}'"):
            connection.lock_wait()
