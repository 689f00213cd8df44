"""Semantic, keyword and hybrid search over the warehouse, via the named queries beside this file.

Every mode is one SQL statement (semantic_search.sql, keyword_search.sql, hybrid_search.sql), so
what the CLI returns is exactly what a user gets by running the same query by name. This module
binds the parameters, checks the model, and adds a readable snippet to each hit.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import numpy as np

from newsindex import config
from newsindex.queries import named
from newsindex.queries.session import ModelMismatch, current_model_check, session
from newsindex.warehouse import store

MODES = ("hybrid", "semantic", "keyword")


@dataclass
class Filters:
    since: dt.date | None = None
    until: dt.date | None = None
    source: str | None = None
    doc: str | None = None

    def params(self) -> dict:
        return {"since": self.since, "until": self.until, "source": self.source, "doc": self.doc}


@dataclass
class Hit:
    rank: int
    chunk_id: str
    doc_id: str
    title: str
    published: dt.date | None
    source_path: str
    url: str | None
    text: str
    char_start: int
    char_end: int
    score: float
    semantic_rank: int | None = None
    semantic_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None
    snippet: str = ""

    def as_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["published"] = self.published.isoformat() if self.published else None
        return data


@dataclass
class SearchResult:
    query: str
    mode: str
    hits: list[Hit] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@contextmanager
def _connection(db, keyword: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """A session of the caller's (warm: many queries, one open file) or one for this query only."""
    if isinstance(db, duckdb.DuckDBPyConnection):
        yield db
    else:
        with session(db, keyword=keyword) as con:
            yield con


def search(
    db: str | Path | None | duckdb.DuckDBPyConnection,
    query: str,
    *,
    k: int = 10,
    mode: str = "hybrid",
    filters: Filters | None = None,
    per_doc: bool = False,
    fusion: dict | None = None,
    ann: bool = False,
    in_memory: bool | None = None,
) -> SearchResult:
    """Search the warehouse `db` (a path, or a connection from `session()` to run many queries on one
    open file). `fusion` overrides hybrid_search's rrf_k and keyword_weight (for tuning with eval).
    `ann` answers semantic queries from the approximate index (queries/ann.py) where it applies.
    `in_memory` answers exact semantic queries from vectors held in memory (queries/warm.py, same
    results as the SQL); by default it does so in a session (`db` a connection), where the one-time
    load pays off, and not for a one-shot search, which stays on SQL."""
    if mode not in MODES:
        raise named.QueryError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    if not query.strip():
        raise named.QueryError("the query is empty")
    if k < 1:
        raise named.QueryError(f"-k must be at least 1, got {k}")
    started = time.perf_counter()
    result = SearchResult(query=query, mode=mode)
    filters = filters or Filters()
    if ann and (mode != "semantic" or per_doc or filters.source or filters.doc):
        result.warnings.append("--ann applies to semantic search with at most date filters; answered by the exact scan")
        ann = False
    statement = named.get(f"{mode}_search")
    params = {"query": query, "k": k, "per_doc": per_doc, **filters.params()}
    vector = embed_query(query) if mode != "keyword" else None
    if vector is not None:
        params["vector"] = vector_literal(vector)
    if mode == "hybrid":
        # Enough candidates on each side for k fused results, and for k documents with --per-doc.
        params["depth"] = max(100, 10 * k)
        params.update(fusion or {})
    with _connection(db, keyword=mode != "semantic") as con:
        if mode != "keyword":
            problem = _model_problem(con, db)
            if problem:
                raise ModelMismatch(problem)
        if mode != "semantic" and not store.search_index_is_current(con):
            result.warnings.append("the keyword index is older than the stored chunks; run `newsindex ingest` to rebuild it")
        if in_memory is None:
            in_memory = isinstance(db, duckdb.DuckDBPyConnection)
        records = None
        if ann:
            records = _ann_search(con, db, vector, k, filters)
        elif mode == "semantic" and in_memory:
            records = _warm_search(con, vector, k, filters, per_doc)
        if records is None:
            cursor = con.execute(statement.sql, statement.bind(params))
            columns = [d[0] for d in cursor.description]
            records = [dict(zip(columns, row)) for row in cursor.fetchall()]
    for rank, values in enumerate(records, start=1):
        hit = Hit(rank=rank, **{k: v for k, v in values.items() if k in Hit.__dataclass_fields__})
        if mode == "semantic":
            hit.semantic_rank, hit.semantic_score = rank, hit.score
        elif mode == "keyword":
            hit.keyword_rank, hit.keyword_score = rank, hit.score
        hit.snippet = snippet(hit.text, query)
        result.hits.append(hit)
    result.seconds = time.perf_counter() - started
    return result


# A session's answer to the model check, kept per connection: its read-only connection keeps
# writers out of the file while it is open, so the stored models cannot change (3-4 ms a query).
_model_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model_problem(con: duckdb.DuckDBPyConnection, db) -> str | None:
    if not isinstance(db, duckdb.DuckDBPyConnection):
        return current_model_check(con)
    if con not in _model_checked:
        _model_checked[con] = current_model_check(con)
    return _model_checked[con]


def _warm_search(con: duckdb.DuckDBPyConnection, vector: np.ndarray, k: int, filters: Filters, per_doc: bool) -> list[dict] | None:
    """semantic_search.sql's answer from the vectors in memory; None where there is no file to cache."""
    from newsindex.queries import warm

    vectors = warm.vectors_for(con)
    if vectors is None:
        return None
    allowed = warm.allowed_rows(con, vectors, filters.since, filters.until, filters.source, filters.doc)
    return _with_passages(con, warm.top_chunks(vectors, vector, k, allowed, per_doc))


def _with_passages(con: duckdb.DuckDBPyConnection, found: list[tuple[str, float]]) -> list[dict]:
    """The k winners' text and article metadata, in the winners' order, each with its score."""
    statement = named.get("passages_by_id")
    cursor = con.execute(statement.sql, statement.bind({"chunk_ids": [chunk_id for chunk_id, _ in found]}))
    columns = [d[0] for d in cursor.description]
    passages = {row[0]: dict(zip(columns, row)) for row in cursor.fetchall()}
    return [{**passages[chunk_id], "score": score} for chunk_id, score in found if chunk_id in passages]


def _ann_search(con: duckdb.DuckDBPyConnection, db, vector: np.ndarray, k: int, filters: Filters) -> list[dict]:
    from newsindex.queries import ann

    if isinstance(db, duckdb.DuckDBPyConnection):
        db = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    index = ann.open_index(con, config.db_path(db))
    return _with_passages(con, ann.nearest_chunks(index, vector, k, filters.since, filters.until))


def embed_query(text: str) -> np.ndarray:
    """The query's L2-normalised float32 vector, from the configured model (ONNX Runtime, no torch)."""
    from newsindex.embedding import query_encoder

    return query_encoder().encode([text])[0]


def vector_literal(vector: np.ndarray) -> str:
    """`[x, y, …]` for the search queries' `$vector` text parameter. repr() of each float32 (exact
    as a double) is the shortest decimal that reads back as the same double, hence the same float32:
    DuckDB's CAST gives the identical vector."""
    return "[" + ", ".join(map(repr, vector.astype(float).tolist())) + "]"


def fill_query_vector(con: duckdb.DuckDBPyConnection, statement: named.NamedQuery, params: dict) -> dict:
    """Named queries that take `vector` get it from `query` when the caller did not give one."""
    if "vector" not in {p.name for p in statement.params} or params.get("vector") is not None or not params.get("query"):
        return params
    problem = current_model_check(con)
    if problem:
        raise ModelMismatch(problem)
    return {**params, "vector": vector_literal(embed_query(params["query"]))}


def related(db: str | Path | None | duckdb.DuckDBPyConnection, doc_id: str, k: int = 10) -> list[dict]:
    statement = named.get("related_documents")
    with _connection(db, keyword=False) as con:
        if not con.execute("SELECT count(*) FROM documents WHERE doc_id = ?", [doc_id]).fetchone()[0]:
            raise named.QueryError(f"no document with id {doc_id!r}")
        cursor = con.execute(statement.sql, statement.bind({"doc": doc_id, "k": k}))
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]


_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = {"the", "a", "an", "of", "to", "in", "on", "and", "or", "for", "is", "was", "who", "what", "which", "did", "does", "how", "why", "when", "with", "by", "at", "from"}


def snippet(text: str, query: str, width: int = 280) -> str:
    """About `width` characters of the passage around its first query word (matched on a
    stem-like prefix), with ellipses where trimmed; the start of the passage if none match."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    stems = [w.lower()[: max(4, len(w) - 2)] for w in _WORD.findall(query) if w.lower() not in _STOP]
    first = None
    for match in _WORD.finditer(flat):
        word = match.group().lower()
        if any(word.startswith(stem) for stem in stems):
            first = match.start()
            break
    if first is None or first < width // 3:
        start = 0
    else:
        start = flat.rfind(" ", 0, first - width // 3) + 1
    end = min(len(flat), start + width)
    if end < len(flat):
        end = flat.rfind(" ", start, end) if flat.rfind(" ", start, end) > start else end
    return ("…" if start > 0 else "") + flat[start:end].strip() + ("…" if end < len(flat) else "")
