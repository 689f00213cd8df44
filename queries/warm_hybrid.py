"""Hybrid search for warm sessions: both sides' candidates from memory, fused here as
hybrid_search.sql fuses them.

The fusion (normalisation, weights, the best passage of each article) is defined in
hybrid_search.sql, which cold searches and SQL users run. What costs there is the two scans that
feed it (every chunk's inner product with the query, and bm25_chunks) and, for a warm session,
binding candidates to it. A warm session has both sides in memory (queries/warm.py,
queries/warm_keyword.py), so it computes the same candidates and evaluates the same fusion in
Python (`fuse`); fed the same candidates, the SQL gives the same answer (tests/test_warm.py, which
also binds them to the SQL as `semantic_best`, `semantic_passages` and `keyword_passages`):

- semantic: each article's best passage score, for at least the `depth` best articles (the query
  keeps the top `depth` itself, so extra ones, such as ties at the edge, change nothing);
- keyword: bm25_chunks' passages as keyword_scores holds them (the best 4 x depth by score, then
  chunk_no, without a source or document filter; every match with one), restricted to the
  articles that can matter: the keyword side's top `depth` and the semantic candidates (every
  winner is one of those, and its best passage is chosen among its own passages);
- the semantic score of every passage of those articles.
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import Future, ThreadPoolExecutor

import duckdb
import numpy as np

from newsindex.queries import warm, warm_keyword
from newsindex.queries.search import term_coverage, word_count


# One worker a core: a server's concurrent searches each hand their scan to it.
_SCANS = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="newsindex-scan")


def semantic_best(
    vectors: warm.WarmVectors, query: np.ndarray, depth: int, allowed: np.ndarray | None
) -> list[dict]:
    """{doc_id, score} of each of the `depth` articles with the best passages (and any tied)."""
    want = max(1024, 8 * depth)
    while True:
        rows, values, bound = warm.exact_scores(vectors, query, allowed, want)
        articles = vectors.doc_index if rows is None else vectors.doc_index[rows]
        best = top_articles(values, articles, depth)
        # Exact once the last article kept beats every passage left out (see warm.exact_scores).
        if bound is None or (len(best) >= depth and min(best.values()) > bound):
            return [{"doc_id": str(vectors.doc_ids[a]), "score": s} for a, s in best.items()]
        want *= 4


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


def keyword_ranked(
    postings: warm_keyword.WarmPostings,
    term_ids: list[int],
    depth: int,
    allowed: np.ndarray | None,
    filtered_docs: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, float]]:
    """(rows, scores, articles) of keyword_scores' passages, and the keyword side's top `depth`
    articles (top_articles)."""
    rows, values = warm_keyword.allowed_scores(postings, term_ids, allowed)
    if len(rows) and not filtered_docs:
        # bm25_chunks' `top := 4 * depth`: score, then chunk_no (the row order).
        best = warm._best(values, 4 * depth)
        order = np.lexsort((rows[best], -values[best]))[: 4 * depth]
        rows, values = rows[best][order], values[best][order]
    articles = postings.doc_index[rows]
    return rows, values, articles, top_articles(values, articles, depth)


def keyword_passages(
    postings: warm_keyword.WarmPostings,
    ranked: tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, float]],
    also_docs: set[str],
) -> list[dict]:
    """{chunk_id, doc_id, score} of the `ranked` passages (keyword_ranked) whose article is among
    the keyword side's top `depth` or in `also_docs`."""
    rows, values, articles, seen = ranked
    if not len(rows):
        return []
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


def sides(
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
) -> tuple[list[dict], list[dict]]:
    """hybrid_search.sql's `semantic_best` and `keyword_passages` for this query."""
    allowed = warm.allowed_rows(con, vectors, since, until, source, doc)
    # From COARSE_FROM chunks the semantic scan is faiss's float16 one: one thread, outside the
    # GIL, bound by one core's memory bandwidth. It then runs beside the keyword side's work on
    # this thread (it touches no DuckDB connection, which one thread at a time may use). Below,
    # the scan is a BLAS product that already uses every core, and stays on this thread.
    if vectors.coarse is not None:
        scan = _SCANS.submit(semantic_best, vectors, vector, depth, allowed)
    else:
        scan = Future()
        scan.set_result(semantic_best(vectors, vector, depth, allowed))
    try:
        keyword_allowed, filtered_docs = warm_keyword.allowed_rows(con, postings, since, until, source, doc)
        terms = warm_keyword.query_terms(con, postings, query, stems)
        ranked = keyword_ranked(postings, terms, depth, keyword_allowed, filtered_docs)
    finally:
        semantic = scan.result()
    return semantic, keyword_passages(postings, ranked, {s["doc_id"] for s in semantic})


def article_passages(vectors: warm.WarmVectors, vector: np.ndarray, doc_ids: set[str]) -> list[dict]:
    """{chunk_id, doc_id, score}: the semantic score of every passage of the articles `doc_ids`
    (hybrid_search.sql's `semantic_passages`, from which it picks each winner's best passage)."""
    articles = np.searchsorted(vectors.doc_ids, np.asarray(sorted(doc_ids), dtype=str))
    articles = articles[articles < len(vectors.doc_ids)]
    if not len(articles):
        return []
    rows = np.concatenate([vectors.by_doc[vectors.doc_start[a] : vectors.doc_start[a + 1]] for a in articles.tolist()])
    ids, docs = vectors.chunk_ids[rows].tolist(), vectors.doc_ids[vectors.doc_index[rows]].tolist()
    return [{"chunk_id": c, "doc_id": d, "score": s} for c, d, s in zip(ids, docs, (vectors.matrix[rows] @ vector).tolist())]


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
) -> tuple[list[dict], list[dict], list[dict]]:
    """hybrid_search.sql's candidates for this query: (semantic_best, keyword_passages,
    semantic_passages), as its parameters of those names take them (as JSON text). Every winner is
    a candidate of one side, so the passages are those of every candidate article; search() scores
    only the winners' passages, which is all the SQL reads of them."""
    semantic, keyword = sides(con, vectors, postings, query, vector, stems, depth, since, until, source, doc)
    every = {s["doc_id"] for s in semantic} | {p["doc_id"] for p in keyword}
    return semantic, keyword, article_passages(vectors, vector, every)


def search(
    con: duckdb.DuckDBPyConnection,
    vectors: warm.WarmVectors,
    postings: warm_keyword.WarmPostings,
    store: warm.WarmPassages | None,
    query: str,
    vector: np.ndarray,
    stems: list[str] | None,
    k: int,
    params: dict,
    since: dt.date | None = None,
    until: dt.date | None = None,
    source: str | None = None,
    doc: str | None = None,
) -> list[dict]:
    """hybrid_search.sql's rows for this query, fused here from the candidates in memory.

    Binding the candidates to the SQL as JSON and fusing there cost more than both scans together
    (bench/RESULTS.md), so a warm session evaluates the same expressions in the same order and
    types: semantic scores are FLOAT in the SQL (float32 here), BM25 scores and the weight DOUBLE.
    The query-dependent weight's inputs (word count, term coverage of the keyword side's best
    passage) are search.py's Python twins of the SQL's: its regular expressions cost ~2.5 ms each
    to compile, per query. `params`: hybrid_search's parameters, bound."""
    semantic, keyword = sides(con, vectors, postings, query, vector, stems, int(params["depth"]), since, until, source, doc)
    winners = fuse(con, query, k, params, semantic, keyword, vectors, vector, store)
    texts = warm.passages(con, [w["chunk_id"] for w in winners], store)
    return [{**texts[w["chunk_id"]], **w} for w in winners if w["chunk_id"] in texts]


def _ranked(best: dict[str, float], depth: int) -> dict[str, tuple[int, float]]:
    """doc_id -> (rank, score) of the `depth` best, ordered by score descending, then doc_id."""
    order = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:depth]
    return {doc_id: (rank, score) for rank, (doc_id, score) in enumerate(order, start=1)}


def _normalised(score, low, high, kind):
    """(score - low) / (high - low) in the side's type; 1 where the side has one distinct score
    (or none: a NULL range makes the SQL's CASE fall through to 1)."""
    if low is None or not high > low:
        return 1.0
    return float(kind(kind(score) - kind(low)) / kind(kind(high) - kind(low)))


def fuse(
    con: duckdb.DuckDBPyConnection, query: str, k: int, params: dict,
    semantic: list[dict], keyword: list[dict], vectors: warm.WarmVectors, vector: np.ndarray,
    store: warm.WarmPassages | None = None,
) -> list[dict]:  # fmt: skip
    """The k winners of hybrid_search.sql given its candidates: {chunk_id (the best passage), score,
    semantic_rank, semantic_score, keyword_rank, keyword_score}, best first. The winners' passages
    are scored from `vectors` (article_passages), as the SQL scores only theirs."""
    depth = int(params["depth"])
    sem = _ranked({s["doc_id"]: float(np.float32(s["score"])) for s in semantic}, depth)
    per_doc: dict[str, float] = {}
    for p in keyword:
        per_doc[p["doc_id"]] = max(per_doc.get(p["doc_id"], p["score"]), p["score"])
    kw = _ranked(per_doc, depth)
    sem_scores = [score for _, score in sem.values()]
    kw_scores = [score for _, score in kw.values()]
    sem_low, sem_high = (min(sem_scores), max(sem_scores)) if sem_scores else (None, None)
    kw_low, kw_high = (min(kw_scores), max(kw_scores)) if kw_scores else (None, None)

    share = 0.0
    if kw:
        first = next(iter(kw))  # _ranked keeps rank order
        best_chunk = min((p for p in keyword if p["doc_id"] == first), key=lambda p: (-p["score"], p["chunk_id"]))["chunk_id"]
        best_passage = warm.passages(con, [best_chunk], store).get(best_chunk)
        share = term_coverage(query, best_passage["text"], con) if best_passage else 0.0
    w = params.get("semantic_weight")
    if w is None:
        if not kw_scores or kw_high <= 0:
            margin = 0.0
        elif len(kw_scores) == 1:
            margin = 1.0
        else:
            second = kw_scores[1]  # rank order
            margin = (kw_high - second) / kw_high
        short = word_count(query) <= params["short_words"]
        w = min(params["short_semantic_weight"] if short else 1.0, 1.0 - margin * share)

    def combined(s: float | None, kscore: float | None) -> float:
        s_part = 0.0 if s is None else _normalised(s, sem_low, sem_high, np.float32)
        k_part = 0.0 if kscore is None else _normalised(kscore, kw_low, kw_high, float)
        return w * s_part + (1 - w) * k_part

    fused = []
    for doc_id in sem.keys() | kw.keys():
        s_rank, s_score = sem.get(doc_id, (None, None))
        k_rank, k_score = kw.get(doc_id, (None, None))
        fused.append((combined(s_score, k_score), s_score, doc_id, s_rank, k_rank, k_score))
    fused.sort(key=lambda f: (-f[0], f[1] is None, -(f[1] or 0.0), f[2]))
    top = {f[2]: f for f in fused[:k]}

    keyword_of = {p["chunk_id"]: p["score"] for p in keyword}
    best: dict[str, tuple] = {}
    for p in article_passages(vectors, vector, set(top)):
        if p["doc_id"] not in top:
            continue
        s = float(np.float32(p["score"]))
        key = (w * _normalised(s, sem_low, sem_high, np.float32) + (1 - w) * (0.0 if p["chunk_id"] not in keyword_of else _normalised(keyword_of[p["chunk_id"]], kw_low, kw_high, float)), s)
        if p["doc_id"] not in best or key > best[p["doc_id"]][0]:
            best[p["doc_id"]] = (key, p["chunk_id"])
    return [
        {"chunk_id": best[doc_id][1], "score": f[0], "semantic_rank": f[3], "semantic_score": f[1], "keyword_rank": f[4], "keyword_score": f[5]}
        for doc_id, f in top.items() if doc_id in best
    ]  # fmt: skip
