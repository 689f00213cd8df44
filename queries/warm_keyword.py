"""BM25 keyword search from memory, for warm sessions (as queries/warm.py does for semantic search).

`bm25_chunks` (migration 004) reads only the postings of the query's terms, but each query still
pays DuckDB's scan, hash aggregate and joins: hundreds of ms at 1M chunks (bench/RESULTS.md). A warm
session loads the postings once into CSR arrays (term -> chunk rows and term frequencies) with the
chunk lengths, document frequencies and average length, and scores a query with a few NumPy
gathers and one `bincount`. The formula is bm25_chunks' own (k1 = 1.2, b = 0.75, base-10 log, df
over all chunks before the date filter), evaluated in the same order of operations; the query's
terms come from keyword_query_terms.sql, bm25_chunks' term lookup, so tokenising, stop words and
stems are the warehouse's. Filters are masks as in warm.allowed_rows. The answer is
keyword_search.sql's: same chunks, same order, scores equal up to summation order
(tests/test_warm.py).

Memory: 6-8 bytes per posting (chunk row int32, term frequency uint16 or int32) plus ~20 bytes
per chunk; bench/RESULTS.md has the figure at 1M chunks.

Staleness: keyed like the warm vectors (warm.warehouse_state), and checked once per connection.
"""

from __future__ import annotations

import datetime as dt
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from newsindex.queries import named, warm

# bm25_chunks' defaults, which keyword_search.sql and hybrid_search.sql use.
K1 = 1.2
B = 0.75


@dataclass
class WarmPostings:
    state: tuple
    term_start: np.ndarray  # (max term_id + 2,) int64: postings of term t are [term_start[t], term_start[t + 1])
    rows: np.ndarray  # (postings,) int32: the chunk's row in the arrays below
    tf: np.ndarray  # (postings,) uint16 or int32: term frequency
    length: np.ndarray  # (chunks,) int32: the chunk's length in terms (BM25's |d|)
    chunk_ids: np.ndarray  # (chunks,) object (str), rows in chunk_no order (bm25_chunks' tie-break)
    doc_index: np.ndarray  # (chunks,) int32: position of the article in doc_id order, -1 when it is gone
    day: np.ndarray  # (chunks,) int32: publication day since 1970-01-01, warm._NO_DATE when unknown
    doc_ids: np.ndarray  # (documents,) str, sorted: filtered_documents' list, unfiltered
    avgdl: float  # mean chunk length over all indexed chunks, as avg(len) in bm25_chunks
    terms: dict[str, int]  # kw_terms: stem -> term_id

    @property
    def nbytes(self) -> int:
        arrays = (self.term_start, self.rows, self.tf, self.length, self.doc_index, self.day, self.doc_ids)
        strings = sum(len(c) + 49 for c in self.chunk_ids) + sum(len(t) + 49 + 28 for t in self.terms)
        return sum(a.nbytes for a in arrays) + 8 * len(self.chunk_ids) + strings + sys.getsizeof(self.terms)


_cache: dict[Path, WarmPostings] = {}
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def is_available(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the warehouse has the postings tables and they cover the chunks (else: SQL answers,
    with its warning)."""
    from newsindex.warehouse import keyword

    return keyword.is_built(con) and keyword.is_current(con)


def postings_for(con: duckdb.DuckDBPyConnection) -> WarmPostings | None:
    """The connection's keyword index in memory, loaded on first use or when the warehouse changed;
    None for an in-memory database or one whose index is missing or behind the chunks."""
    return warm.snapshot_for(con, _cache, _checked, load, is_available)


def load(con: duckdb.DuckDBPyConnection, state: tuple) -> WarmPostings:
    chunks = warm._run(con, "keyword_chunks", {}).fetchnumpy()
    chunk_nos = np.asarray(chunks["chunk_no"], dtype=np.int64)
    length = np.asarray(chunks["len"], dtype=np.int32)
    doc_index = _filled(chunks["doc_index"], -1)
    day = _filled(chunks["day"], warm._NO_DATE)
    chunk_ids = np.asarray(chunks["chunk_id"], dtype=object)
    del chunks
    postings = warm._run(con, "keyword_postings", {}).fetchnumpy()
    term_ids = np.asarray(postings["term_id"], dtype=np.int32)
    order = np.argsort(term_ids, kind="stable")  # a radix sort: postings are int32 term ids
    term_ids = term_ids[order]
    rows = np.searchsorted(chunk_nos, np.asarray(postings["chunk_no"], dtype=np.int64)[order]).astype(np.int32)
    tf_all = np.asarray(postings["tf"])[order]
    del postings, order
    tf = tf_all.astype(np.uint16) if len(tf_all) and tf_all.max() < 2**16 else tf_all.astype(np.int32)
    del tf_all
    top = int(term_ids[-1]) if len(term_ids) else 0
    term_start = np.zeros(top + 2, dtype=np.int64)
    np.cumsum(np.bincount(term_ids, minlength=top + 1), out=term_start[1:])
    doc_ids = np.asarray([row[0] for row in warm._run(con, "filtered_documents", {}).fetchall()], dtype=str)
    avgdl = float(length.sum(dtype=np.int64)) / len(length) if len(length) else 0.0
    terms = dict(con.execute("SELECT term, term_id FROM kw_terms").fetchall())
    return WarmPostings(state, term_start, rows, tf, length, chunk_ids, doc_index, day, doc_ids, avgdl, terms)


def _filled(column, fill: int) -> np.ndarray:
    if isinstance(column, np.ma.MaskedArray):
        return column.filled(fill).astype(np.int32)
    return np.asarray(column, dtype=np.int32)


def query_terms(con: duckdb.DuckDBPyConnection, postings: WarmPostings, query: str, stems: list[str] | None) -> list[int]:
    """The term ids bm25_chunks scores for the query. With stems (what search() passes where fts
    is loaded) they are looked up in memory, as the macro looks them up in kw_terms (by the md5 of
    the stem, i.e. the stem itself): a scan of kw_terms costs ~10 ms a query. Without, the words
    go through keyword_query_terms.sql, the macro's own lookup by the words seen at ingest."""
    if stems is not None:
        return sorted({postings.terms[stem] for stem in stems if stem in postings.terms})
    return [row[0] for row in warm._run(con, "keyword_query_terms", {"query": query, "stems": stems}).fetchall()]


def allowed_rows(
    con: duckdb.DuckDBPyConnection,
    postings: WarmPostings,
    since: dt.date | None,
    until: dt.date | None,
    source: str | None,
    doc: str | None,
) -> tuple[np.ndarray | None, bool]:
    """Boolean mask of the chunk rows that pass the filters (None: no filter), and whether a source
    or document filter is among them (keyword_search.sql keeps its top k in bm25_chunks only
    without one). Dates compare in memory; a glob or id asks filtered_documents, as warm does."""
    mask = warm.filter_mask(con, postings.doc_ids, postings.doc_index, postings.day, since, until, source, doc)
    return mask, source is not None or doc is not None


def allowed_scores(postings: WarmPostings, term_ids: list[int], allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """`scores` of the chunks that pass the filter mask (None: every chunk)."""
    rows, values = scores(postings, term_ids)
    if allowed is None:
        return rows, values
    keep = allowed[rows]
    return rows[keep], values[keep]


def scores(postings: WarmPostings, term_ids: list[int], k1: float = K1, b: float = B) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of every chunk holding a query term: bm25_chunks' `scores` before its date
    filter and LIMIT. A chunk's shares are added in term order, whichever way it is summed."""
    n = len(postings.length)
    parts_rows, parts_scores = [], []
    for term in term_ids:
        if term + 1 >= len(postings.term_start):
            continue
        start, end = postings.term_start[term], postings.term_start[term + 1]
        if start == end:
            continue
        rows = postings.rows[start:end]
        tf = postings.tf[start:end].astype(np.float64)
        df = float(end - start)
        idf = np.log10((n - df + 0.5) / (df + 0.5) + 1)
        # The macro's expression, operation for operation, so each term's share is bitwise the same.
        share = idf * (tf * (k1 + 1) / (tf + k1 * (1 - b + b * (postings.length[rows] / postings.avgdl))))
        parts_rows.append(rows)
        parts_scores.append(share)
    if not parts_rows:
        return np.empty(0, dtype=np.int32), np.empty(0)
    if len(parts_rows) == 1:
        return parts_rows[0], parts_scores[0]
    rows = np.concatenate(parts_rows)
    shares = np.concatenate(parts_scores)
    if len(rows) * 8 < n:  # few matches: sum them without touching an array per chunk
        order = np.argsort(rows, kind="stable")
        rows, shares = rows[order], shares[order]
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        return rows[starts], _ordered_sums(shares, starts)
    total = np.bincount(rows, weights=shares, minlength=n)
    hit = np.zeros(n, dtype=bool)
    hit[rows] = True
    matched = np.flatnonzero(hit).astype(np.int32)
    return matched, total[matched]


def _ordered_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of values[starts[i]:starts[i+1]], each added left to right (as bincount does), where
    np.add.reduceat may pair them differently."""
    ends = np.r_[starts[1:], len(values)]
    sizes = ends - starts
    total = values[starts].copy()
    for extra in range(1, int(sizes.max()) if len(sizes) else 0):
        more = sizes > extra
        total[more] += values[starts[more] + extra]
    return total


def keyword_chunks(
    postings: WarmPostings,
    term_ids: list[int],
    k: int,
    allowed: np.ndarray | None = None,
    filtered_docs: bool = False,
    per_doc: bool = False,
) -> list[tuple[str, int, float]]:
    """Up to k (chunk_id, row, score) by score then chunk id: keyword_search.sql's ranking. Without a source/doc filter or per_doc the k are chosen by
    score then chunk_no, as bm25_chunks' `top` chooses them; otherwise by score then chunk id."""
    rows, values = allowed_scores(postings, term_ids, allowed)
    if not len(rows):
        return []
    if not per_doc:
        best = warm._best(values, k)
        if not filtered_docs:
            # bm25_chunks' LIMIT: score, then chunk_no (the row order), then the k re-sorted by id.
            chosen = sorted(zip((-values[best]).tolist(), rows[best].tolist()))[:k]
            picked = [(postings.chunk_ids[r], r, -negative) for negative, r in chosen]
        else:
            picked = sorted(zip(postings.chunk_ids[rows[best]].tolist(), rows[best].tolist(), values[best].tolist()),
                            key=lambda t: (-t[2], t[0]))[:k]  # fmt: skip
        return sorted(picked, key=lambda t: (-t[2], t[0]))
    return warm.best_per_article(values, rows, postings.chunk_ids, postings.doc_index, k)


def search(
    con: duckdb.DuckDBPyConnection,
    postings: WarmPostings,
    query: str,
    stems: list[str] | None,
    k: int,
    since: dt.date | None = None,
    until: dt.date | None = None,
    source: str | None = None,
    doc: str | None = None,
    per_doc: bool = False,
) -> list[tuple[str, float]]:
    """keyword_search.sql's (chunk_id, score) winners, from memory."""
    allowed, filtered_docs = allowed_rows(con, postings, since, until, source, doc)
    found = keyword_chunks(postings, query_terms(con, postings, query, stems), k, allowed, filtered_docs or per_doc, per_doc)
    return [(chunk_id, score) for chunk_id, _, score in found]
