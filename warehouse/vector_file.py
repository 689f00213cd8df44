"""A copy of every chunk's vector beside the warehouse, for one-shot (cold) searches.

A new `newsindex search` process that scans the vectors in DuckDB first reads them into DuckDB's
buffers: at 1M chunks that is 1.5 GB, about a second before any arithmetic, and the scalar
`array_inner_product` loop then takes as long again (bench/RESULTS.md). The same float32 vectors
as a plain file are memory-mapped instead, straight from the page cache, and scored with one BLAS
product: the exact scores again, without DuckDB's copy.

The copy is a cache; the warehouse stays the source of truth. It lives in `<warehouse>.vectors/`:

- `current.json` names what is current: the warehouse state it matches (the chunk and document
  counts and the newest `updated_at`, which every write changes, as for the warm caches), a base
  folder and a generation in it. It is replaced whole (rename), so a reader sees one or the other.
- A base folder holds `matrix.f32` (rows of float32) and `ids.bin` (chunk ids, UTF-8, fixed
  width). Both only grow: an ingest appends the rows of the articles it added or replaced.
- A generation folder in it holds the small per-row and per-article arrays, rewritten whole by
  every update: each row's article (`doc_index`; a replaced or removed article's old rows point
  past the end, and `live` marks the others), its day, the articles (sorted) with their
  `updated_at`, and the rows grouped by article.

So an ingest's cost follows its change: the changed articles' rows, plus the small arrays (about
25 MB at 1M chunks). It rewrites the base only when there is none, when dead rows would pass a
quarter of all rows (and a floor), when the change is a large part of the warehouse, or when new
chunk ids outgrow the ids' width. A reader uses the copy only when its state is the reader's; else it scans
in DuckDB. A crash midway leaves `current.json` naming the old generation, whose rows are still
in the files (appends go past them, and the next update first cuts off what a crash left there).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from newsindex.warehouse.documents import warehouse_state

FORMAT = "vectors-2"
_NO_DATE = np.iinfo(np.int32).min
# Dead rows (of replaced or removed articles) past this share of all rows, and more than the
# floor (below it a rewrite saves nothing worth having): rewrite the base.
_DEAD_SHARE = 0.25
_DEAD_FLOOR = 1024
# Changed articles past this share of all: rewrite the base (one streamed read beats a long IN list).
_CHANGED_SHARE = 0.10

_DOCUMENTS_SQL = """
SELECT doc_id, epoch_us(updated_at) AS updated,
       date_diff('day', DATE '1970-01-01', published)::INTEGER AS day
FROM documents ORDER BY doc_id
"""
_ALL_CHUNKS_SQL = "SELECT chunk_id, doc_id, embedding FROM chunks"
_CHANGED_CHUNKS_SQL = """
SELECT chunk_id, doc_id, embedding FROM chunks
WHERE doc_id IN (SELECT unnest($doc_ids::VARCHAR[]))
ORDER BY doc_id, ordinal
"""


class ChunkIds:
    """The memory-mapped chunk ids (UTF-8, NUL-padded), indexed as an array of str."""

    def __init__(self, raw: np.ndarray):
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, rows):
        picked = self.raw[rows]
        return picked.decode() if isinstance(picked, bytes) else np.char.decode(picked, "utf-8")


@dataclass
class VectorFile:
    matrix: np.ndarray  # (rows, dim) float32, memory-mapped; dead rows included
    chunk_ids: ChunkIds  # (rows,)
    doc_index: np.ndarray  # (rows,) int32: the article's position in doc_ids; len(doc_ids) for a dead row
    day: np.ndarray  # (rows,) int32: days since 1970-01-01, _NO_DATE when the article has none
    doc_ids: np.ndarray  # (documents,) str, sorted
    by_doc: np.ndarray  # (rows,) int64: live rows grouped by article; article a's are by_doc[doc_start[a]:doc_start[a + 1]]
    doc_start: np.ndarray  # (documents + 1,) int64
    live: np.ndarray | None  # (rows,) bool: False for a dead row; None when there is none
    updated: np.ndarray  # (documents,) int64: each article's updated_at (microseconds)


def folder(db: Path) -> Path:
    return db.with_name(db.name + ".vectors")


def _meta(db: Path) -> dict | None:
    try:
        meta = json.loads((folder(db) / "current.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def _open(db: Path, meta: dict) -> VectorFile:
    """The copy `meta` names; OSError or ValueError where its files are gone or too short."""
    base = folder(db) / meta["base"]
    here = base / meta["generation"]
    rows, dim, width = int(meta["rows"]), int(meta["dim"]), int(meta["id_width"])
    if rows:
        matrix = np.memmap(base / "matrix.f32", dtype=np.float32, mode="r", shape=(rows, dim))
        ids = np.memmap(base / "ids.bin", dtype=f"S{width}", mode="r", shape=(rows,))
    else:
        matrix, ids = np.empty((0, dim), np.float32), np.empty(0, f"S{width}")
    arrays = {name: np.load(here / f"{name}.npy", mmap_mode="r") for name in ("doc_index", "day", "by_doc")}
    small = {name: np.load(here / f"{name}.npy") for name in ("doc_ids", "doc_start", "updated")}
    live = np.load(here / "live.npy", mmap_mode="r") if meta["dead"] else None
    found = VectorFile(matrix, ChunkIds(ids), live=live, **arrays, **small)
    if not (len(found.doc_index) == len(found.day) == len(found.by_doc) == rows and len(found.doc_start) == len(found.doc_ids) + 1):
        raise ValueError(f"{here}: arrays of the wrong length")
    return found


def open_current(con: duckdb.DuckDBPyConnection, db: Path, state: tuple | None = None) -> VectorFile | None:
    """The copy of the warehouse's vectors as they are now, memory-mapped; None if there is none."""
    state = warehouse_state(con) if state is None else state
    meta = _meta(db)
    if meta is None or meta.get("state") != list(state):
        return None
    try:
        found = _open(db, meta)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if len(found.matrix) - int(meta["dead"]) == state[0] else None


def remove(db: str | Path) -> str:
    """Remove the copy: 'removed', or 'none' where there was none."""
    here = folder(Path(db))
    if not here.exists():
        return "none"
    shutil.rmtree(here, ignore_errors=True)
    return "removed"


def write(db: str | Path, wait: float = 0.0) -> str:
    """Bring the copy up to date with the warehouse: 'current', 'appended' (the changed articles'
    rows added), 'written' (whole) or 'skipped' (the warehouse is held by a writer)."""
    from newsindex.warehouse import connection

    db = Path(db)
    try:
        con = connection.connect(db, read_only=True, wait=wait)
    except connection.WarehouseLocked:
        return "skipped"
    with con, _locked(db):
        con.execute("SET enable_progress_bar = false")  # a flow's log, not a terminal
        state = warehouse_state(con)
        meta = _meta(db)
        if open_current(con, db, state) is not None:
            outcome = "current"
        else:
            with connection.driver_errors(db):
                documents = con.execute(_DOCUMENTS_SQL).fetchnumpy()
                meta = _append(con, db, state, meta, documents) if meta else None
                outcome = "appended" if meta else "written"
                meta = meta or _rewrite(con, db, state, documents)
    _remove_others(db, meta)
    return outcome


@contextmanager
def _locked(db: Path):
    """One updater at a time (ingests already take turns; this covers direct calls too)."""
    folder(db).mkdir(exist_ok=True)
    with open(folder(db) / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _documents(documents: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray(documents["doc_id"].tolist(), dtype=str) if len(documents["doc_id"]) else np.empty(0, dtype="U1")
    day = np.ma.filled(documents["day"], _NO_DATE).astype(np.int32)
    return ids, np.asarray(documents["updated"], dtype=np.int64), day


def _append(con: duckdb.DuckDBPyConnection, db: Path, state: tuple, meta: dict, documents: dict) -> dict | None:
    """Add the rows of the articles added or replaced since the copy `meta` names, and mark the
    old rows of replaced and removed ones dead; the new meta, or None where a rewrite is due."""
    try:
        old = _open(db, meta)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    doc_ids, updated, days = _documents(documents)
    # Where each article of the copy is now: kept (same id, same updated_at) or gone (sentinel).
    at = np.minimum(np.searchsorted(doc_ids, old.doc_ids), max(len(doc_ids) - 1, 0))
    kept = (doc_ids[at] == old.doc_ids) & (updated[at] == old.updated) if len(doc_ids) else np.zeros(len(old.doc_ids), bool)
    unchanged = np.zeros(len(doc_ids), dtype=bool)
    unchanged[at[kept]] = True
    changed = doc_ids[~unchanged]
    if len(changed) > max(100, _CHANGED_SHARE * len(doc_ids)):
        return None
    remap = np.full(len(old.doc_ids) + 1, len(doc_ids), dtype=np.int32)
    remap[:-1][kept] = at[kept]
    table = con.execute(_CHANGED_CHUNKS_SQL, {"doc_ids": changed.tolist()}).to_arrow_table()
    added, rows, dim, width = table.num_rows, int(meta["rows"]), int(meta["dim"]), int(meta["id_width"])
    ids = np.asarray([i.encode() for i in table.column("chunk_id").to_pylist()], dtype=f"S{width + 1}")
    doc_index = np.concatenate([remap[np.asarray(old.doc_index)], np.searchsorted(doc_ids, np.asarray(table.column("doc_id").to_pylist(), dtype=str)).astype(np.int32)])  # fmt: skip
    dead = int((doc_index == len(doc_ids)).sum())
    if (added and np.char.str_len(ids).max() > width) or dead > max(_DEAD_FLOOR, _DEAD_SHARE * (rows + added)):
        return None
    if rows + added - dead != state[0] or len(doc_ids) != state[1]:
        return None  # the counts disagree with the change found: trust only a rewrite
    matrix = table.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    base = folder(db) / meta["base"]
    # Cut off whatever a crashed update left past the rows `meta` names, then append.
    _append_bytes(base / "matrix.f32", rows * dim * 4, np.ascontiguousarray(matrix).tobytes())
    _append_bytes(base / "ids.bin", rows * width, ids.astype(f"S{width}").tobytes())
    day = np.concatenate([np.asarray(old.day), days[doc_index[rows:]]])
    generation = f"g{int(meta['generation'][1:]) + 1:06d}"
    _write_generation(base / generation, doc_index, day, doc_ids, updated)
    return _publish(db, {**meta, "state": list(state), "generation": generation, "rows": rows + added, "dead": dead})


def _append_bytes(path: Path, keep: int, data: bytes) -> None:
    with open(path, "r+b") as out:
        out.truncate(keep)
        out.seek(keep)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _rewrite(con: duckdb.DuckDBPyConnection, db: Path, state: tuple, documents: dict) -> dict:
    """Write a new base with every chunk's row; its meta."""
    doc_ids, updated, days = _documents(documents)
    name = f"b{os.urandom(6).hex()}"
    partial = folder(db) / f"{name}.partial-{os.getpid()}"
    partial.mkdir()
    try:
        reader = con.execute(_ALL_CHUNKS_SQL).to_arrow_reader(65_536)
        dim = reader.schema.field("embedding").type.list_size
        ids: list[bytes] = []
        doc_index = np.empty(int(state[0]), dtype=np.int32)
        row = 0
        # Written batch by batch with write(): through a writable memory map, each new page of a
        # 1.5 GB file costs a fault (most of 13 s at 1M chunks).
        with open(partial / "matrix.f32", "wb") as out:
            for batch in reader:
                n = batch.num_rows
                if row + n > len(doc_index):
                    raise ValueError(f"more chunks than the {len(doc_index)} counted")
                out.write(np.ascontiguousarray(batch.column("embedding").values.to_numpy(), dtype=np.float32).tobytes())
                ids.extend(i.encode() for i in batch.column("chunk_id").to_pylist())
                owners = np.asarray(batch.column("doc_id").to_pylist(), dtype=str)
                at = np.minimum(np.searchsorted(doc_ids, owners), max(len(doc_ids) - 1, 0))
                if not len(doc_ids) or (doc_ids[at] != owners).any():
                    raise ValueError("a chunk without its article")
                doc_index[row : row + n] = at
                row += n
            out.flush()
            os.fsync(out.fileno())
        if row != len(doc_index):
            raise ValueError(f"{row} chunks read, {len(doc_index)} counted")
        # Room for somewhat longer ids later before an append must rewrite.
        width = max((len(i) for i in ids), default=0) + 16
        with open(partial / "ids.bin", "wb") as out:
            out.write(np.asarray(ids, dtype=f"S{width}").tobytes())
            out.flush()
            os.fsync(out.fileno())
        _write_generation(partial / "g000001", doc_index, days[doc_index] if len(doc_ids) else np.empty(0, np.int32), doc_ids, updated)
        os.rename(partial, folder(db) / name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    meta = {"format": FORMAT, "state": list(state), "base": name, "generation": "g000001", "rows": row, "dim": dim,
            "id_width": width, "dead": 0}  # fmt: skip
    return _publish(db, meta)


def _write_generation(target: Path, doc_index: np.ndarray, day: np.ndarray, doc_ids: np.ndarray, updated: np.ndarray) -> None:
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    live = doc_index != len(doc_ids)
    doc_start = np.zeros(len(doc_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc_index, minlength=len(doc_ids) + 1)[: len(doc_ids)], out=doc_start[1:])
    arrays = {"doc_index": doc_index, "day": day.astype(np.int32), "doc_ids": doc_ids, "updated": updated,
              "by_doc": np.argsort(doc_index, kind="stable"), "doc_start": doc_start}  # fmt: skip
    if not live.all():
        arrays["live"] = live
    for name, values in arrays.items():
        with open(partial / f"{name}.npy", "wb") as out:
            np.save(out, values)
            out.flush()
            os.fsync(out.fileno())
    shutil.rmtree(target, ignore_errors=True)  # a generation a crashed update left under this name
    os.rename(partial, target)


def _publish(db: Path, meta: dict) -> dict:
    """Make `meta` current: written beside, synced, renamed over current.json."""
    partial = folder(db) / f"current.json.partial-{os.getpid()}"
    with open(partial, "w") as out:
        out.write(json.dumps(meta))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, folder(db) / "current.json")
    descriptor = os.open(folder(db), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return meta


def _remove_others(db: Path, meta: dict | None) -> None:
    """Bases and generations no longer current, and leftovers of crashed updates. The previous
    generation stays: a reader may be opening it. (A reader that mapped a removed file keeps it
    until it exits.)"""
    keep = {"current.json", "lock", *([meta["base"]] if meta else [])}
    try:
        entries = list(folder(db).iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    if meta:
        current = int(meta["generation"][1:])
        for entry in (folder(db) / meta["base"]).glob("g*"):
            if entry.is_dir() and (".partial-" in entry.name or int(entry.name[1:]) < current - 1):
                shutil.rmtree(entry, ignore_errors=True)
