"""Semantic, keyword and hybrid search over the warehouse, via the named queries beside this file.

Every mode is one SQL statement (semantic_search.sql, keyword_search.sql, hybrid_search.sql), so
what the CLI returns is exactly what a user gets by running the same query by name. This module
binds the parameters, checks the model, and adds a readable snippet to each hit.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import unicodedata
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import numpy as np

from newsindex import config
from newsindex.queries import named
from newsindex.queries.modes import MODES as REGISTRY
from newsindex.queries import session as sessions
from newsindex.queries.session import ModelMismatch, current_model_check, session
from newsindex.warehouse import documents
from newsindex.warehouse import keyword as keyword_index
from newsindex.warehouse.connection import driver_errors

MODES = tuple(REGISTRY)


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
    # [start, end) offsets into `text` of the words that match a query term (same stem as BM25).
    highlights: list[list[int]] = field(default_factory=list)
    # The same, into `snippet`.
    snippet_highlights: list[list[int]] = field(default_factory=list)

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
        # A session's own connection: DuckDB's errors become ours here, as `session` does for a path.
        with driver_errors():
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
    preloaded: tuple | None = None,
) -> SearchResult:
    """Search the warehouse `db` (a path, or a connection from `session()` to run many queries on one
    open file). `fusion` overrides hybrid_search's fusion parameters (semantic_weight, short_words, ...).
    `ann` answers semantic queries from the approximate index (queries/ann.py) where it applies.
    `in_memory` answers exact semantic and keyword queries from vectors and postings held in memory
    (queries/warm.py, queries/warm_keyword.py; same results as the SQL); by default it does so in a
    session (`db` a connection), where the one-time load pays off, and not for a one-shot search,
    which stays on SQL. `preloaded` is (WarmVectors, WarmPostings or None, WarmPassages) already
    loaded for `db` (an Index's snapshot), used instead of the per-process caches."""
    if mode not in REGISTRY:
        raise named.QueryError(f"unknown search mode {mode!r}; choose one of {', '.join(REGISTRY)}")
    spec = REGISTRY[mode]
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
    statement = named.get(spec.query)
    params = {"query": query, "k": k, "per_doc": per_doc, **filters.params()}
    vector = None
    if spec.side is None:
        # Enough candidates on each side for k fused articles.
        params["depth"] = max(100, 10 * k)
        params.update(fusion or {})
    if spec.embeds and not isinstance(db, duckdb.DuckDBPyConnection):
        # A one-shot search: the encoder loads (~0.3 s, outside the GIL) while the file opens.
        from newsindex.embedding import prefetch_query_encoder

        prefetch_query_encoder()
    with _connection(db, keyword=spec.keyword) as con:
        if spec.embeds:
            problem = _model_problem(con, db)
            if problem:
                raise ModelMismatch(problem)
        if spec.keyword and not _index_current(con, db):
            result.warnings.append("the keyword index is older than the stored chunks; run `newsindex ingest` to rebuild it")
        if mode != "semantic" and _has_stem(con):
            params["stems"] = query_stems(con, query)
        if in_memory is None:
            in_memory = isinstance(db, duckdb.DuckDBPyConnection)
        cold = None if in_memory or ann or not spec.embeds or isinstance(db, duckdb.DuckDBPyConnection) else _vector_file(con, db)
        if spec.embeds:
            # Only after the check: a model that did not make these vectors may not even load (no
            # export of it yet, weights torch cannot read), and its vector could not be compared.
            vector = embed_query(query)
            params["vector"] = vector_literal(vector)
        records = None
        if ann:
            records = _ann_search(con, db, vector, k, filters, _store(con, preloaded) if in_memory else None)
        elif mode == "semantic" and cold is not None:
            records = _warm_search(con, vector, k, filters, per_doc, (cold, None, None))
        elif cold is not None:
            # The semantic side from the vector file, and its articles' passages (most winners are
            # among them); the SQL then skips its scans and does the rest.
            from newsindex.queries import warm_hybrid  # here: it imports this module

            best = _semantic_best(con, cold, vector, int(params["depth"]), filters)
            params["semantic_best"] = json.dumps(best)
            params["semantic_passages"] = json.dumps(warm_hybrid.article_passages(cold, vector, {b["doc_id"] for b in best}))
        elif mode == "semantic" and in_memory:
            records = _warm_search(con, vector, k, filters, per_doc, preloaded)
        elif mode == "keyword" and in_memory:
            records = _warm_keyword(con, query, params.get("stems"), k, filters, per_doc, preloaded)
        elif spec.side is None and in_memory:
            records = _warm_hybrid(con, statement, params, vector, k, filters, preloaded, fusion)
        if records is None:
            # A mode's query takes the parameters it declares (hybrid has no per_doc: it always ranks articles).
            declared = {p.name for p in statement.params}
            cursor = con.execute(statement_sql(con, statement), statement.bind({k: v for k, v in params.items() if k in declared or k in (fusion or {})}))
            columns = [d[0] for d in cursor.description]
            records = [dict(zip(columns, row)) for row in cursor.fetchall()]
        for rank, values in enumerate(records, start=1):
            hit = Hit(rank=rank, **{k: v for k, v in values.items() if k in Hit.__dataclass_fields__})
            if spec.side:
                setattr(hit, f"{spec.side}_rank", rank)
                setattr(hit, f"{spec.side}_score", hit.score)
            result.hits.append(hit)
        matcher = Matcher(query, [hit.text for hit in result.hits], con)
    for hit in result.hits:
        hit.highlights = matcher.spans(hit.text)
        hit.snippet = snippet(hit.text, query, matcher=matcher)
        hit.snippet_highlights = matcher.spans(hit.snippet)
    result.seconds = time.perf_counter() - started
    return result


def _has_stem(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether fts's stem() is loaded (a keyword session); without it the query's words are looked
    up among those seen at ingest (see bm25_chunks in migration 004)."""
    # duckdb_extensions() would list the extension folder, which a locked session may not read.
    # Kept per connection: listing duckdb_functions() costs more than a warm keyword search, and a
    # session's extensions are loaded when it opens.
    if con not in _stem_loaded and con in sessions.checked:
        _stem_loaded[con] = sessions.checked[con]["fts"]
    if con not in _stem_loaded:
        _stem_loaded[con] = bool(con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'stem'").fetchone()[0])
    return _stem_loaded[con]


_stem_loaded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _index_current(con: duckdb.DuckDBPyConnection, db) -> bool:
    """Whether the keyword index covers the chunks; kept per session connection, as the model check."""
    if not isinstance(db, duckdb.DuckDBPyConnection):
        return keyword_index.search_index_is_current(con)
    if con not in _index_checked:
        _index_checked[con] = keyword_index.search_index_is_current(con)
    return _index_checked[con]


_index_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# A session's answer to the model check, kept per connection: its read-only connection keeps
# writers out of the file while it is open, so the stored models cannot change (3-4 ms a query).
_model_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model_problem(con: duckdb.DuckDBPyConnection, db) -> str | None:
    if not isinstance(db, duckdb.DuckDBPyConnection):
        # A one-shot search's own session(db), which checked as it opened.
        found = sessions.checked.get(con)
        return found["model_problem"] if found is not None else current_model_check(con, config.db_path(db))
    if con not in _model_checked:
        _model_checked[con] = current_model_check(con)
    return _model_checked[con]


def _warm_search(
    con: duckdb.DuckDBPyConnection, vector: np.ndarray, k: int, filters: Filters, per_doc: bool, preloaded: tuple | None = None
) -> list[dict] | None:
    """semantic_search.sql's answer from the vectors in memory; None where there is no file to cache."""
    from newsindex.queries import warm

    vectors = preloaded[0] if preloaded else warm.vectors_for(con)
    if vectors is None:
        return None
    allowed = warm.allowed_rows(con, vectors, filters.since, filters.until, filters.source, filters.doc)
    return _with_passages(con, warm.top_chunks(vectors, vector, k, allowed, per_doc), _store(con, preloaded))


def _warm_keyword(
    con: duckdb.DuckDBPyConnection, query: str, stems: list[str] | None, k: int, filters: Filters, per_doc: bool,
    preloaded: tuple | None = None,
) -> list[dict] | None:
    """keyword_search.sql's answer from the postings in memory; None where there are none (no file
    to cache, or an index missing or behind the chunks: SQL answers, with its warning)."""
    from newsindex.queries import warm, warm_keyword

    postings = preloaded[1] if preloaded else warm_keyword.postings_for(con)
    if postings is None:
        return None
    found = warm_keyword.search(con, postings, query, stems, k, filters.since, filters.until, filters.source, filters.doc, per_doc)
    return _with_passages(con, found, _store(con, preloaded))


def _warm_hybrid(
    con: duckdb.DuckDBPyConnection, statement: named.NamedQuery, params: dict, vector: np.ndarray, k: int,
    filters: Filters, preloaded: tuple | None = None, fusion: dict | None = None,
) -> list[dict] | None:
    """hybrid_search.sql's answer, fused from both sides' candidates in memory; None (the SQL
    scans) where either side has nothing in memory."""
    from newsindex.queries import warm, warm_hybrid, warm_keyword

    vectors, postings = preloaded[:2] if preloaded else (warm.vectors_for(con), warm_keyword.postings_for(con))
    if vectors is None or postings is None:
        return None
    declared = {p.name for p in statement.params}
    bound = statement.bind({name: value for name, value in params.items() if name in declared or name in (fusion or {})})
    return warm_hybrid.search(con, vectors, postings, _store(con, preloaded), params["query"], vector, params.get("stems"), k, bound,
                              **filters.params())  # fmt: skip


def _vector_file(con: duckdb.DuckDBPyConnection, db):
    """The warehouse's vectors as a warm.WarmVectors over the memory-mapped vector file
    (warehouse/vector_file.py), for a one-shot search; None where there is no current one."""
    from newsindex.queries import warm
    from newsindex.warehouse import vector_file

    state = warm.warehouse_state(con)
    found = vector_file.open_current(con, config.db_path(db), state)
    if found is None:
        return None
    return warm.WarmVectors(state, found.matrix, found.chunk_ids, found.doc_index, found.day, found.doc_ids, found.by_doc, found.doc_start,
                            live=found.live)  # fmt: skip


def _semantic_best(con: duckdb.DuckDBPyConnection, vectors, vector: np.ndarray, depth: int, filters: Filters) -> list[dict]:
    from newsindex.queries import warm, warm_hybrid

    allowed = warm.allowed_rows(con, vectors, filters.since, filters.until, filters.source, filters.doc)
    return warm_hybrid.semantic_best(vectors, vector, depth, allowed)


def _store(con: duckdb.DuckDBPyConnection, preloaded: tuple | None):
    """The warm.WarmPassages to show a warm search's winners from."""
    from newsindex.queries import warm

    return preloaded[2] if preloaded else warm.passages_for(con)


def _with_passages(con: duckdb.DuckDBPyConnection, found: list[tuple[str, float]], store=None) -> list[dict]:
    """The k winners' text and article metadata, in the winners' order, each with its score
    (from `store`, a warm.WarmPassages, where the session holds one)."""
    from newsindex.queries import warm

    passages = warm.passages(con, [chunk_id for chunk_id, _ in found], store)
    return [{**passages[chunk_id], "score": score} for chunk_id, score in found if chunk_id in passages]


def _ann_search(con: duckdb.DuckDBPyConnection, db, vector: np.ndarray, k: int, filters: Filters, store=None) -> list[dict]:
    from newsindex.queries import ann

    if isinstance(db, duckdb.DuckDBPyConnection):
        db = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    index = ann.open_index(con, config.db_path(db))
    return _with_passages(con, ann.nearest_chunks(index, vector, k, filters.since, filters.until), store)


def embed_query(text: str) -> np.ndarray:
    """The query's L2-normalised float32 vector, from the configured model (ONNX Runtime, no torch)."""
    from newsindex.embedding import query_encoder

    return query_encoder().encode([text])[0]


def vector_literal(vector: np.ndarray) -> str:
    """`[x, y, …]` for the search queries' `$vector` text parameter. repr() of each float32 (exact
    as a double) is the shortest decimal that reads back as the same double, hence the same float32:
    DuckDB's CAST gives the identical vector."""
    return "[" + ", ".join(map(repr, vector.astype(float).tolist())) + "]"


def statement_sql(con: duckdb.DuckDBPyConnection, statement: named.NamedQuery) -> str:
    """The named query's SQL for this warehouse: its vector width filled in where it needs one."""
    return statement.sql_for(documents.chunk_dimension(con)) if statement.needs_width else statement.sql


def fill_query_vector(con: duckdb.DuckDBPyConnection, statement: named.NamedQuery, params: dict, db: str | Path | None = None) -> dict:
    """Named queries that take `vector` get it from `query` when the caller did not give one."""
    if "vector" not in {p.name for p in statement.params} or params.get("vector") is not None or not params.get("query"):
        return params
    problem = current_model_check(con, db)
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


_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # runs of letters and digits: the words BM25 indexes
# Words a query may carry that say nothing about its subject (a subset of the full-text index's
# English stopwords): they are not highlighted and not counted as the query's terms.
_STOP = frozenset(
    "a about after all also an and any are as at be been but by can could did do does for from had has have he her his how i if "
    "in into is it its me my no not of on or our she so than that the their them then there these they this those to up us was "
    "we were what when where which while who whom whose why will with would you your".split()
)


@lru_cache(maxsize=1 << 16)
def _fold(word: str) -> str:
    """Lower case without accents, as the keyword index stores a word before stemming it (DuckDB's
    strip_accents: canonical decomposition, marks dropped; 'ﬁ' stays a ligature). Cached, and ASCII
    taken as it is: every word of every shown passage passes here on each search, most of them the
    same few thousand words."""
    lower = word.lower()
    if lower.isascii():
        return lower
    return "".join(c for c in unicodedata.normalize("NFD", lower) if not unicodedata.combining(c))


def query_stems(con: duckdb.DuckDBPyConnection, query: str) -> list[str]:
    """The Porter stems of the query's words, stop words included: warehouse/keyword.py's
    query_stems (the kw_tokenize macro, then stem()), with the words split here and their stems
    cached; the macro's regular expression costs ~2.5 ms a query to compile."""
    return sorted(set(_stems(con, {_fold(w) for w in _WORD.findall(query)}).values()))


def content_words(query: str) -> list[str]:
    """The query's words that can match: folded, stopwords left out."""
    return [w for w in (_fold(m.group()) for m in _WORD.finditer(query)) if w not in _STOP]


def word_count(query: str) -> int:
    """Words in the query, stopwords included: hybrid_search.sql's measure of a short query."""
    return len(_WORD.findall(query))


def term_coverage(query: str, text: str, con: duckdb.DuckDBPyConnection | None = None) -> float:
    """hybrid_search.sql's `coverage`: the share of the query's distinct terms (the stems of its
    content words) that the text holds among the stems of all its words; 0 for a query of stopwords."""
    wanted = set(content_words(query))
    if not wanted:
        return 0.0
    words = {_fold(w) for w in _WORD.findall(text)}
    stems = _stems(con, wanted | words)
    terms = {stems[w] for w in wanted}
    return len(terms & {stems[w] for w in words}) / len(terms)


# word -> Porter stem, as DuckDB's stem() gave it: the same word always has the same stem, and a
# search stems every word of the passages it shows (most of them the same few thousand words).
_stem_cache: dict[str, str] = {}


def _stems(con: duckdb.DuckDBPyConnection | None, words: set[str]) -> dict[str, str]:
    """Each word's Porter stem from DuckDB's `stem()`, the one the keyword index uses; a word is its
    own stem where the full-text extension is not loaded (a semantic-only session)."""
    if con is None or not words or not _has_stem(con):
        return {w: w for w in words}
    missing = sorted(w for w in words if w not in _stem_cache)
    if missing:
        try:
            # The words as one JSON text: DuckDB binds a Python list element by element, ~0.1 ms each.
            found = con.execute("SELECT w, stem(w, 'porter') FROM unnest(CAST(CAST($words AS JSON) AS VARCHAR[])) AS t(w)",
                                {"words": json.dumps(missing)}).fetchall()  # fmt: skip
        except duckdb.Error:
            return {w: w for w in words}
        if len(_stem_cache) > 1 << 18:
            _stem_cache.clear()
        _stem_cache.update(found)
    return {w: _stem_cache.get(w, w) for w in words}


class Matcher:
    """Finds a query's terms in texts: words with the same stem as a query word, case and accents
    ignored. Built once for the texts of one result, so their words are stemmed in one query."""

    def __init__(self, query: str, texts: list[str], con: duckdb.DuckDBPyConnection | None = None):
        wanted = set(content_words(query))
        words = {w for text in texts for w in map(_fold, _WORD.findall(text)) if w not in _STOP} if wanted else set()
        self._stems = _stems(con, wanted | words)
        self._targets = {self._stems[w] for w in wanted}
        self._matches: dict[str, bool] = {}  # a word as written -> whether it matches

    def spans(self, text: str) -> list[list[int]]:
        """[start, end) character offsets in `text` of the words that match, in order."""
        if not self._targets:
            return []
        found = []
        matches = self._matches
        for match in _WORD.finditer(text):
            written = match.group()
            hit = matches.get(written)
            if hit is None:
                word = _fold(written)
                hit = matches[written] = word not in _STOP and self._stems.get(word, word) in self._targets
            if hit:
                found.append([match.start(), match.end()])
        return found


def highlights(texts: list[str], query: str, con: duckdb.DuckDBPyConnection | None = None) -> list[list[list[int]]]:
    """For each text, the offsets of its words that match a query term (see Matcher)."""
    matcher = Matcher(query, texts, con)
    return [matcher.spans(text) for text in texts]


def snippet(text: str, query: str, width: int = 280, matcher: Matcher | None = None) -> str:
    """About `width` characters of the passage around its first query term, with ellipses where
    trimmed; the start of the passage if none match."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    spans = (matcher or Matcher(query, [flat])).spans(flat)
    first = spans[0][0] if spans else None
    if first is None or first < width // 3:
        start = 0
    else:
        start = flat.rfind(" ", 0, first - width // 3) + 1
    end = min(len(flat), start + width)
    if end < len(flat):
        end = flat.rfind(" ", start, end) if flat.rfind(" ", start, end) > start else end
    return ("…" if start > 0 else "") + flat[start:end].strip() + ("…" if end < len(flat) else "")
