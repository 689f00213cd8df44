"""Hybrid search for warm sessions: both sides' candidates from memory, fused by hybrid_search.sql.

The fusion (normalisation, weights, the best passage of each article) is defined once, in
hybrid_search.sql. What costs there is the two scans that feed it: every chunk's inner product
with the query, and bm25_chunks. A warm session has both in memory (queries/warm.py,
queries/warm_keyword.py), so it computes the same candidates here and binds them to the query as
`semantic_best`, `semantic_passages` and `keyword_passages` (JSON text), which replace the scans. Fed the same candidates, the SQL
gives the same answer (tests/test_warm.py):

- semantic: each article's best passage score, for at least the `depth` best articles (the query
  keeps the top `depth` itself, so extra ones, such as ties at the edge, change nothing);
- keyword: bm25_chunks' passages as keyword_scores holds them (the best 4 x depth by score, then
  chunk_no, without a source or document filter; every match with one), restricted to the
  articles that can matter: the keyword side's top `depth` and the semantic candidates (every
  winner is one of those, and its best passage is chosen among its own passages);
- the semantic score of every passage of those articles (the SQL recomputes them for its k
  winners, a scan of the chunks' article ids).
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np

from newsindex.queries import warm, warm_keyword


def semantic_best(
    vectors: warm.WarmVectors, query: np.ndarray, depth: int, allowed: np.ndarray | None
) -> list[dict]:
    """{doc_id, score} of each of the `depth` articles with the best passages (and any tied)."""
    if allowed is None:
        rows, values = None, vectors.matrix @ query
    else:
        rows = np.flatnonzero(allowed)
        values = vectors.matrix[rows] @ query if len(rows) < len(vectors.matrix) // 4 else (vectors.matrix @ query)[rows]
    articles = vectors.doc_index if rows is None else vectors.doc_index[rows]
    best = top_articles(values, articles, depth)
    return [{"doc_id": str(vectors.doc_ids[a]), "score": s} for a, s in best.items()]


def top_articles(values: np.ndarray, articles: np.ndarray, depth: int) -> dict[int, float]:
    """article -> its best value, for the `depth` articles with the best values, plus any tied with
    the last of them (the SQL breaks such ties by doc_id; passing them all lets it)."""
    if not len(values):
        return {}
    take = min(len(values), 8 * depth)
    while True:
        best = warm._best(values, take)
        order = best[np.argsort(-values[best], kind="stable")]
        found: dict[int, float] = {}
        last = None
        for value, article in zip(values[order].tolist(), articles[order].tolist()):
            if article in found:
                continue
            if len(found) >= depth and value < last:
                return found
            found[article] = last = value
        if take >= len(values) or len(found) >= depth:
            return found  # beyond `take` every value is below the last one kept
        take = min(len(values), take * 4)  # not enough articles among the best passages yet


def keyword_passages(
    postings: warm_keyword.WarmPostings,
    term_ids: list[int],
    depth: int,
    allowed: np.ndarray | None,
    filtered_docs: bool,
    also_docs: set[str],
) -> list[dict]:
    """{chunk_id, doc_id, score} of keyword_scores' passages whose article is among the keyword
    side's top `depth` or in `also_docs`."""
    rows, values = warm_keyword.scores(postings, term_ids)
    if allowed is not None:
        keep = allowed[rows]
        rows, values = rows[keep], values[keep]
    if not len(rows):
        return []
    if not filtered_docs:
        # bm25_chunks' `top := 4 * depth`: score, then chunk_no (the row order).
        best = warm._best(values, 4 * depth)
        order = np.lexsort((rows[best], -values[best]))[: 4 * depth]
        rows, values = rows[best][order], values[best][order]
    articles = postings.doc_index[rows]
    seen = top_articles(values, articles, depth)
    wanted = np.zeros(len(postings.doc_ids) + 1, dtype=bool)
    wanted[list(seen)] = True
    wanted[-1] = False  # a chunk whose article is gone: the SQL's joins drop it
    if also_docs:
        known = np.asarray(sorted(also_docs), dtype=str)
        positions = np.searchsorted(postings.doc_ids, known)
        present = positions < len(postings.doc_ids)
        positions = positions[present]
        wanted[positions[postings.doc_ids[positions] == known[present]]] = True
    keep = wanted[articles]
    rows, values, articles = rows[keep], values[keep], articles[keep]
    chunk_ids = postings.chunk_ids[rows].tolist()
    doc_ids = postings.doc_ids[np.maximum(articles, 0)].tolist()
    return [{"chunk_id": c, "doc_id": d, "score": s} for c, d, s in zip(chunk_ids, doc_ids, values.tolist())]


def candidates(
    con: duckdb.DuckDBPyConnection,
    vectors: warm.WarmVectors,
    postings: warm_keyword.WarmPostings,
    query: str,
    vector: np.ndarray,
    stems: list[str] | None,
    depth: int,
    since: dt.date | None = None,
    until: dt.date | None = None,
    source: str | None = None,
    doc: str | None = None,
) -> dict:
    """hybrid_search.sql's `semantic_best` and `keyword_passages` parameters for this query."""
    allowed = warm.allowed_rows(con, vectors, since, until, source, doc)
    semantic = semantic_best(vectors, vector, depth, allowed)
    keyword_allowed, filtered_docs = warm_keyword.allowed_rows(con, postings, since, until, source, doc)
    terms = warm_keyword.query_terms(con, postings, query, stems)
    keyword = keyword_passages(postings, terms, depth, keyword_allowed, filtered_docs, {s["doc_id"] for s in semantic})
    # Every winner is a candidate of one side; its passages' semantic scores, for the best passage.
    articles = np.searchsorted(vectors.doc_ids, np.asarray(sorted({s["doc_id"] for s in semantic} | {p["doc_id"] for p in keyword}), dtype=str))
    articles = articles[articles < len(vectors.doc_ids)]
    rows = np.concatenate([vectors.by_doc[vectors.doc_start[a] : vectors.doc_start[a + 1]] for a in articles.tolist()]) if len(articles) else np.empty(0, np.int64)
    passages = [
        {"chunk_id": chunk_id, "doc_id": str(vectors.doc_ids[a]), "score": score}
        for chunk_id, a, score in zip(vectors.chunk_ids[rows].tolist(), vectors.doc_index[rows].tolist(), (vectors.matrix[rows] @ vector).tolist())
    ]  # fmt: skip
    return {"semantic_best": json.dumps(semantic), "keyword_passages": json.dumps(keyword), "semantic_passages": json.dumps(passages)}
