"""Approximate semantic search (`newsindex search --ann`): an inverted-file (IVF) index in NumPy.

The vectors are grouped by their nearest of ~sqrt(N) k-means centroids; a query scores the
centroids, then only the vectors of the `nprobe` closest groups. The index is a cache in
`<warehouse>.ann/`, built from the chunks table on first use and rebuilt whenever the chunks
changed; the warehouse stays the source of truth, and the exact SQL scan stays the default.

Filters: published-date filters are applied to the index's own copy of each chunk's date, probing
more groups until k chunks pass; a filter that leaves few chunks is answered by an exact scan of
those chunks. Source and document filters and per-article results use the exact SQL query.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from newsindex.warehouse import connection


NPROBE = 32
# Below this many chunks passing a date filter, scanning them all is cheaper than probing.
EXACT_BELOW = 20_000
_NO_DATE = np.iinfo(np.int32).min
_EPOCH = dt.date(1970, 1, 1)
# What ingestion changes when it adds, replaces or prunes documents; cheap to read on every open.
_STATE_SQL = "SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM documents), (SELECT max(updated_at) FROM documents)::VARCHAR"


@dataclass
class VectorIndex:
    centroids: np.ndarray  # (lists, dim) float32
    offsets: np.ndarray  # (lists + 1,) int64: group i is rows offsets[i]:offsets[i+1]
    vectors: np.ndarray  # (chunks, dim) float32, grouped by centroid
    chunk_ids: np.ndarray  # (chunks,) str
    published: np.ndarray  # (chunks,) int32 days since 1970-01-01, _NO_DATE when unknown


def index_dir(db: Path) -> Path:
    return db.with_name(db.name + ".ann")


def warehouse_state(con: duckdb.DuckDBPyConnection) -> list:
    return list(con.execute(_STATE_SQL).fetchone())


# The last index opened, kept for the next query (a warm session): loading costs more than a query.
_open: dict[Path, tuple[list, VectorIndex]] = {}
# Connections whose warehouse state was already compared with the open index: a session's read-only
# connection keeps writers out of the file while it is open (see queries/warm.py), so once is enough.
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def open_index(con: duckdb.DuckDBPyConnection, db: Path) -> VectorIndex:
    """The index for this warehouse, built first if it is missing or older than the chunks."""
    folder = index_dir(db)
    if folder in _open and _checked.get(con) == (folder, _open[folder][0]):
        return _open[folder][1]
    state = warehouse_state(con)
    if folder in _open and _open[folder][0] == state:
        _checked[con] = (folder, state)
        return _open[folder][1]
    if not _built_for(folder, state):
        _build_once(con, db, folder, state)
    index = VectorIndex(
        np.load(folder / "centroids.npy"),
        np.load(folder / "offsets.npy"),
        # Read whole, not memory-mapped: a probe touches ~3% of the rows, scattered over the file,
        # and page faults on them cost more than the arithmetic (84 ms vs ~5 ms at 1M chunks).
        np.load(folder / "vectors.npy"),
        np.load(folder / "chunk_ids.npy"),
        np.load(folder / "published.npy"),
    )
    _open.clear()
    _open[folder] = (state, index)
    _checked[con] = (folder, state)
    return index


def _built_for(folder: Path, state: list) -> bool:
    try:
        return json.loads((folder / "meta.json").read_text()).get("state") == state
    except (OSError, ValueError, AttributeError):
        return False


def _build_once(con: duckdb.DuckDBPyConnection, db: Path, folder: Path, state: list) -> None:
    """Build the index unless another process does: several first searches at once take turns on
    a lock file, and those that waited find it built. A folder that cannot be written (read-only,
    full) is one line, not a traceback."""
    lock = folder.with_name(folder.name + ".lock")
    try:
        fd = connection.open_lock_file(lock)
    except connection.WarehouseError:
        why = _why_not_writable(folder.parent)
        if why is None:
            raise  # a symlink or a pipe where the lock belongs: its own line says so
        raise connection.WarehouseError(
            f"{folder}: cannot build the --ann index beside the warehouse ({why}); search without --ann,"
            " or make the folder writable"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if the builder dies
        if _built_for(folder, state):
            return
        try:
            build_index(con, folder, state)
        except OSError as err:
            raise connection.WarehouseError(
                f"{folder}: cannot build the --ann index beside the warehouse ({err.strerror or err}); search without --ann"
            ) from None
    finally:
        os.close(fd)


def _why_not_writable(folder: Path) -> str | None:
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        return err.strerror or str(err)
    return None


def build_index(con: duckdb.DuckDBPyConnection, folder: Path, state: list, seed: int = 0) -> None:
    """k-means on a sample, every vector to its nearest centroid, files written to a temporary
    folder of this build's own and renamed into place, so a reader never sees half an index and
    two builders never write into one folder."""
    table = con.execute(
        "SELECT c.chunk_id, c.embedding, coalesce(date_diff('day', DATE '1970-01-01', d.published), $none)::INTEGER AS days"
        " FROM chunks c JOIN documents d USING (doc_id) ORDER BY c.chunk_id",
        {"none": int(_NO_DATE)},
    ).to_arrow_table()
    n = table.num_rows
    dim = table.schema.field("embedding").type.list_size if n else 384
    vectors = table.column("embedding").combine_chunks().values.to_numpy().reshape(n, dim) if n else np.zeros((0, dim), np.float32)
    lists = max(1, int(np.sqrt(n)))
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(n, size=min(n, 40 * lists), replace=False)] if n else vectors
    centroids = sample[rng.choice(len(sample), size=min(lists, len(sample)), replace=False)].copy() if n else np.zeros((1, dim), np.float32)
    for _ in range(10):
        nearest = _nearest(sample, centroids)
        for i in range(len(centroids)):
            members = sample[nearest == i]
            if len(members):
                mean = members.mean(0)
                centroids[i] = mean / max(np.linalg.norm(mean), 1e-12)
    nearest = _nearest(vectors, centroids)
    order = np.argsort(nearest, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(nearest, minlength=len(centroids)))]).astype(np.int64)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".building-", dir=folder.parent))
    try:
        np.save(tmp / "centroids.npy", centroids.astype(np.float32))
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "vectors.npy", np.ascontiguousarray(vectors[order], dtype=np.float32))
        np.save(tmp / "chunk_ids.npy", np.asarray(table.column("chunk_id").to_pylist(), dtype=str)[order])
        np.save(tmp / "published.npy", table.column("days").to_numpy().astype(np.int32)[order])
        (tmp / "meta.json").write_text(json.dumps({"state": state, "chunks": n, "lists": len(centroids)}))
        # The old index moves aside first: rename cannot replace a folder that has files in it.
        old = Path(tempfile.mkdtemp(prefix=folder.name + ".old-", dir=folder.parent))
        if folder.exists():
            folder.rename(old / "index")
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _nearest(vectors: np.ndarray, centroids: np.ndarray, step: int = 65_536) -> np.ndarray:
    out = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), step):
        out[start : start + step] = np.argmax(vectors[start : start + step] @ centroids.T, axis=1)
    return out


def nearest_chunks(
    index: VectorIndex, query: np.ndarray, k: int, since: dt.date | None = None, until: dt.date | None = None, nprobe: int = NPROBE
) -> list[tuple[str, float]]:
    """Up to k (chunk_id, score) pairs, best first; k whenever k chunks pass the date filter."""
    filtered = since is not None or until is not None
    if filtered:
        low = (since - _EPOCH).days if since else _NO_DATE + 1
        high = (until - _EPOCH).days if until else np.iinfo(np.int32).max
        allowed = (index.published >= low) & (index.published <= high)
        passing = int(allowed.sum())
        if passing <= max(EXACT_BELOW, k):
            rows = np.flatnonzero(allowed)
            return _top(index, rows, index.vectors[rows] @ query, k)
    order = np.argsort(-(index.centroids @ query))
    # Probe the closest groups; with a filter keep going until k chunks that pass have been seen.
    # Each group is a contiguous slice of the (memory-mapped) vectors: scored in place, no copy.
    row_parts, score_parts, seen, probed = [], [], 0, 0
    for group in order:
        start, end = int(index.offsets[group]), int(index.offsets[group + 1])
        rows = np.arange(start, end)
        scores = index.vectors[start:end] @ query
        if filtered:
            keep = allowed[start:end]
            rows, scores = rows[keep], scores[keep]
        row_parts.append(rows)
        score_parts.append(scores)
        seen += len(rows)
        probed += 1
        if probed >= nprobe and seen >= k:
            break
    if not row_parts:
        return []
    return _top(index, np.concatenate(row_parts), np.concatenate(score_parts), k)


def _top(index: VectorIndex, rows: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    if len(rows) > k:
        keep = np.argpartition(-scores, k - 1)[:k]
        rows, scores = rows[keep], scores[keep]
    ids = index.chunk_ids[rows]
    ranked = sorted(zip((-scores).tolist(), ids.tolist()))
    return [(chunk_id, -negative) for negative, chunk_id in ranked]

