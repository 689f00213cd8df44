"""--prune within bounds: a folder where no files were found (empty, or a mount that dropped) or
that would lose more than half of its documents keeps them all, with one line, unless
--allow-mass-prune; what is removed is named; a folder that cannot be listed costs nothing stored.
Real files, real mounts where this process may mount, the real flow and real `newsindex` processes."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import write

NEWSINDEX = str(Path(sys.executable).with_name("newsindex"))
AS_ROOT = os.geteuid() == 0


def rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def stored(db: Path) -> set[str]:
    return {Path(r[0]).name for r in rows(db, "SELECT source_path FROM documents")}


def article(folder: Path, name: str, words: str) -> Path:
    return write(folder / name, f"date 2024-05-0{len(name) % 9 + 1} {words}.")


def cli(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([NEWSINDEX, *args], capture_output=True, text=True, env=env, timeout=600, **kwargs)


class _Mount:
    """A real tmpfs mounted over `folder` when this process may mount (root in most sandboxes);
    otherwise the folder's files are moved away, which looks the same to ingest."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.mounted = AS_ROOT and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(folder)],
                                                  capture_output=True).returncode == 0  # fmt: skip
        self.away = folder.with_name(folder.name + ".away")

    def drop(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.folder)], check=True)
            self.mounted = False
        else:
            shutil.move(str(self.folder), str(self.away))
            self.folder.mkdir()

    def cleanup(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.folder)], check=False)


def test_a_dropped_mount_keeps_every_document_until_the_override(ingest, db, tmp_path, subprocess_env):
    news, other = tmp_path / "news", tmp_path / "other"
    news.mkdir()
    mount = _Mount(news)
    try:
        for name, words in [("harbour.txt", "The harbour reopened after the storm"),
                            ("bridge.txt", "A new bridge links the two banks"),
                            ("library.txt", "The city library extends its hours")]:  # fmt: skip
            article(news, name, words)
        article(other, "market.txt", "Stalls returned to the square")
        assert ingest(news, other)["added"] == 4
        mount.drop()
        assert list(news.iterdir()) == []
        article(other, "tram.txt", "The tram line gets ten new stops")

        # The reproduction of the issue: `seen 0, removed 3`, exit 0. Now the folder keeps them and
        # says why; the other folder's new file is stored all the same.
        summary = ingest(news, other, prune=True)
        assert (summary["removed"], summary["added"], summary["pruned"]) == (0, 1, [])
        assert summary["failures"] == [
            f"{news}: not pruned: no article files found under it (empty, or not mounted?); its 3 stored"
            " documents were kept; pass --allow-mass-prune to remove them"
        ]
        assert stored(db) == {"harbour.txt", "bridge.txt", "library.txt", "market.txt", "tram.txt"}
        assert rows(db, "SELECT removed, failed FROM ingest_runs ORDER BY started_at DESC LIMIT 1") == [(0, 1)]
        assert rows(db, "SELECT source_path, message FROM ingest_errors WHERE message LIKE 'not pruned%'")[0][0] == str(news)

        # The same through the command: one line, exit 1, nothing removed.
        refused = cli("ingest", str(news), "--prune", "--db", str(db), env=subprocess_env)
        assert refused.returncode == 1, refused.stderr
        assert f"failed {news}: not pruned: no article files found" in refused.stdout
        assert "Traceback" not in refused.stderr + refused.stdout
        assert len(stored(db)) == 5

        # With the override it goes, and the output names what went.
        forced = cli("ingest", str(news), "--prune", "--allow-mass-prune", "--db", str(db), env=subprocess_env)
        assert forced.returncode == 0, forced.stderr
        removed_lines = sorted(line for line in forced.stdout.splitlines() if line.startswith("removed "))
        assert [line.split(" (")[0] for line in removed_lines] == [
            f"removed {news / n}" for n in ("bridge.txt", "harbour.txt", "library.txt")
        ]
        assert stored(db) == {"market.txt", "tram.txt"}
        assert rows(db, "SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)") == [(0,)]
    finally:
        mount.cleanup()


def test_losing_more_than_half_of_a_folder_needs_the_override(ingest, db, tmp_path):
    news = tmp_path / "news"
    names = ["one.txt", "two.txt", "three.txt", "four.txt"]
    for i, name in enumerate(names):
        article(news, name, f"Article number {i} about the river festival and its {i + 2} boats")
    write(news / "feed.jsonl", '{"id": "f1", "text": "First feed item."}\n{"id": "f2", "text": "Second feed item."}\n')
    assert ingest(news)["added"] == 6
    for name in names[1:]:
        (news / name).unlink()
    (news / "feed.jsonl").write_text('{"id": "f1", "text": "First feed item."}\n')

    # Three files and a feed line gone: 4 of 6 documents, more than half.
    summary = ingest(news, prune=True)
    assert summary["removed"] == 0
    assert summary["failures"] == [
        f"{news}: not pruned: 4 of its 6 stored documents would go (more than half); all were kept;"
        " pass --allow-mass-prune to remove them"
    ]
    assert len(rows(db, "SELECT doc_id FROM documents")) == 6

    forced = ingest(news, prune=True, allow_mass_prune=True)
    assert (forced["removed"], forced["failed"]) == (4, 0)
    assert sorted(where.rsplit("/", 1)[-1] for where, _ in forced["pruned"]) == ["feed.jsonl:2", "four.txt", "three.txt", "two.txt"]
    assert {doc_id for _, doc_id in forced["pruned"]} >= {"f2"}
    assert stored(db) == {"one.txt", "feed.jsonl"}


def _without_file_permission_override() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that root's
    child obeys file modes like any user (as in tests/test_bad_input.py)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_folder_that_cannot_be_listed_costs_nothing_stored(ingest, db, tmp_path, subprocess_env):
    news = tmp_path / "news"
    article(news, "open.txt", "The open folder keeps its story about the ferry")
    article(news / "closed", "hidden.txt", "A story in a folder nobody may enter")
    article(news / "blind", "kept.txt", "A story in a folder that may be entered but not listed")
    gone = article(news / "blind", "gone.txt", "A story whose file goes while its folder cannot be listed")
    assert ingest(news)["added"] == 4
    gone.unlink()
    (news / "closed").chmod(0)
    (news / "blind").chmod(0o111)
    try:
        kwargs = {"preexec_fn": _without_file_permission_override} if AS_ROOT else {}
        try:
            result = cli("ingest", str(news), "--prune", "--json", "--db", str(db), env=subprocess_env, **kwargs)
        except subprocess.SubprocessError as err:
            pytest.skip(f"cannot drop capabilities here: {err}")
    finally:
        (news / "closed").chmod(0o755)
        (news / "blind").chmod(0o755)
    # Was a traceback (PermissionError from the existence check). Now: one line per folder, exit 1,
    # and nothing under either folder removed, not even the file that really went.
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["removed"] == 0
    assert sorted(summary["failures"]) == [
        f"{news / 'blind'}: cannot list the folder: Permission denied",
        f"{news / 'closed'}: cannot list the folder: Permission denied",
    ]
    assert stored(db) == {"open.txt", "hidden.txt", "kept.txt", "gone.txt"}
    # Listable again, the file that went is pruned (1 of 4: within bounds).
    assert ingest(news, prune=True)["removed"] == 1
    assert stored(db) == {"open.txt", "hidden.txt", "kept.txt"}
