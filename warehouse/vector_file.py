"""A copy of every chunk's vector beside the warehouse, for one-shot (cold) searches.

A new `newsindex search` process that scans the vectors in DuckDB first reads them into DuckDB's
buffers: at 1M chunks that is 1.5 GB, about a second before any arithmetic, and the scalar
`array_inner_product` loop then takes as long again (bench/RESULTS.md). The same float32 vectors
as plain NumPy files are memory-mapped instead, straight from the page cache, and scored with one
BLAS product: the exact scores again, without DuckDB's copy.

The copy is a cache; the warehouse stays the source of truth. It lives in `<warehouse>.vectors/`,
one folder per warehouse state (the chunk and document counts and the newest `updated_at`, which
every write changes, as for the warm caches), named by a hash of that state. A reader uses the
folder of the state it sees, or scans in DuckDB where there is none. An ingest run asked for it
(`--vector-file`) writes the folder after its writes, with a read-only connection (readers keep
reading meanwhile), and removes older ones; a run not asked removes any folder. A folder appears
whole or not at all: it is written under a temporary name and renamed. A crash between a write
and the copy leaves the old folder, which no reader takes for the new state; the next run writes
the new one.

Opt-in, because each run rewrites the whole copy: 1.5 GB and 16 s at 1M chunks on the machine of
bench/RESULTS.md, against ~2 s for the run's own work. Appending only the changed chunks (with a
full rewrite when replaced or removed ones pile up) is not done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from newsindex.warehouse.documents import warehouse_state

FORMAT = "vectors-1"
_NO_DATE = np.iinfo(np.int32).min
# Every chunk with its article's position in doc_id order and its day: as queries/search_vectors.sql.
_ROWS_SQL = """
WITH docs AS (
    SELECT doc_id, (row_number() OVER (ORDER BY doc_id) - 1)::INTEGER AS doc_index,
           date_diff('day', DATE '1970-01-01', published)::INTEGER AS day
    FROM documents
)
SELECT c.chunk_id, docs.doc_index, docs.day, c.embedding
FROM chunks c
JOIN docs ON docs.doc_id = c.doc_id
"""


@dataclass
class VectorFile:
    matrix: np.ndarray  # (chunks, dim) float32, memory-mapped
    chunk_ids: np.ndarray  # (chunks,) str (numpy unicode), memory-mapped
    doc_index: np.ndarray  # (chunks,) int32: the article's position in doc_ids
    day: np.ndarray  # (chunks,) int32: days since 1970-01-01, _NO_DATE when the article has none
    doc_ids: np.ndarray  # (documents,) str, sorted
    by_doc: np.ndarray  # (chunks,) int64: rows grouped by article; article a's are by_doc[doc_start[a]:doc_start[a + 1]]
    doc_start: np.ndarray  # (documents + 1,) int64


def folder(db: Path) -> Path:
    return db.with_name(db.name + ".vectors")


def _name(state: tuple) -> str:
    return hashlib.sha256(json.dumps([FORMAT, *state]).encode()).hexdigest()[:16]


def open_current(con: duckdb.DuckDBPyConnection, db: Path, state: tuple | None = None) -> VectorFile | None:
    """The copy of the warehouse's vectors as they are now, memory-mapped; None if there is none."""
    state = warehouse_state(con) if state is None else state
    here = folder(db) / _name(state)
    try:
        meta = json.loads((here / "meta.json").read_text())
        if meta.get("format") != FORMAT or meta.get("state") != list(state):
            return None
        mapped = [np.load(here / f"{name}.npy", mmap_mode="r") for name in ("matrix", "chunk_ids", "doc_index", "day")]
        found = VectorFile(*mapped, *(np.load(here / f"{name}.npy") for name in ("doc_ids", "by_doc", "doc_start")))
    except (OSError, ValueError):
        return None
    return found if len(found.matrix) == len(found.chunk_ids) == state[0] else None


def remove(db: str | Path) -> str:
    """Remove the copy: 'removed', or 'none' where there was none."""
    here = folder(Path(db))
    if not here.exists():
        return "none"
    shutil.rmtree(here, ignore_errors=True)
    return "removed"


def write(db: str | Path, wait: float = 0.0) -> str:
    """Bring the copy up to date with the warehouse: 'current', 'written' or 'skipped' (the
    warehouse is held by a writer)."""
    from newsindex.warehouse import connection

    db = Path(db)
    try:
        con = connection.connect(db, read_only=True, wait=wait)
    except connection.WarehouseLocked:
        return "skipped"
    with con:
        con.execute("SET enable_progress_bar = false")  # a flow's log, not a terminal
        state = warehouse_state(con)
        if open_current(con, db, state) is not None:
            _remove_others(db, _name(state))
            return "current"
        with connection.driver_errors(db):
            _write(con, db, state)
    _remove_others(db, _name(state))
    return "written"


def _write(con: duckdb.DuckDBPyConnection, db: Path, state: tuple) -> None:
    target = folder(db) / _name(state)
    target.parent.mkdir(exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        chunks = int(state[0])
        reader = con.execute(_ROWS_SQL).to_arrow_reader(65_536)
        dim = reader.schema.field("embedding").type.list_size
        ids: list = []
        doc_index = np.empty(chunks, dtype=np.int32)
        day = np.empty(chunks, dtype=np.int32)
        row = 0
        # Written batch by batch with write(): through a writable memory map, each new page of a
        # 1.5 GB file costs a fault (most of 13 s at 1M chunks).
        with open(partial / "matrix.npy", "wb") as out:
            np.lib.format.write_array_header_2_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                       "fortran_order": False, "shape": (chunks, dim)})  # fmt: skip
            for batch in reader:
                n = batch.num_rows
                if row + n > chunks:
                    break
                out.write(np.ascontiguousarray(batch.column("embedding").values.to_numpy(), dtype=np.float32).tobytes())
                ids.extend(batch.column("chunk_id").to_pylist())
                doc_index[row : row + n] = batch.column("doc_index").to_numpy()
                day[row : row + n] = batch.column("day").fill_null(_NO_DATE).to_numpy()
                row += n
        if row != chunks:  # a chunk without its article (the join drops it): no copy for that state
            raise ValueError(f"{row} of {chunks} chunks have their article")
        doc_ids = [r[0] for r in con.execute("SELECT doc_id FROM documents ORDER BY doc_id").fetchall()]
        np.save(partial / "chunk_ids.npy", np.asarray(ids, dtype=str))
        np.save(partial / "doc_index.npy", doc_index)
        np.save(partial / "day.npy", day)
        np.save(partial / "doc_ids.npy", np.asarray(doc_ids, dtype=str))
        np.save(partial / "by_doc.npy", np.argsort(doc_index, kind="stable"))
        doc_start = np.zeros(len(doc_ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(doc_index, minlength=len(doc_ids)), out=doc_start[1:])
        np.save(partial / "doc_start.npy", doc_start)
        (partial / "meta.json").write_text(json.dumps({"format": FORMAT, "state": list(state), "chunks": chunks, "dim": dim}))
        for path in partial.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        try:
            os.rename(partial, target)
        except OSError:
            # A folder for this state that open_current refused (damaged, or cut short by hand):
            # this one replaces it.
            shutil.rmtree(target, ignore_errors=True)
            os.rename(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _remove_others(db: Path, keep: str) -> None:
    """Folders of older states (a reader still mapping one keeps its files until it exits)."""
    try:
        entries = list(folder(db).iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name != keep and ".partial-" not in entry.name:
            shutil.rmtree(entry, ignore_errors=True)
