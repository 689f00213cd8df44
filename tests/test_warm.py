"""Warm sessions answer exact semantic search from vectors in memory (queries/warm.py) and keyword
search from postings in memory (queries/warm_keyword.py): the same answers as semantic_search.sql
and keyword_search.sql, and never from data older than the warehouse."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil

import duckdb
import numpy as np
import pytest
from conftest import EVAL_SET, SEED_FILE, doc_id_of, rows, write
from test_ann import DIM, clustered, synthetic_warehouse
from test_eval import EVALSET, fixture_set  # noqa: F401 - the evaluation set's warehouse, a fixture

from newsindex.queries import named, warm, warm_hybrid, warm_keyword
from newsindex.queries import search as searching
from newsindex.queries.search import Filters, _with_passages, embed_query as embed, search, vector_literal
from newsindex.queries.session import session
from newsindex.warehouse import connection, documents
from newsindex.warehouse import keyword as keyword_index

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


def test_passages_from_memory_are_the_warehouse_s_rows(search_db):
    """A warm session takes the winners' passages from memory (the chunks table has no key to fetch
    them by): every chunk's row, metadata included, is the one passages_by_id.sql returns."""
    with session(search_db, keyword=False) as con:
        store = warm.passages_for(con)
        ids = [row[0] for row in con.execute("SELECT chunk_id FROM chunks").fetchall()]
        assert sorted(store.chunk_ids) == sorted(ids) == list(store.chunk_ids)
        from_sql = warm.passages(con, ids)
        from_memory = warm._passages_in_memory(store, ids)
        assert len(from_memory) == len(ids) == len(from_sql) > 50
        assert from_memory == from_sql
        # An id the snapshot does not hold is looked up in the warehouse, and absent if it is not
        # there: before the first id, after the last, and between two.
        doc = from_sql[ids[0]]["doc_id"]
        asked = [ids[0], "no-such-doc#0", f"{doc}#999", "", "\uffff", f"{doc}#0a"]
        assert warm.passages(con, asked, store) == {ids[0]: from_sql[ids[0]]}


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


# --- keyword --------------------------------------------------------------------------------------

KEYWORD_FILTERS = [
    None,
    Filters(since=dt.date(2024, 6, 1)),
    Filters(until=dt.date(2024, 6, 1)),
    Filters(source="*/corpus/*"),
    Filters(source="*/corpus/*", since=dt.date(2024, 1, 1)),
    Filters(since=dt.date(2030, 1, 1)),  # nothing passes
]


def labelled_queries(path) -> list[str]:
    return [json.loads(line)["query"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def keyword_queries() -> list[str]:
    """The labelled queries of both evaluation sets, and some edge cases: stop words only, a word
    no article holds, words in many passages."""
    # Every 6th of the evaluation set's 183: the comparison runs each query ~50 times.
    return [*QUERIES, *labelled_queries(EVAL_SET), *labelled_queries(EVALSET / "queries.jsonl")[::6],
            "the and of", "zyxwvut", "said police government people"]  # fmt: skip


def keyword_sql_answer(con, query: str, k: int, per_doc: bool, filters: Filters | None, stems) -> list[tuple[str, float]]:
    statement = named.get("keyword_search")
    params = {"query": query, "k": k, "per_doc": per_doc, "stems": stems, **(filters or Filters()).params()}
    return [(row[0], row[-1]) for row in con.execute(statement.sql, statement.bind(params)).fetchall()]


def same_keyword_answers(db, filters: list, ks=(3, 20)) -> int:
    """Every query × filter × k (× per_doc, alternating by query) from memory and through keyword_search.sql (with the
    stems search() passes); returns how many answers held exactly k hits, so that the comparison
    is not one of empty answers. search() itself, passages included, on the first queries."""
    full = 0
    warm._cache.clear()
    warm._passages.clear()
    with session(db) as con:
        postings = warm_keyword.postings_for(con)
        for n, query in enumerate(keyword_queries()):
            stems = keyword_index.query_stems(con, query)
            for f in filters:
                for k in ks:
                    for per_doc in (False, True) if n < len(QUERIES) else (bool(n % 2),):
                        expected = keyword_sql_answer(con, query, k, per_doc, f, stems)
                        found = warm_keyword.search(con, postings, query, stems, k, **(f or Filters()).params(), per_doc=per_doc)
                        assert [c for c, _ in found] == [c for c, _ in expected], (query, f, k, per_doc)
                        assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-5)
                        full += len(expected) == k
                        if n < len(QUERIES):
                            in_memory = search(con, query, k=k, mode="keyword", filters=f, per_doc=per_doc)
                            in_sql = search(con, query, k=k, mode="keyword", filters=f, per_doc=per_doc, in_memory=False)
                            same_answer(in_memory.hits, in_sql.hits)
        assert warm_keyword._cache, "the session's keyword searches were answered from memory"
        # Their passages too, without loading the vectors.
        assert warm._passages and not warm._cache
    return full


def test_warm_keyword_search_equals_the_sql_query_on_real_articles(search_db):
    seed = doc_id_of(search_db, SEED_FILE.stem)
    assert same_keyword_answers(search_db, [*KEYWORD_FILTERS, Filters(doc=seed)]) > 100


def test_warm_keyword_search_equals_the_sql_query_on_the_evaluation_set(fixture_set):  # noqa: F811
    db, _ = fixture_set
    # 91 articles in three topics of near-identical texts: many equal scores, so ties are broken
    # as the SQL breaks them or the test fails.
    filters = [None, Filters(since=dt.date(2025, 1, 1)), Filters(source="*-strike*"), Filters(until=dt.date(2024, 12, 31))]
    assert same_keyword_answers(db, filters, ks=(1, 10, 40)) > 100


def test_warm_keyword_without_stems_looks_words_up_as_the_macro_does(search_db):
    """Where fts is not loaded search() passes no stems: the words are looked up among those seen
    at ingest (keyword_query_terms.sql), as bm25_chunks does."""
    with session(search_db) as con:
        postings = warm_keyword.postings_for(con)
        for query in keyword_queries():
            for k in (5, 30):
                expected = keyword_sql_answer(con, query, k, False, None, None)
                found = warm_keyword.search(con, postings, query, None, k)
                assert [c for c, _ in found] == [c for c, _ in expected], query
                assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_the_index_answers_keyword_from_memory_and_sees_an_ingest(search_db, prefect_server, tmp_path):
    from newsindex import Index

    db = tmp_path / "copy.duckdb"
    shutil.copy(search_db, db)
    article = write(tmp_path / "news" / "ferry.md", "---\ntitle: Ferry Quorvath returns\ndate: 2025-05-05\n---\n"
                    "The Quorvath ferry is back in service after its engine was repaired.\n")  # fmt: skip
    with Index(db) as index:
        snapshot = index._current()
        assert snapshot.postings is not None and len(snapshot.postings.rows) > 0
        before = index.search("Quorvath ferry", k=5, mode="keyword")
        assert all("Quorvath" not in hit.text for hit in before)
        index.ingest([article.parent])
        assert index._current().postings is not snapshot.postings
        after = index.search("Quorvath ferry", k=5, mode="keyword")
        assert after[0].title == "Ferry Quorvath returns"
        hybrid = index.search("Quorvath ferry", k=5, mode="hybrid")
        assert hybrid[0].title == "Ferry Quorvath returns"
        with session(db) as con:
            same_answer(after, search(con, "Quorvath ferry", k=5, mode="keyword", in_memory=False).hits)
            same_hybrid_answer(hybrid, search(con, "Quorvath ferry", k=5, mode="hybrid", in_memory=False).hits)


# --- hybrid ---------------------------------------------------------------------------------------


def same_hybrid_answer(warm_hits: list, sql_hits: list) -> None:
    same_answer(warm_hits, sql_hits)
    for name in ("semantic_rank", "keyword_rank"):
        assert [getattr(h, name) for h in warm_hits] == [getattr(h, name) for h in sql_hits], name
    for name in ("semantic_score", "keyword_score"):
        warm_values, sql_values = [getattr(h, name) for h in warm_hits], [getattr(h, name) for h in sql_hits]
        assert [v is None for v in warm_values] == [v is None for v in sql_values], name
        assert [v for v in warm_values if v is not None] == pytest.approx([v for v in sql_values if v is not None], abs=1e-5)


def fed_sql_answer(con, query: str, k: int, filters: Filters | None) -> list[tuple[str, float]]:
    """hybrid_search.sql's (chunk_id, score) given warm_hybrid's candidates as JSON instead of its scans."""
    statement = named.get("hybrid_search")
    f = filters or Filters()
    vector, stems, depth = embed(query), searching.query_stems(con, query), max(100, 10 * k)
    params = {"query": query, "k": k, "depth": depth, "vector": vector_literal(vector), "stems": stems, **f.params()}
    found = warm_hybrid.candidates(con, warm.vectors_for(con), warm_keyword.postings_for(con), query, vector, stems, depth, **f.params())
    params.update(zip(("semantic_best", "keyword_passages", "semantic_passages"), map(json.dumps, found)))
    rows = con.execute(statement.sql_for(documents.chunk_dimension(con)), statement.bind(params)).fetchall()
    return [(row[0], row[10]) for row in rows]


def same_hybrid_answers(db, queries: list[str], filters: list, ks: tuple) -> int:
    """search() in hybrid mode from memory (hybrid_search.sql fed warm candidates) and through the
    SQL's own scans; returns how many answers held exactly k articles."""
    full = 0
    with session(db) as con:
        for query in queries:
            for f in filters:
                for k in ks:
                    in_memory = search(con, query, k=k, mode="hybrid", filters=f)
                    in_sql = search(con, query, k=k, mode="hybrid", filters=f, in_memory=False)
                    same_hybrid_answer(in_memory.hits, in_sql.hits)
                    # The SQL's fusion fed the same candidates: the Python fusion's twin.
                    assert fed_sql_answer(con, query, k, f) == [(h.chunk_id, pytest.approx(h.score, abs=1e-9)) for h in in_memory.hits]
                    full += len(in_sql.hits) == k
        # A fixed weight and a shallow depth take the same path.
        fusion = {"semantic_weight": 0.5, "depth": 5}
        same_hybrid_answer(search(con, queries[0], k=8, mode="hybrid", fusion=fusion).hits,
                           search(con, queries[0], k=8, mode="hybrid", fusion=fusion, in_memory=False).hits)  # fmt: skip
    return full


@pytest.mark.parametrize("coarse", [False, True], ids=["blas-scan", "float16-scan-in-a-worker"])
def test_warm_hybrid_search_equals_the_sql_query_on_real_articles(search_db, coarse, monkeypatch):
    """Also with the float16 copy (as from COARSE_FROM chunks), whose scan runs in a worker thread
    beside the keyword side."""
    if coarse:
        monkeypatch.setattr(warm, "COARSE_FROM", 1)
    warm._cache.clear()
    queries = [*QUERIES, *labelled_queries(EVAL_SET), "the and of", "zyxwvut"]
    filters = [None, Filters(since=dt.date(2024, 6, 1)), Filters(source="*/corpus/*", until=dt.date(2025, 6, 1)), Filters(since=dt.date(2030, 1, 1))]
    assert same_hybrid_answers(search_db, queries, filters, (3, 20)) > 50
    assert (next(iter(warm._cache.values())).coarse is not None) == coarse
    warm._cache.clear()


def test_warm_hybrid_search_equals_the_sql_query_on_the_evaluation_set(fixture_set):  # noqa: F811
    db, _ = fixture_set
    queries = labelled_queries(EVALSET / "queries.jsonl")[::6]
    filters = [None, Filters(since=dt.date(2025, 1, 1)), Filters(source="*-strike*")]
    assert same_hybrid_answers(db, queries, filters, (1, 10, 40)) > 50


def test_warm_hybrid_candidates_hold_every_side_s_top_articles(search_db):
    """The bound candidates are what the SQL's own scans would keep: the semantic side's `depth`
    best articles and the keyword side's."""
    query = QUERIES[0]
    with session(search_db) as con:
        vectors, postings = warm.vectors_for(con), warm_keyword.postings_for(con)
        vector = embed(query)
        stems = keyword_index.query_stems(con, query)
        best, keyword_passages, passages = warm_hybrid.candidates(con, vectors, postings, query, vector, stems, depth=5)
        semantic = {s["doc_id"] for s in best}
        keyword = {p["doc_id"] for p in keyword_passages}
        statement = named.get("semantic_search")
        params = {"query": query, "vector": vector_literal(vector), "k": 5, "per_doc": True}
        assert semantic == {row[1] for row in con.execute(statement.sql_for(documents.chunk_dimension(con)), statement.bind(params)).fetchall()}
        assert {doc for _, doc in [(c, c.rsplit("#", 1)[0]) for c, _ in keyword_sql_answer(con, query, 5, True, None, stems)]} <= keyword
        assert {p["doc_id"] for p in passages} == semantic | keyword


def test_query_words_split_in_python_stem_as_the_sql_macro_splits_them(fixture_set):  # noqa: F811
    """search() splits and folds the query's words in Python (the macro's regular expression costs
    more than a warm keyword search); the stems must be kw_tokenize's, or warm and SQL users differ."""
    db, _ = fixture_set
    queries = labelled_queries(EVALSET / "queries.jsonl") + [
        "ﬁnance x² ＡＢＣ Café naïve İstanbul Straße Ǆ ø Łódź œuvre résumé Ⅻ", "U.S. e-mail don't 3.5% _under_score",
        "the and of", "Ελληνικά Κείμενα", "中文 新闻", "١٢٣ ٤", "tab\tnew\nline", "",
    ]  # fmt: skip
    with session(db) as con:
        for query in queries:
            assert searching.query_stems(con, query) == sorted(set(keyword_index.query_stems(con, query))), query


def test_the_float16_copy_only_chooses_candidates_and_the_answer_stays_exact(tmp_path, monkeypatch):
    """From warm.COARSE_FROM chunks the scan reads a float16 copy and ranks its candidates by their
    float32 scores; with the error bound, the answer is the full float32 scan's, ties included."""
    rng = np.random.default_rng(7)
    base = clustered(rng, 6000, 12)
    # Exact copies in other articles (ties the chunk-id tie-break must see), and 2 000 copies of one
    # vector: its query ties past the first candidates, so the search must look deeper.
    vectors = np.concatenate([base, base[:2000], np.repeat(base[1:2], 2000, axis=0)])
    db = tmp_path / "coarse.duckdb"
    synthetic_warehouse(db, vectors)
    monkeypatch.setattr(warm, "COARSE_FROM", 1)
    warm._cache.clear()
    with session(db, keyword=False) as con:
        coarse = warm.vectors_for(con)
    warm._cache.clear()
    assert coarse.coarse is not None
    plain = dataclasses.replace(coarse, coarse=None)
    queries = [vectors[0], vectors[1], vectors[4500], *clustered(rng, 4, 12)]
    early = coarse.day < np.median(coarse.day)
    compared = 0
    for query in queries:
        for allowed in (None, early):
            for k in (1, 10):
                for per_doc in (False, True):
                    got = warm.top_chunks(coarse, query, k, allowed, per_doc)
                    assert got == warm.top_chunks(plain, query, k, allowed, per_doc)
                    compared += len(got) == k
            for depth in (5, 30):
                # The SQL orders these itself: the same articles and scores are the same answer.
                by_doc = lambda found: sorted((s["doc_id"], s["score"]) for s in found)  # noqa: E731
                assert by_doc(warm_hybrid.semantic_best(coarse, query, depth, allowed)) == by_doc(warm_hybrid.semantic_best(plain, query, depth, allowed))
    assert compared == len(queries) * 2 * 2 * 2


# --- the vector file: one-shot searches --------------------------------------------------------


def cold_equals_scan(db, queries: list[str], filters: list, k: int) -> list[int]:
    """Every one-shot search (a path: from the vector file where one is current) answers as the
    SQL's own scans, hybrid and semantic (also per article); each answer's number of hits."""
    counts = []
    for query in queries:
        for f in filters:
            for mode, per_doc in (("hybrid", False), ("semantic", False), ("semantic", True)):
                cold = search(db, query, k=k, mode=mode, filters=f, per_doc=per_doc)
                with session(db) as con:
                    scanned = search(con, query, k=k, mode=mode, filters=f, per_doc=per_doc, in_memory=False)
                (same_hybrid_answer if mode == "hybrid" else same_answer)(cold.hits, scanned.hits)
                counts.append(len(cold.hits))
    return counts


def test_one_shot_searches_from_the_vector_file_equal_the_sql_scan(search_db, tmp_path, monkeypatch):
    """A one-shot search (a path, as the CLI runs it) reads the semantic side from the memory-mapped
    vector file where one is current: the answers of the SQL's own scans, for every filter."""
    from newsindex.warehouse import vector_file

    db = tmp_path / "copy.duckdb"
    shutil.copy(search_db, db)
    assert vector_file.write(db) == "written" and vector_file.write(db) == "current"
    used = []
    opened = searching._vector_file
    monkeypatch.setattr(searching, "_vector_file", lambda con, path: used.append(opened(con, path)) or used[-1])
    seed = doc_id_of(db, SEED_FILE.stem)
    filters = [None, Filters(since=dt.date(2024, 6, 1)), Filters(source="*/corpus/*", until=dt.date(2025, 6, 1)), Filters(doc=seed),
               Filters(since=dt.date(2030, 1, 1))]  # fmt: skip
    counts = cold_equals_scan(db, [*QUERIES, *labelled_queries(EVAL_SET)[:6]], filters, k=5)
    assert sum(n == 5 for n in counts) > 40 and used and all(v is not None for v in used)


def test_a_stale_or_damaged_vector_file_is_not_read_and_the_flow_updates_it(search_db, prefect_server, tmp_path):
    """An ingest appends its articles to the vector file (the default); one told not to removes it.
    A copy that names another state, or lost a file, is not read, and the next update rewrites it."""
    from newsindex import Index
    from newsindex.warehouse import vector_file

    db = tmp_path / "copy.duckdb"
    shutil.copy(search_db, db)
    assert vector_file.write(db) == "written"
    base = vector_file._meta(db)["base"]
    article = write(tmp_path / "news" / "ferry.md", "---\ntitle: Ferry Quorvath returns\ndate: 2025-05-05\n---\n"
                    "The Quorvath ferry is back in service after its engine was repaired.\n")  # fmt: skip
    with Index(db) as index:
        summary = index.ingest([article.parent])
    assert summary["vector_file"] == "appended"
    meta = vector_file._meta(db)
    assert meta["base"] == base and meta["generation"] == "g000002"
    assert "Quorvath" in search(db, "Quorvath ferry", k=1, mode="hybrid").hits[0].text
    with session(db) as con:
        assert vector_file.open_current(con, db) is not None
        current = vector_file.folder(db) / "current.json"
        current.write_text(json.dumps({**meta, "state": [0, 0, None]}))
        assert vector_file.open_current(con, db) is None
        current.write_text(json.dumps(meta))
        (vector_file.folder(db) / base / meta["generation"] / "doc_start.npy").unlink()
        assert vector_file.open_current(con, db) is None
    assert vector_file.write(db) == "written"
    assert vector_file._meta(db)["base"] != base
    assert [p.name for p in vector_file.folder(db).iterdir() if p.is_dir()] == [vector_file._meta(db)["base"]]
    assert search(db, "Quorvath ferry", k=1, mode="semantic").hits[0].title == "Ferry Quorvath returns"
    later = write(tmp_path / "later" / "dam.md", "---\ntitle: Dam Velqorin inspected\ndate: 2025-05-06\n---\nThe Velqorin dam passed.\n")
    with Index(db) as index:
        assert index.ingest([later.parent], vector_file=False)["vector_file"] == "removed"
    assert not vector_file.folder(db).exists()
    assert search(db, "Velqorin dam", k=1, mode="hybrid").hits[0].title == "Dam Velqorin inspected"




def test_the_vector_file_follows_replaced_and_removed_articles_and_survives_a_cut_short_update(ingest, db, tmp_path, monkeypatch):
    """Appends keep the copy exact: a replaced article's old rows and a removed article's rows are
    dead (never a hit), its new rows are found; bytes a crashed update left past the named rows
    are ignored, then cut off; past a share of dead rows the copy is rewritten whole."""
    from newsindex.warehouse import vector_file

    news = tmp_path / "news"
    text = {
        "tram": "---\ntitle: Tram line Oskeba opens\ndate: 2025-03-01\n---\nThe Oskeba tram line opened to riders on Monday.\n",
        "bridge": "---\ntitle: Bridge Halvenor closes\ndate: 2025-03-02\n---\nThe Halvenor bridge closed for repairs after cracks were found.\n",
        "choir": "---\ntitle: Choir Mirelta sings\ndate: 2025-03-03\n---\nThe Mirelta choir sang to a full hall.\n",
    }
    for name, body in text.items():
        write(news / f"{name}.md", body)
    assert ingest(news)["vector_file"] == "written"
    searches = ["Oskeba tram", "Halvenor bridge repairs", "Mirelta choir", "Quindle harbour fish market"]
    assert sum(cold_equals_scan(db, searches, [None], k=4)) > 0
    write(news / "bridge.md", "---\ntitle: Bridge Halvenor reopens\ndate: 2025-04-02\n---\n"
          "Traffic is back on the Halvenor bridge, its steel deck renewed.\n")  # fmt: skip
    (news / "choir.md").unlink()
    write(news / "harbour.md", "---\ntitle: Harbour Quindle market\ndate: 2025-04-03\n---\nThe Quindle harbour fish market moved indoors.\n")
    summary = ingest(news, prune=True)
    assert summary["vector_file"] == "appended" and summary["removed"] == 1
    meta = vector_file._meta(db)
    assert meta["dead"] >= 2 and meta["rows"] - meta["dead"] == rows(db, "SELECT count(*) FROM chunks")[0][0]
    assert sum(cold_equals_scan(db, searches, [None], k=4)) > 0
    stored = {r[0] for r in rows(db, "SELECT chunk_id FROM chunks")}
    with session(db) as con:
        copy = vector_file.open_current(con, db)
        assert copy is not None and set(copy.chunk_ids[np.flatnonzero(copy.live)].tolist()) == stored
    for hit in search(db, "Mirelta choir sang", k=4, mode="semantic").hits + search(db, "cracks were found", k=4, mode="semantic").hits:
        assert hit.chunk_id in stored and hit.title != "Bridge Halvenor closes"
    # A crash after the append and before current.json: rows past the named ones, a half generation.
    base = vector_file.folder(db) / meta["base"]
    with open(base / "matrix.f32", "ab") as out:
        out.write(np.full(3 * meta["dim"], 7.0, np.float32).tobytes())
    with open(base / "ids.bin", "ab") as out:
        out.write(b"x" * meta["id_width"] * 3)
    (base / f"g{int(meta['generation'][1:]) + 1:06d}.partial-1").mkdir()
    assert sum(cold_equals_scan(db, searches, [None], k=4)) > 0
    write(news / "tram.md", text["tram"].replace("Monday", "Tuesday"))
    assert ingest(news)["vector_file"] == "appended"
    meta = vector_file._meta(db)
    assert (base / "matrix.f32").stat().st_size == meta["rows"] * meta["dim"] * 4
    assert (base / "ids.bin").stat().st_size == meta["rows"] * meta["id_width"]
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == [f"g{int(meta['generation'][1:]) - 1:06d}", meta["generation"]]
    assert sum(cold_equals_scan(db, searches, [None], k=4)) > 0
    monkeypatch.setattr(vector_file, "_DEAD_SHARE", 0.0)
    monkeypatch.setattr(vector_file, "_DEAD_FLOOR", 0)
    write(news / "tram.md", text["tram"].replace("Monday", "Wednesday"))
    assert ingest(news)["vector_file"] == "written"
    assert vector_file._meta(db)["dead"] == 0 and vector_file._meta(db)["base"] != meta["base"]
    assert sum(cold_equals_scan(db, searches, [None], k=4)) > 0
