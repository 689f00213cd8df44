"""Ingest at the edges of what it accepts: option values out of range, a warehouse folder that
cannot be written, a disk full before the run starts. Each ends in one line and a warehouse exactly
as it was, never a traceback. Real `newsindex` processes, real read-only folders, a real full tmpfs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import SEEDS, write
from test_prune import _without_file_permission_override

from newsindex.flows.ingest import OptionError, check_options

NEWSINDEX = str(Path(sys.executable).with_name("newsindex"))
AS_ROOT = os.geteuid() == 0


def newsindex(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([NEWSINDEX, *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=300, **kwargs)


def documents(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM documents").fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--max-tokens", "0"], "Invalid value for '--max-tokens': 0 is not in the range x>=1."),
        (["--max-tokens", "-5"], "Invalid value for '--max-tokens': -5 is not in the range x>=1."),
        (["--overlap", "-1"], "Invalid value for '--overlap': -1 is not in the range x>=0."),
        (["--wait", "-1"], "Invalid value for '--wait': -1.0 is not in the range x>=0."),
        (["--wait", "nan"], "Invalid value for '--wait': must be a number of seconds, not nan"),
    ],
)
def test_option_values_out_of_range_are_one_line(option, message, tmp_path):
    db = tmp_path / "w.duckdb"
    result = newsindex("ingest", str(SEEDS), "--db", str(db), *option)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in result.stderr
    assert not db.exists()


def test_the_flow_checks_the_same_bounds_for_deployments_and_the_api():
    check_options(1, 0, 0.0, 1, 1)
    for bad, named in [((0, 1, 1.0, 1, 1), "max_tokens"), ((128, -1, 1.0, 1, 1), "overlap_sentences"),
                       ((128, 1, float("nan"), 1, 1), "wait"), ((128, 1, -2.0, 1, 1), "wait"),
                       ((128, 1, 1.0, 0, 1), "batch_chars"), ((128, 1.5, 1.0, 1, 1), "overlap_sentences")]:  # fmt: skip
        with pytest.raises(OptionError, match=named):
            check_options(*bad)


@pytest.fixture(scope="module")
def small_warehouse(search_db) -> Path:
    return search_db


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.endswith(".lock")}


@pytest.mark.parametrize("lock_exists", [False, True])
def test_a_read_only_warehouse_folder(small_warehouse, tmp_path, subprocess_env, lock_exists):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "w.duckdb"
    shutil.copy(small_warehouse, db)
    if lock_exists:
        Path(f"{db}.ingest.lock").touch()
    news = write(tmp_path / "news" / "new.txt", "date 2024-06-01 An article for a warehouse that cannot be written.").parent
    before = _snapshot(folder)
    folder.chmod(0o555)
    # Root ignores file modes; its child drops that override, like any user's process.
    kwargs = {"preexec_fn": _without_file_permission_override} if AS_ROOT else {}
    try:
        ingest = newsindex("ingest", str(news), "--db", str(db), env=subprocess_env, **kwargs)
        stats = newsindex("stats", "--db", str(db), env=subprocess_env, **kwargs)
    finally:
        folder.chmod(0o755)
    assert "Traceback" not in ingest.stderr, ingest.stderr
    assert ingest.returncode == 1
    last = ingest.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and str(folder) in last and "ermission denied" in last, last
    assert _snapshot(folder) == before
    # Readers need no write access: the warehouse is still searchable where it lies.
    assert stats.returncode == 0, stats.stderr
    assert "15 documents" in stats.stdout


def _mount_tmpfs(folder: Path, size: int) -> None:
    folder.mkdir()
    if not AS_ROOT:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_disk_full_at_the_start(small_warehouse, tmp_path, subprocess_env):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, small_warehouse.stat().st_size + 4 * 2**20)
    try:
        news = write(tmp_path / "news" / "new.txt", "date 2024-06-01 An article that arrives when the disk is full.").parent
        # A new warehouse on a full disk.
        filler = _fill(disk)
        fresh = newsindex("ingest", str(news), "--db", str(disk / "new.duckdb"), env=subprocess_env)
        assert fresh.returncode == 1 and "Traceback" not in fresh.stderr, fresh.stderr
        assert fresh.stderr.strip().splitlines()[-1].startswith(f"Error: {disk / 'new.duckdb'}"), fresh.stderr
        assert "No space left on device" in fresh.stderr.strip().splitlines()[-1]

        # A stored warehouse on a full disk: one line, and it is left as it was.
        for leftover in disk.iterdir():
            leftover.unlink()
        db = disk / "w.duckdb"
        shutil.copy(small_warehouse, db)
        filler = _fill(disk)
        before = db.read_bytes()
        full = newsindex("ingest", str(news), "--db", str(db), env=subprocess_env)
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
        assert "No space left on device" in full.stderr.strip().splitlines()[-1], full.stderr
        assert full.stderr.strip().splitlines()[-1].startswith("Error: ")
        assert db.read_bytes() == before

        # With room again the same command works, on the same warehouse.
        filler.unlink()
        fine = newsindex("ingest", str(news), "--db", str(db), env=subprocess_env)
        assert fine.returncode == 0, fine.stderr
        assert documents(db) == 16
    finally:
        subprocess.run(["umount", str(disk)], check=False)
