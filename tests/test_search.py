"""Semantic, keyword and hybrid search on a real warehouse (seed + labelled corpus)."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest
from conftest import EVAL_SET, SEED_FILE, doc_id_of, write

from newsindex.queries.evaluate import evaluate, load_labelled
from newsindex.queries.named import QueryError
from newsindex.queries.search import Filters, related, search, snippet
from newsindex.queries.session import ModelMismatch

MODES = ["semantic", "keyword", "hybrid"]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_finds_the_right_article(search_db, mode):
    result = search(search_db, "museum gold brooches stolen", k=5, mode=mode)
    assert result.hits[0].doc_id == doc_id_of(search_db, "museum-theft-gold")
    assert [h.rank for h in result.hits] == list(range(1, len(result.hits) + 1))
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    top = result.hits[0]
    assert top.title == "Museum theft gold" and top.published == dt.date(2025, 1, 12)
    # The stored offsets point at the passage inside the article text.
    con = duckdb.connect(str(search_db), read_only=True)
    text = con.execute("SELECT text FROM documents WHERE doc_id = ?", [top.doc_id]).fetchone()[0]
    con.close()
    assert text[top.char_start : top.char_end] == top.text


@pytest.mark.parametrize("mode", MODES)
def test_filters_apply_before_ranking(search_db, mode):
    # The best match is from 2024; with the filter, k results still come, all from 2025 on.
    since = dt.date(2025, 1, 1)
    query = "residents water" if mode == "keyword" else "Putin dismissed the warning before the Crocus attack"
    unfiltered = search(search_db, query, k=5, mode=mode)
    assert unfiltered.hits[0].published < since
    result = search(search_db, query, k=5, mode=mode, filters=Filters(since=since))
    assert len(result.hits) == 5
    assert all(h.published >= since for h in result.hits)


@pytest.mark.parametrize("mode", MODES)
def test_filter_matching_fewer_than_k_and_none(search_db, mode):
    seed_id = doc_id_of(search_db, SEED_FILE.stem)
    fewer = search(search_db, "Putin warning concert", k=50, mode=mode, filters=Filters(doc=seed_id))
    con = duckdb.connect(str(search_db), read_only=True)
    seed_chunks = con.execute("SELECT count(*) FROM chunks WHERE doc_id = ?", [seed_id]).fetchone()[0]
    con.close()
    assert {h.doc_id for h in fewer.hits} == {seed_id}
    if mode == "hybrid":
        assert len(fewer.hits) == 1  # hybrid ranks articles
    elif mode == "semantic":
        assert len(fewer.hits) == seed_chunks
    else:
        assert 0 < len(fewer.hits) <= seed_chunks
    assert search(search_db, "Putin warning", k=5, mode=mode, filters=Filters(until=dt.date(1999, 1, 1))).hits == []
    assert search(search_db, "Putin warning", k=5, mode=mode, filters=Filters(source="nowhere/*.txt")).hits == []


def test_source_glob_and_date_window(search_db):
    hits = search(search_db, "warning", k=20, mode="semantic", filters=Filters(source="seeds/*.txt")).hits
    assert hits and all(h.source_path.endswith("seeds/crocus-city-hall-warning.txt") for h in hits)
    window = Filters(since=dt.date(2024, 1, 1), until=dt.date(2024, 12, 31))
    hits = search(search_db, "news", k=50, mode="semantic", filters=window, per_doc=True).hits
    assert hits and all(dt.date(2024, 1, 1) <= h.published <= dt.date(2024, 12, 31) for h in hits)


@pytest.mark.parametrize("mode", MODES)
def test_per_doc_collapses_to_articles(search_db, mode):
    hits = search(search_db, "flood rain river", k=5, mode=mode, per_doc=True).hits
    assert len({h.doc_id for h in hits}) == len(hits) == 5 if mode != "keyword" else len({h.doc_id for h in hits}) == len(hits)


def test_hybrid_shows_both_ranks(search_db):
    hits = search(search_db, "Crocus City Hall warning", k=5, mode="hybrid").hits
    assert any(h.semantic_rank and h.keyword_rank for h in hits)
    assert len({h.doc_id for h in hits}) == len(hits)  # one passage per article
    for h in hits:
        assert h.semantic_rank or h.keyword_rank
        assert 0.0 <= h.score <= 1.0
    # First on both sides: 1 after normalisation on each, so 1 whatever the weight.
    top = hits[0]
    assert (top.semantic_rank, top.keyword_rank) == (1, 1) and top.score == pytest.approx(1.0)


def test_keyword_finds_exact_code_that_semantic_misses(tmp_path, ingest, db):
    # Flight numbers that differ only in digit order; the wanted one is mentioned in passing inside a
    # long passage, so its vector is mostly about something else. BM25 matches the exact token.
    codes = ["QX4417", "QX4471", "QX4147", "QX4714", "QX4741", "QX7414", "QX1447", "QX7441"]
    filler = ("Passengers waited for hours at the gate while crews checked the aircraft, and the airline offered "
              "meal vouchers and hotel rooms to travellers who missed connections.")  # fmt: skip
    for i, code in enumerate(codes):
        body = f"Flight {code} was delayed." if code != "QX7441" else f"{filler} One of the delayed services was {code}. {filler}"
        write(tmp_path / "flights" / f"f{i}.txt", f"date 2024-06-{i + 1:02} {body}")
    ingest(tmp_path / "flights")
    target = "QX7441"
    keyword = search(db, target, k=3, mode="keyword").hits
    semantic = search(db, target, k=3, mode="semantic").hits
    hybrid = search(db, target, k=3, mode="hybrid").hits
    assert target in keyword[0].text and len({h.doc_id for h in keyword}) == 1
    assert target not in semantic[0].text
    assert target in hybrid[0].text and hybrid[0].keyword_rank == 1


def test_semantic_finds_a_paraphrase_that_keyword_misses(search_db):
    query = "levee failure strands rural families during the South Asian rainy season"
    right = doc_id_of(search_db, "flood-bangladesh-monsoon")
    assert search(search_db, query, k=1, mode="semantic", per_doc=True).hits[0].doc_id == right
    assert search(search_db, query, k=1, mode="keyword", per_doc=True).hits[0].doc_id != right
    assert search(search_db, query, k=1, mode="hybrid", per_doc=True).hits[0].doc_id == right


def test_eval_hybrid_is_not_worse_than_either_side(search_db):
    labelled = load_labelled(EVAL_SET)
    by_kind = {}
    for kind in ("paraphrase", "rare"):
        report = evaluate(search_db, [q for q in labelled if q["kind"] == kind], k=10)
        by_kind[kind] = {m["mode"]: m for m in report["modes"]}
    assert by_kind["paraphrase"]["hybrid"]["mrr"] >= by_kind["paraphrase"]["semantic"]["mrr"]
    assert by_kind["paraphrase"]["hybrid"]["mrr"] > by_kind["paraphrase"]["keyword"]["mrr"]
    assert by_kind["rare"]["hybrid"]["mrr"] >= by_kind["rare"]["keyword"]["mrr"]
    full = evaluate(search_db, labelled, k=10)
    assert [m["mode"] for m in full["modes"]] == ["hybrid", "semantic", "keyword"]
    for m in full["modes"]:
        assert 0.0 < m["hit@1"] <= m["hit@5"] <= 1.0 and 0.0 < m["mrr"] <= 1.0


def test_related_documents(search_db):
    rows = related(search_db, doc_id_of(search_db, "flood-bangladesh-monsoon"), k=3)
    assert rows[0]["doc_id"] == doc_id_of(search_db, "flood-romania-flash")
    assert len(rows) == 3 and rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    with pytest.raises(QueryError, match="no document with id 'nope'"):
        related(search_db, "nope")


def test_model_mismatch_is_refused(search_db, tmp_path, monkeypatch, model_dir):
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(model_dir, other)
    with open(other / "model.safetensors", "ab") as weights:
        weights.write(b"\0")  # different bytes, different fingerprint
    monkeypatch.setenv("NEWSINDEX_MODEL", str(other))
    with pytest.raises(ModelMismatch, match="vectors were made by sentence-transformers/all-MiniLM-L6-v2"):
        search(search_db, "anything", mode="semantic")
    assert search(search_db, "Tarrowby flood", mode="keyword").mode == "keyword"


def test_bad_requests(search_db):
    with pytest.raises(QueryError, match="unknown search mode"):
        search(search_db, "x", mode="fuzzy")
    with pytest.raises(QueryError, match="the query is empty"):
        search(search_db, "   ")


def test_snippet_shows_the_matching_passage():
    text = "Opening words. " * 40 + "The Brenwick hoard was stolen overnight. " + "Closing words. " * 40
    cut = snippet(text, "Brenwick hoard", width=120)
    assert "Brenwick" in cut and cut.startswith("…") and cut.endswith("…") and len(cut) <= 122
    assert snippet("Short text.", "x") == "Short text."


def test_labelled_set_names_real_files(search_db):
    for item in load_labelled(EVAL_SET):
        for stem in item["relevant"]:
            assert doc_id_of(search_db, stem)
    assert json.loads(EVAL_SET.read_text().splitlines()[0])["query"]
