"""One ingestion writes a warehouse at a time: an overlapping run waits and says so, gives up after
its bound naming the holder, and two real runs started together leave one copy of everything."""

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
from conftest import CORPUS

from newsindex.warehouse import connection

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
    with connection.ingest_lock(db):
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
    with stderr_file.open("w") as err, connection.ingest_lock(db):
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


# --- the lock file itself: never followed, never truncated, and deleting it changes nothing --------


def _refused(db: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([NEWSINDEX, "ingest", str(CORPUS), "--db", str(db)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_a_symlink_hard_link_or_pipe_at_the_lock_is_refused_and_its_target_untouched(tmp_path, subprocess_env):
    precious = tmp_path / "precious.txt"
    precious.write_text("a file the ingesting user can write, which the lock must never touch\n")
    before = precious.read_bytes()
    cases = {
        "symlink.duckdb": ("is a symlink", lambda lock: lock.symlink_to(precious)),
        "hardlink.duckdb": ("has 2 hard links", lambda lock: os.link(precious, lock)),
        "pipe.duckdb": ("is a named pipe, not a regular file", lambda lock: os.mkfifo(lock)),
    }
    for name, (problem, make) in cases.items():
        db = tmp_path / name
        lock = Path(f"{db}.ingest.lock")
        make(lock)
        result = _refused(db, subprocess_env)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"Error: {lock}: {problem}; refusing to use it as a lock file (remove it)"
        ), name
        assert not db.exists(), name
    assert precious.read_bytes() == before, "the lock must never truncate or write what it points at"


def _holder_info(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text() or "null")
    except (OSError, ValueError):
        return None


def test_deleting_the_lock_file_while_held_keeps_others_out(tmp_path, subprocess_env):
    """A real process holds the lock; its file is deleted; a run started then must wait for the
    holder (here it gives up, naming why), and goes ahead once the holder is done."""
    db = tmp_path / "held.duckdb"
    lock = Path(f"{db}.ingest.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom newsindex.warehouse import connection\n"
         f"with connection.ingest_lock({str(db)!r}):\n    print('held', flush=True)\n    sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=subprocess_env,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        lock.unlink()
        blocked = subprocess.run([NEWSINDEX, "ingest", str(CORPUS), "--db", str(db), "--wait", "2"],
                                 capture_output=True, text=True, env=subprocess_env, timeout=300)  # fmt: skip
        assert blocked.returncode == 1, blocked.stderr
        assert blocked.stderr.strip().splitlines()[-1] == (
            f"Error: {db}: another ingest run (its lock file {lock.name} was removed) is still writing after 2s;"
            " try again later"
        )
        assert tables(db) == set(), "the blocked run must not have written"
    finally:
        holder.communicate("done\n", timeout=60)
    assert holder.returncode == 0


def _stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] in "Tt"


def test_two_runs_with_the_lock_file_deleted_between_them_store_one_copy(prefect_server, tmp_path):
    """The reproduction from the issue: deleting the lock file during a run let a second run go
    beside it, which stored every document twice. The first run is stopped after its first embedded
    batch (lock held, nothing written yet), so the second is sure to start while it runs."""
    folder = tmp_path / "news"
    shutil.copytree(CORPUS, folder)
    db = tmp_path / "deleted.duckdb"
    lock = Path(f"{db}.ingest.lock")
    first = subprocess.Popen(
        [NEWSINDEX, "ingest", str(folder), "--db", str(db), "--json"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NEWSINDEX_FAULT": "embed", "NEWSINDEX_FAULT_SIGNAL": "STOP"},
    )  # fmt: skip
    second = None
    try:
        wait_for(lambda: _stopped(first.pid) or first.poll() is not None, 240, "the first run to stop at its first batch")
        assert first.poll() is None, first.communicate()[1]
        assert (_holder_info(lock) or {}).get("pid") == first.pid
        lock.unlink()
        stderr_file = tmp_path / "second.err"
        with stderr_file.open("w") as err:
            second = run_ingest(folder, db, stderr=err)
            wait_for(lambda: "waiting for another ingest run (its lock file" in stderr_file.read_text()
                     or second.poll() is not None, 240, "the second run to say it waits")  # fmt: skip
            assert second.poll() is None, f"the second run must wait for the first: {stderr_file.read_text()}"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    second_out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, stderr_file.read_text()
    files = len(list(folder.glob("*.txt")))
    assert json.loads(out)["added"] == files
    assert json.loads(second_out)["added"] == 0
    assert json.loads(second_out)["unchanged"] == files
    per_file, repeated = copies(db)
    assert len(per_file) == files and set(per_file.values()) == {1}
    assert repeated == 0
