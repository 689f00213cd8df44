"""Semantic, keyword and hybrid search over the warehouse, via the named queries beside this file.

Every mode is one SQL statement (semantic_search.sql, keyword_search.sql, hybrid_search.sql), so
what the CLI returns is exactly what a user gets by running the same query by name. This module
binds the parameters, checks the model, and adds a readable snippet to each hit.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

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
) -> SearchResult:
    """Search the warehouse `db` (a path, or a connection from `session()` to run many queries on one
    open file). `fusion` overrides hybrid_search's rrf_k and keyword_weight (for tuning with eval)."""
    if mode not in MODES:
        raise named.QueryError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    if not query.strip():
        raise named.QueryError("the query is empty")
    if k < 1:
        raise named.QueryError(f"-k must be at least 1, got {k}")
    started = time.perf_counter()
    result = SearchResult(query=query, mode=mode)
    statement = named.get(f"{mode}_search")
    params = {"query": query, "k": k, "per_doc": per_doc, **(filters or Filters()).params()}
    if mode == "hybrid":
        # Enough candidates on each side for k fused results, and for k documents with --per-doc.
        params["depth"] = max(100, 10 * k)
        params.update(fusion or {})
    with _connection(db, keyword=mode != "semantic") as con:
        if mode != "keyword":
            problem = current_model_check(con)
            if problem:
                raise ModelMismatch(problem)
        if mode != "semantic" and not store.search_index_is_current(con):
            result.warnings.append("the keyword index is older than the stored chunks; run `newsindex ingest` to rebuild it")
        cursor = con.execute(statement.sql, statement.bind(params))
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    for rank, row in enumerate(rows, start=1):
        values = dict(zip(columns, row))
        hit = Hit(rank=rank, **{k: v for k, v in values.items() if k in Hit.__dataclass_fields__})
        if mode == "semantic":
            hit.semantic_rank, hit.semantic_score = rank, hit.score
        elif mode == "keyword":
            hit.keyword_rank, hit.keyword_score = rank, hit.score
        hit.snippet = snippet(hit.text, query)
        result.hits.append(hit)
    result.seconds = time.perf_counter() - started
    return result


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
