"""Exact semantic search from memory, for warm sessions (many queries on one `session()`).

DuckDB's `array_inner_product` is a scalar loop (~45 ms per 100k vectors per thread); BLAS does
the same inner products ~4x faster, and holding the vectors as one float32 matrix removes the scan
altogether. So a warm session loads every chunk's vector once (`search_vectors.sql`, streamed
through Arrow into a preallocated matrix), scores a query with one matrix-vector product, applies
the filters as masks, and takes the k winners' passages from memory too (`WarmPassages`, shared
with the warm keyword search).
The answer is the one `semantic_search.sql` gives: same chunks, same order, scores equal up to
float rounding (tests/test_warm.py). One-shot searches (the CLI) stay on SQL: loading costs more
than one scan.

Memory: 4 bytes x 384 per chunk (1.5 GB at 1M chunks) plus ~24 bytes per chunk of ids and
indexes; the passages' text once more (WarmPassages); one warehouse at a time is kept. The text is
kept because the chunks table has no key since migration 005: fetching k passages by id from DuckDB
scans it. From COARSE_FROM chunks also a float16 copy (2 bytes x 384 per chunk) in a faiss flat index, which the scan reads instead (`exact_scores`): half the
bytes, and faiss's SIMD loop beats NumPy's float32 product. The answer stays exact: the float16
scores only choose candidates, whose float32 scores rank them, and a bound on the float16 error
proves that no other chunk could rank among them (else the search looks deeper).

Staleness: the cache is keyed by the warehouse file and its state (chunk and document counts and
the newest `documents.updated_at`, as for the approximate index): every write path (replace, add,
prune) changes one of these. The state is read once per connection, not per query: a session's
connection is read-only, and DuckDB lets no process write the file while it is open, so the data
cannot change under it.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from newsindex.queries import named
from newsindex.warehouse.documents import warehouse_state  # noqa: F401 (warm.warehouse_state)

_NO_DATE = np.iinfo(np.int32).min
_EPOCH = dt.date(1970, 1, 1)


@dataclass
class WarmVectors:
    state: tuple
    matrix: np.ndarray  # (chunks, dim) float32, C-contiguous, in no particular order
    chunk_ids: np.ndarray  # (chunks,) object (str)
    doc_index: np.ndarray  # (chunks,) int32: position of the chunk's article in doc_ids
    day: np.ndarray  # (chunks,) int32: publication day since 1970-01-01, _NO_DATE when unknown
    doc_ids: np.ndarray  # (documents,) str, sorted
    by_doc: np.ndarray  # (chunks,) int64: rows grouped by article; article a's are by_doc[doc_start[a]:doc_start[a + 1]]
    doc_start: np.ndarray  # (documents + 1,) int64
    coarse: object | None = None  # faiss IndexScalarQuantizer (float16) over `matrix`, or None
    max_norm: float = 0.0  # the longest row of `matrix` (the float16 error bound scales with it)
    live: np.ndarray | None = None  # (chunks,) bool: rows still stored (the vector file keeps dead ones); None: all


@dataclass
class WarmPassages:
    """Every chunk's passage and its article's metadata: what a search shows of its k winners,
    whichever side found them (semantic, keyword, both)."""

    state: tuple
    chunk_ids: np.ndarray  # (chunks,) object (str), sorted: a winner's row is found by bisection
    texts: object  # pyarrow StringArray (chunks,): each chunk's passage, one buffer for all
    spans: np.ndarray  # (chunks, 4) int32: article's position in doc_ids, ordinal, char_start, char_end
    doc_ids: np.ndarray  # (documents,) str, sorted
    documents: object  # pyarrow Table in doc_ids order: title, published, source_path, url


# Chunks from which a warm session also keeps the float16 copy: below, one float32 product costs
# about what faiss's float16 search with its candidate heap does, and the copy's memory buys little.
COARSE_FROM = 200_000
# float16 keeps 11 significant bits: each component's rounding error is at most 2^-11 of it, so a
# row's float16 inner product is off by at most 2^-11 |x| |q|; plus float32 summation error on
# both sides (384 terms: < 1e-4 |x| |q|).
_COARSE_ERROR = 2.0**-11 + 1e-4


# One warehouse's vectors (the last one searched), and the connections already checked against it;
# the same for its passages.
_cache: dict[Path, WarmVectors] = {}
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_passages: dict[Path, WarmPassages] = {}
_passages_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def database_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The file behind a connection; None for an in-memory database. Asked once per connection
    (a warm search asks for each of its three caches: 1.4 ms a question at 1M chunks)."""
    if con in _paths:
        return _paths[con]
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    found = _paths[con] = Path(path).resolve() if path else None
    return found


def vectors_for(con: duckdb.DuckDBPyConnection) -> WarmVectors | None:
    """The connection's warehouse in memory, loaded on first use or when its state changed;
    None for an in-memory database (nothing to cache it under)."""
    return snapshot_for(con, _cache, _checked, load)


def passages_for(con: duckdb.DuckDBPyConnection) -> WarmPassages | None:
    """The connection's passages in memory, loaded on first use or when the warehouse changed;
    None for an in-memory database."""
    return snapshot_for(con, _passages, _passages_checked, load_passages)


def snapshot_for(con: duckdb.DuckDBPyConnection, cache: dict, checked: weakref.WeakKeyDictionary,
                 load: Callable, available: Callable | None = None):  # fmt: skip
    """What `load(con, state)` makes of the connection's warehouse, kept in `cache` (one warehouse)
    until the warehouse's state changes, and checked once per connection (`checked`); None for an
    in-memory database, or where `available(con)` says there is nothing to load."""
    path = database_path(con)
    if path is None:
        return None
    cached = cache.get(path)
    if cached is not None and checked.get(con) == (path, cached.state):
        return cached
    state = warehouse_state(con)
    if cached is None or cached.state != state:
        cache.clear()  # free the old copy before loading the new one
        if available is not None and not available(con):
            return None
        cached = cache[path] = load(con, state)
    checked[con] = (path, state)
    return cached


def load(con: duckdb.DuckDBPyConnection, state: tuple) -> WarmVectors:
    chunks = int(state[0])
    doc_ids = np.asarray([row[0] for row in _run(con, "filtered_documents", {}).fetchall()], dtype=str)
    reader = _run(con, "search_vectors", {}).to_arrow_reader(65_536)
    dim = reader.schema.field("embedding").type.list_size
    matrix = np.empty((chunks, dim), dtype=np.float32)
    ids: list = []
    doc_index = np.empty(chunks, dtype=np.int32)
    day = np.empty(chunks, dtype=np.int32)
    row = 0
    for batch in reader:
        n = batch.num_rows
        # Flatten the FixedSizeList without a copy, then one copy into the matrix.
        matrix[row : row + n] = batch.column("embedding").values.to_numpy().reshape(n, dim)
        ids.extend(batch.column("chunk_id").to_pylist())
        doc_index[row : row + n] = batch.column("doc_index").to_numpy()
        day[row : row + n] = batch.column("day").fill_null(_NO_DATE).to_numpy()
        row += n
    if row != chunks:  # a chunk whose article is missing: the SQL join drops it too
        matrix, doc_index, day = matrix[:row].copy(), doc_index[:row], day[:row]
    by_doc = np.argsort(doc_index, kind="stable")
    doc_start = np.zeros(len(doc_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc_index, minlength=len(doc_ids)), out=doc_start[1:])
    coarse, max_norm = _coarse_index(matrix)
    return WarmVectors(state, matrix, np.asarray(ids, dtype=object), doc_index, day, doc_ids, by_doc, doc_start, coarse, max_norm)


def load_passages(con: duckdb.DuckDBPyConnection, state: tuple) -> WarmPassages:
    import pyarrow as pa

    documents = _run(con, "warm_documents", {}).to_arrow_table()
    doc_ids = np.asarray(documents.column("doc_id").to_pylist(), dtype=str)
    reader = _run(con, "warm_passages", {}).to_arrow_reader(65_536)
    chunks = int(state[0])
    ids: list = []
    texts: list = []
    spans = np.empty((chunks, 4), dtype=np.int32)
    row = 0
    for batch in reader:
        n = batch.num_rows
        ids.extend(batch.column("chunk_id").to_pylist())
        texts.append(batch.column("text"))
        for j, name in enumerate(("doc_index", "ordinal", "char_start", "char_end")):
            spans[row : row + n, j] = batch.column(name).to_numpy()
        row += n
    # One contiguous array (no Python string per chunk): the k winners' texts are sliced out of it.
    text = pa.concat_arrays(texts) if texts else pa.array([], pa.string())
    return WarmPassages(state, np.asarray(ids, dtype=object), text, spans[:row].copy(), doc_ids, documents.drop_columns(["doc_id"]))


def _coarse_index(matrix: np.ndarray) -> tuple[object | None, float]:
    """The float16 copy of the vectors in a faiss flat index, or None where it would not pay (few
    chunks) or could not hold them (a component beyond float16's range)."""
    if len(matrix) < COARSE_FROM:
        return None, 0.0
    # Not np.abs(matrix).max(): its 1.5 GB temporary at 1M chunks cost 5.8 s here (page faults).
    peak = max(float(matrix.max()), -float(matrix.min()))
    if not np.isfinite(peak) or peak > 6e4:
        return None, 0.0
    import faiss  # here: a small warehouse's session never pays for the import

    index = faiss.IndexScalarQuantizer(matrix.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    index.add(matrix)
    return index, float(np.sqrt(np.einsum("ij,ij->i", matrix, matrix).max()))


def exact_scores(
    vectors: WarmVectors, query: np.ndarray, allowed: np.ndarray | None, want: int
) -> tuple[np.ndarray | None, np.ndarray, float | None]:
    """(rows, scores, bound): float32 inner products of the query with the rows that pass
    `allowed` (rows None: every row, in order). From the float16 copy, only of the `want` rows it
    ranks best, and `bound`: no row left out scores above it. bound None: no row was left out."""
    if vectors.coarse is None or want * 4 >= len(vectors.matrix):
        if allowed is None:
            return None, vectors.matrix @ query, None
        rows = np.flatnonzero(allowed)
        # Few rows pass: score only those; many: score all (one BLAS call) and keep the passing. A
        # memory-mapped matrix (the vector file) is read in order: gathering scattered rows from it
        # costs a page fault each, more than the whole product.
        few = len(rows) < len(vectors.matrix) // (64 if isinstance(vectors.matrix, np.memmap) else 4)
        scores = vectors.matrix[rows] @ query if few else (vectors.matrix @ query)[rows]
        return rows, scores, None
    import faiss

    params = None
    if allowed is not None:
        bits = np.packbits(allowed, bitorder="little")
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits)))
    coarse, found = vectors.coarse.search(query[None, :].astype(np.float32), want, params=params)
    rows = found[0][found[0] >= 0]
    exact = vectors.matrix[rows] @ query
    if len(rows) < want:
        return rows, exact, None  # every row that passes is here
    error = _COARSE_ERROR * vectors.max_norm * float(np.linalg.norm(query))
    return rows, exact, float(coarse[0][len(rows) - 1]) + error


def _run(con: duckdb.DuckDBPyConnection, name: str, params: dict) -> duckdb.DuckDBPyConnection:
    statement = named.get(name)
    return con.execute(statement.sql, statement.bind(params))


_PASSAGE_COLUMNS = ("chunk_id", "doc_id", "ordinal", "title", "published", "source_path", "url", "text", "char_start", "char_end")


def passages(con: duckdb.DuckDBPyConnection, chunk_ids: list[str], store: WarmPassages | None = None) -> dict[str, dict]:
    """chunk_id -> its passages_by_id.sql row (text, offsets, article metadata), for the winners a
    search found; ids no longer stored are absent. From `store` (the snapshot the winners came
    from) where it holds them, else from the warehouse."""
    found = {} if store is None else _passages_in_memory(store, chunk_ids)
    rest = [chunk_id for chunk_id in chunk_ids if chunk_id not in found]
    if rest:
        cursor = _run(con, "passages_by_id", {"chunk_ids": rest})
        columns = [d[0] for d in cursor.description]
        found.update((row[0], dict(zip(columns, row))) for row in cursor.fetchall())
    return found


def _passages_in_memory(store: WarmPassages, chunk_ids: list[str]) -> dict[str, dict]:
    """The rows of passages_by_id.sql, from memory."""
    if not chunk_ids or not len(store.chunk_ids):
        return {}
    wanted = np.asarray(chunk_ids, dtype=object)
    rows = np.minimum(np.searchsorted(store.chunk_ids, wanted), len(store.chunk_ids) - 1)
    found = {}
    for chunk_id, row in zip(chunk_ids, rows.tolist()):
        if store.chunk_ids[row] != chunk_id:
            continue
        article, ordinal, start, end = store.spans[row].tolist()
        meta = {name: store.documents.column(name)[article].as_py() for name in ("title", "published", "source_path", "url")}
        values = {"chunk_id": chunk_id, "doc_id": str(store.doc_ids[article]), "ordinal": ordinal, **meta,
                  "text": store.texts[row].as_py(), "char_start": start, "char_end": end}  # fmt: skip
        found[chunk_id] = {name: values[name] for name in _PASSAGE_COLUMNS}
    return found


def allowed_rows(
    con: duckdb.DuckDBPyConnection,
    vectors: WarmVectors,
    since: dt.date | None,
    until: dt.date | None,
    source: str | None,
    doc: str | None,
) -> np.ndarray | None:
    """Boolean mask of the chunks that pass the filters (None: no filter, and every row is live)."""
    mask = filter_mask(con, vectors.doc_ids, vectors.doc_index, vectors.day, since, until, source, doc)
    if vectors.live is None:
        return mask
    return np.asarray(vectors.live) if mask is None else mask & vectors.live


def filter_mask(
    con: duckdb.DuckDBPyConnection,
    doc_ids: np.ndarray,
    doc_index: np.ndarray,
    day: np.ndarray,
    since: dt.date | None,
    until: dt.date | None,
    source: str | None,
    doc: str | None,
) -> np.ndarray | None:
    """Boolean mask of the rows (chunks, each with its article's position in the sorted `doc_ids`
    and its day) that pass the filters; None: no filter. Dates are compared in memory; a source
    glob or document id asks DuckDB which articles match (passage_filter, the same macro the SQL
    queries use), so glob semantics are DuckDB's. A position of -1 (an article that is gone) passes
    no glob or id."""
    if source is not None or doc is not None:
        matching = [r[0] for r in _run(con, "filtered_documents", {"since": since, "until": until, "source": source, "doc": doc}).fetchall()]
        docs = np.zeros(len(doc_ids) + 1, dtype=bool)
        if matching:
            docs[np.searchsorted(doc_ids, np.asarray(matching, dtype=str))] = True
        return docs[doc_index]
    if since is None and until is None:
        return None
    # An article without a date passes no date filter (NULL comparisons in SQL).
    low = (since - _EPOCH).days if since else _NO_DATE + 1
    high = (until - _EPOCH).days if until else np.iinfo(np.int32).max
    return (day >= low) & (day <= high)


def top_chunks(
    vectors: WarmVectors, query: np.ndarray, k: int, allowed: np.ndarray | None = None, per_doc: bool = False
) -> list[tuple[str, float]]:
    """Up to k (chunk_id, score) pairs by score, then chunk id, as semantic_search.sql ranks them;
    with per_doc, the best chunk of each of the k best articles."""
    want = max(1024, 64 * k)
    while True:
        rows, scores, bound = exact_scores(vectors, query, allowed, want)
        found = _top_chunks(vectors, rows, scores, k, per_doc)
        # Exact once the k-th score beats every row left out (strictly: a tie breaks on chunk id).
        if bound is None or (len(found) == k and found[-1][1] > bound):
            return found
        want *= 4


def _top_chunks(
    vectors: WarmVectors, rows: np.ndarray | None, scores: np.ndarray, k: int, per_doc: bool
) -> list[tuple[str, float]]:
    if not len(scores):
        return []
    if per_doc:
        return [(chunk_id, score) for chunk_id, _, score in best_per_article(scores, rows, vectors.chunk_ids, vectors.doc_index, k)]
    best = _best(scores, k)
    picked = best if rows is None else rows[best]
    ranked = sorted(zip((-scores[best]).tolist(), vectors.chunk_ids[picked].tolist()))
    return [(chunk_id, -negative) for negative, chunk_id in ranked[:k]]


def best_per_article(
    scores: np.ndarray, rows: np.ndarray | None, chunk_ids: np.ndarray, doc_index: np.ndarray, k: int
) -> list[tuple[str, int, float]]:
    """(chunk_id, row, score) of the best chunk of each of the k best articles, by score then chunk
    id. `rows`: each score's row in `chunk_ids` and `doc_index` (None: the positions are the rows)."""
    take = min(len(scores), 8 * k)
    while True:
        best = _best(scores, take)
        picked = best if rows is None else rows[best]
        ranked = sorted(zip((-scores[best]).tolist(), chunk_ids[picked].tolist(), picked.tolist()))
        found, seen = [], set()
        for negative, chunk_id, row in ranked:
            article = int(doc_index[row])
            if article not in seen:
                seen.add(article)
                found.append((chunk_id, row, -negative))
                if len(found) == k:
                    return found
        if take >= len(scores):
            return found
        take = min(len(scores), take * 4)  # not k articles among the best chunks yet: look deeper


def _best(scores: np.ndarray, take: int) -> np.ndarray:
    """Positions of the `take` highest scores (unordered), plus any tied with the lowest of them, so
    the tie-break on chunk id sees every candidate."""
    if take >= len(scores):
        return np.arange(len(scores))
    part = np.argpartition(-scores, take - 1)
    threshold = scores[part[take - 1]]
    return np.flatnonzero(scores >= threshold)
