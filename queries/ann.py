"""Approximate semantic search (`newsindex search --ann`): faiss's inverted-file index (IVFFlat).

The vectors are grouped by their nearest of ~sqrt(N) k-means centroids; a query scores the
centroids, then only the vectors of the `nprobe` closest groups. The index is a cache in
`<warehouse>.ann/`, built from the chunks table on first use and rebuilt whenever the chunks
changed; the warehouse stays the source of truth, and the exact SQL scan stays the default.

Filters: the index numbers the chunks in published-date order, so a date window is one range of
ids, which faiss skips outside of while it scans (an IDSelectorRange). What faiss does not promise
is k results: the groups probed may hold fewer than k chunks that pass. So a search with too few
is repeated with twice the groups until k pass, and a window that leaves few chunks probes every
group, which is an exact scan of those chunks. Source and document filters and per-article results
use the exact SQL query. (Why faiss and not the vss extension or usearch: README, `--ann`.)
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import duckdb
import faiss
import numpy as np

from newsindex.warehouse import connection, documents


NPROBE = 32
# Below this many chunks passing a date filter, scanning them all is cheaper than probing.
EXACT_BELOW = 20_000
_NO_DATE = np.iinfo(np.int32).min
# Written into meta.json: a cache left by another layout (the NumPy IVF before faiss) is rebuilt.
FORMAT = "faiss-ivfflat-1"
_EPOCH = dt.date(1970, 1, 1)


@dataclass
class VectorIndex:
    ivf: faiss.IndexIVFFlat | None  # ids are row numbers below; None when there are no chunks
    chunk_ids: np.ndarray  # (chunks,) str, in published order
    published: np.ndarray  # (chunks,) int32 days since 1970-01-01, ascending; _NO_DATE (first) when unknown

    @property
    def centroids(self) -> np.ndarray:
        if self.ivf is None:
            return np.zeros((0, 0), np.float32)
        return self.ivf.quantizer.reconstruct_n(0, self.ivf.nlist)

    @property
    def vectors(self) -> np.ndarray:
        """Every stored vector, row i being chunk_ids[i]: a copy out of faiss's lists, for tests and bench/."""
        from faiss.contrib.inspect_tools import get_invlist

        out = np.zeros((len(self.chunk_ids), self.ivf.d if self.ivf else 0), np.float32)
        for group in range(self.ivf.nlist if self.ivf else 0):
            rows, codes = get_invlist(self.ivf.invlists, group)
            out[rows] = codes.view(np.float32).reshape(len(rows), self.ivf.d)
        return out


def index_dir(db: Path) -> Path:
    return db.with_name(db.name + ".ann")


def warehouse_state(con: duckdb.DuckDBPyConnection) -> list:
    return list(documents.warehouse_state(con))


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
    stored = folder / "ivf.faiss"
    index = VectorIndex(
        # Read whole, not memory-mapped: a probe touches ~3% of the rows, scattered over the file,
        # and page faults on them cost more than the arithmetic (bench/RESULTS.md, issue 6).
        faiss.read_index(str(stored)) if stored.exists() else None,
        np.load(folder / "chunk_ids.npy"),
        np.load(folder / "published.npy"),
    )
    _open.clear()
    _open[folder] = (state, index)
    _checked[con] = (folder, state)
    return index


def _built_for(folder: Path, state: list) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return meta.get("state") == state and meta.get("format") == FORMAT
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
    """faiss's k-means on a sample, every vector to its nearest centroid, files written to a
    temporary folder of this build's own and renamed into place, so a reader never sees half an
    index and two builders never write into one folder."""
    table = con.execute(
        "SELECT c.chunk_id, c.embedding, coalesce(date_diff('day', DATE '1970-01-01', d.published), $none)::INTEGER AS days"
        " FROM chunks c JOIN documents d USING (doc_id) ORDER BY days, c.chunk_id",
        {"none": int(_NO_DATE)},
    ).to_arrow_table()
    n = table.num_rows
    ivf = None
    if n:
        dim = table.schema.field("embedding").type.list_size
        vectors = np.ascontiguousarray(table.column("embedding").combine_chunks().values.to_numpy().reshape(n, dim), dtype=np.float32)
        lists = max(1, int(np.sqrt(n)))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        # Our own sample, so that faiss neither samples again nor warns on stderr about small ones.
        ivf.cp.seed, ivf.cp.min_points_per_centroid, ivf.cp.max_points_per_centroid = seed, 1, 1 << 30
        rng = np.random.default_rng(seed)
        ivf.train(vectors[np.sort(rng.choice(n, size=min(n, 40 * lists), replace=False))])
        ivf.add(vectors)  # ids 0..n-1: the rows in published order
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".building-", dir=folder.parent))
    try:
        if ivf is not None:
            try:
                faiss.write_index(ivf, str(tmp / "ivf.faiss"))
            except RuntimeError:  # how faiss reports a failed write (a full disk)
                raise OSError(errno.EIO, "could not write the faiss index") from None
        np.save(tmp / "chunk_ids.npy", np.asarray(table.column("chunk_id").to_pylist(), dtype=str))
        np.save(tmp / "published.npy", table.column("days").to_numpy().astype(np.int32))
        (tmp / "meta.json").write_text(json.dumps({"state": state, "format": FORMAT, "chunks": n, "lists": ivf.nlist if ivf else 0}))
        # The old index moves aside first: rename cannot replace a folder that has files in it.
        old = Path(tempfile.mkdtemp(prefix=folder.name + ".old-", dir=folder.parent))
        if folder.exists():
            folder.rename(old / "index")
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def nearest_chunks(
    index: VectorIndex, query: np.ndarray, k: int, since: dt.date | None = None, until: dt.date | None = None, nprobe: int = NPROBE
) -> list[tuple[str, float]]:
    """Up to k (chunk_id, score) pairs, best first; k whenever k chunks pass the date filter."""
    ivf = index.ivf
    if ivf is None:
        return []
    low = int(np.searchsorted(index.published, (since - _EPOCH).days, "left")) if since else 0
    high = int(np.searchsorted(index.published, (until - _EPOCH).days, "right")) if until else len(index.published)
    if since is not None or until is not None:  # a chunk of unknown date passes no date filter
        low = max(low, int(np.searchsorted(index.published, _NO_DATE, "right")))
    passing = max(0, high - low)
    if passing == 0:
        return []
    # assume_sorted: each list holds its ids in the order they were added (ascending), so faiss
    # finds the range in each list by bisection instead of testing every id.
    selector = faiss.IDSelectorRange(low, high, True) if passing < ivf.ntotal else None
    # Every group when few chunks pass: that is an exact scan of them.
    probes = ivf.nlist if selector is not None and passing <= max(EXACT_BELOW, k) else min(nprobe, ivf.nlist)
    query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
    while True:
        params = faiss.SearchParametersIVF(nprobe=probes, sel=selector) if selector else faiss.SearchParametersIVF(nprobe=probes)
        scores, rows = ivf.search(query, k, params=params)
        found = [(float(score), int(row)) for score, row in zip(scores[0], rows[0]) if row >= 0]
        if len(found) >= min(k, passing) or probes >= ivf.nlist:
            break
        probes = min(ivf.nlist, probes * 2)
    ranked = sorted((-score, str(index.chunk_ids[row])) for score, row in found)
    return [(chunk_id, -negative) for negative, chunk_id in ranked]
