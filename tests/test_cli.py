"""The installed `newsindex` command, run as a user runs it: separate processes, a real file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import SEED_FILE, write

NEWSINDEX = Path(sys.executable).with_name("newsindex")


def newsindex(*args, db: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEWSINDEX_DB": str(db)}
    result = subprocess.run([str(NEWSINDEX), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_ingest_twice_then_bad_file(tmp_path):
    db = tmp_path / "cli.duckdb"
    folder = tmp_path / "news"
    folder.mkdir()
    shutil.copy(SEED_FILE, folder)
    first = json.loads(newsindex("ingest", folder, "--json", db=db).stdout)
    assert (first["added"], first["failed"]) == (1, 0) and first["chunks_embedded"] > 0
    second = json.loads(newsindex("ingest", folder, "--json", db=db).stdout)
    assert (second["unchanged"], second["chunks_embedded"]) == (1, 0)

    write(folder / "broken.txt", "date 2024-02-30 Impossible.")
    failed = newsindex("ingest", folder, db=db, check=False)
    assert failed.returncode == 1
    assert f"failed {folder / 'broken.txt'}: impossible date '2024-02-30'" in " ".join(failed.stdout.split())

    stats = json.loads(newsindex("stats", "--json", db=db).stdout)
    assert stats["documents"] == 1 and [r["status"] for r in stats["runs"]] == ["completed"] * 3
    hits = newsindex("search", "who warned Russia", "-k", "2", "--mode", "semantic", "--json", db=db).stdout.splitlines()
    assert len(hits) == 2 and json.loads(hits[0])["title"] == "Crocus city hall warning"
    # Hybrid ranks articles: the one article, with its best passage.
    hits = newsindex("search", "who warned Russia", "-k", "2", "--json", db=db).stdout.splitlines()
    assert len(hits) == 1 and json.loads(hits[0])["title"] == "Crocus city hall warning"


def test_clear_errors_without_a_warehouse(tmp_path):
    db = tmp_path / "missing.duckdb"
    for args in (["search", "x"], ["sql", "SELECT 1"], ["stats"]):
        result = newsindex(*args, db=db, check=False)
        assert result.returncode == 1
        assert result.stderr == f"Error: {db}: no warehouse here yet; run `newsindex ingest` first\n"
