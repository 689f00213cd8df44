"""Warm sessions answer exact semantic search from vectors in memory (queries/warm.py): the same
answer as semantic_search.sql, and never from vectors older than the warehouse."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest
from conftest import SEED_FILE, doc_id_of
from test_ann import DIM, clustered, synthetic_warehouse

from newsindex.queries import named, warm
from newsindex.queries.search import Filters, _with_passages, search, vector_literal
from newsindex.queries.session import session
from newsindex.warehouse import connection, documents

QUERIES = ["Putin dismissed the warning before the Crocus attack", "flood damage after heavy rain", "election results"]


def same_answer(warm_hits: list, sql_hits: list) -> None:
    assert [h.chunk_id for h in warm_hits] == [h.chunk_id for h in sql_hits]
    assert [h.text for h in warm_hits] == [h.text for h in sql_hits]
    assert [h.title for h in warm_hits] == [h.title for h in sql_hits]
    assert [h.score for h in warm_hits] == pytest.approx([h.score for h in sql_hits], abs=1e-5)


@pytest.mark.parametrize("per_doc", [False, True])
def test_warm_search_equals_the_sql_query_on_real_articles(search_db, per_doc):
    seed = doc_id_of(search_db, SEED_FILE.stem)
    filters = [
        None,
        Filters(since=dt.date(2024, 6, 1)),
        Filters(until=dt.date(2024, 6, 1)),
        Filters(source="corpus/*"),
        Filters(doc=seed),
        Filters(since=dt.date(2030, 1, 1)),  # nothing passes
    ]
    with session(search_db, keyword=False) as con:
        for query in QUERIES:
            for f in filters:
                for k in (3, 20):
                    in_memory = search(con, query, k=k, mode="semantic", filters=f, per_doc=per_doc)
                    in_sql = search(con, query, k=k, mode="semantic", filters=f, per_doc=per_doc, in_memory=False)
                    same_answer(in_memory.hits, in_sql.hits)
        assert warm._cache, "the session's searches were answered from memory"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """3 000 clustered vectors, 5 chunks an article, one article a day; every 7th article undated."""
    rng = np.random.default_rng(11)
    vectors = clustered(rng, 3000, topics=30)
    path = tmp_path_factory.mktemp("warm") / "synthetic.duckdb"
    synthetic_warehouse(path, vectors)
    con = connection.connect(path)
    con.execute("UPDATE documents SET published = NULL WHERE CAST(substr(doc_id, 2) AS INTEGER) % 7 = 0")
    con.close()
    picked = vectors[rng.integers(0, len(vectors), 8)] + rng.standard_normal((8, DIM)).astype(np.float32) / np.sqrt(DIM)
    return path, (picked / np.linalg.norm(picked, axis=1, keepdims=True)).astype(np.float32)


def sql_answer(con, query: np.ndarray, k: int, per_doc: bool, **filters) -> list[tuple[str, float]]:
    statement = named.get("semantic_search")
    params = statement.bind({"query": "synthetic", "vector": vector_literal(query), "k": k, "per_doc": per_doc, **filters})
    cursor = con.execute(statement.sql_for(documents.chunk_dimension(con)), params)
    columns = [d[0] for d in cursor.description]
    return [(row[columns.index("chunk_id")], row[columns.index("score")]) for row in cursor.fetchall()]


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"since": dt.date(2020, 6, 1)},
        {"until": dt.date(2020, 3, 1)},  # undated articles pass no date filter
        {"since": dt.date(2020, 2, 1), "until": dt.date(2020, 2, 3)},  # fewer than k pass
        {"source": "/corpus/d1*.txt"},
        {"doc": "d00042"},
    ],
)
def test_warm_ranking_equals_the_sql_query_on_synthetic_vectors(synthetic, filters):
    path, queries = synthetic
    with session(path, keyword=False) as con:
        vectors = warm.vectors_for(con)
        allowed = warm.allowed_rows(con, vectors, filters.get("since"), filters.get("until"), filters.get("source"), filters.get("doc"))
        for query in queries:
            for per_doc in (False, True):
                for k in (1, 10, 60):
                    expected = sql_answer(con, query, k, per_doc, **filters)
                    found = warm.top_chunks(vectors, query, k, allowed, per_doc)
                    assert [c for c, _ in found] == [c for c, _ in expected]
                    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-5)
                    assert [p["chunk_id"] for p in _with_passages(con, found)] == [c for c, _ in found]


def add_article(path, doc_id: str, vector: np.ndarray, published: dt.date) -> None:
    """What an ingest does: one new article with one chunk, in one transaction."""
    con = connection.connect(path)
    with connection.transaction(con):
        con.execute(
            "INSERT INTO documents (doc_id, source_path, format, title, lead, published, text, content_hash, chunk_key,"
            " doc_embedding, ingested_at, updated_at) VALUES (?, ?, 'txt', ?, '', ?, 'x', 'x', 'x', ?, ?, ?)",
            [doc_id, f"/corpus/{doc_id}.txt", f"Article {doc_id}", published, vector.tolist(), dt.datetime.now(), dt.datetime.now()],
        )
        con.execute(
            "INSERT INTO chunks SELECT ?, ?, 0, 'new passage', 0, 11, 2, ?, 'test'",
            [f"{doc_id}#0", doc_id, vector.tolist()],
        )
    con.close()


def test_a_warm_session_never_answers_from_vectors_older_than_the_warehouse(tmp_path):
    path = tmp_path / "w.duckdb"
    vectors = clustered(np.random.default_rng(5), 400, topics=4)
    synthetic_warehouse(path, vectors)
    near = vectors[17] + 0.3 * np.random.default_rng(6).standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)
    query = (near / np.linalg.norm(near)).astype(np.float32)
    with session(path, keyword=False) as con:
        before = warm.vectors_for(con)
        assert warm.vectors_for(con) is before  # reused while the connection is open
        assert warm.top_chunks(before, query, 1)[0][0] == "d00003#2"
    # An article whose chunk is the query itself: it must come first from now on.
    add_article(path, "new", query, dt.date(2024, 1, 1))
    with session(path, keyword=False) as con:
        after = warm.vectors_for(con)
        assert after is not before and len(after.chunk_ids) == 401
        assert warm.top_chunks(after, query, 1)[0][0] == "new#0"
        assert warm.allowed_rows(con, after, dt.date(2023, 1, 1), None, None, None).sum() == 1
    # Removing it (a prune) is seen too, although no updated_at moved forward.
    con = connection.connect(path)
    con.execute("DELETE FROM chunks WHERE doc_id = 'new'")
    con.execute("DELETE FROM documents WHERE doc_id = 'new'")
    con.close()
    with session(path, keyword=False) as con:
        assert warm.top_chunks(warm.vectors_for(con), query, 1)[0][0] == "d00003#2"


def test_an_in_memory_database_is_searched_in_sql():
    con = duckdb.connect()
    assert warm.database_path(con) is None
    assert warm.vectors_for(con) is None


def test_ann_under_source_filter_and_per_doc_still_returns_k(synthetic):
    path, _ = synthetic
    with session(path, keyword=False) as con:
        result = search(con, "a question", k=10, mode="semantic", ann=True, filters=Filters(source="/corpus/d1*.txt"))
        assert result.warnings and len(result.hits) == 10
        assert all(h.source_path.startswith("/corpus/d1") for h in result.hits)
        per_doc = search(con, "a question", k=10, mode="semantic", ann=True, per_doc=True)
        assert len({h.doc_id for h in per_doc.hits}) == 10
