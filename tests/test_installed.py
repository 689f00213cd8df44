"""An installed wheel (not the editable checkout): defaults come from where the user stands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_defaults_follow_the_current_directory(tmp_path, subprocess_env):
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, cwd=tmp_path)  # fmt: skip
    (wheel,) = wheels.glob("newsindex-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True)
    shutil.copytree(REPO / "seeds", work / "seeds")
    env = {k: v for k, v in subprocess_env.items() if k != "NEWSINDEX_DB"}
    # The target directory comes first on sys.path, ahead of the editable checkout's finder.
    env["PYTHONPATH"] = str(target)
    program = "import sys; from newsindex.cli import main; sys.argv[0] = 'newsindex'; main()"

    def newsindex(*args):
        result = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, env=env, cwd=work, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    where = subprocess.run([sys.executable, "-c", "import newsindex; print(newsindex.__file__)"],
                           capture_output=True, text=True, env=env, cwd=work, check=True).stdout  # fmt: skip
    assert where.startswith(str(target))
    summary = json.loads(newsindex("ingest", "--json"))  # default: ./seeds into ./warehouse/
    assert summary["added"] == 1 and summary["failed"] == 0
    assert (work / "warehouse" / "newsindex.duckdb").is_file()
    assert not (target / "warehouse" / "newsindex.duckdb").exists()
    stats = json.loads(newsindex("stats", "--json"))
    assert stats["warehouse"] == str(work / "warehouse" / "newsindex.duckdb") and stats["documents"] == 1
    assert f"warehouse {work / 'warehouse' / 'newsindex.duckdb'}" in newsindex("stats")
    # From another folder, the default is that folder's warehouse, which does not exist yet.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = subprocess.run([sys.executable, "-c", program, "search", "x"], capture_output=True, text=True, env=env, cwd=elsewhere)
    assert missing.returncode == 1
    assert missing.stderr == f"Error: {elsewhere / 'warehouse' / 'newsindex.duckdb'}: no warehouse here yet; run `newsindex ingest` first\n"
