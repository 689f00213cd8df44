"""Fusion, evaluation and highlights on a real warehouse: part of the project's evaluation set
(tests/data/evalset), ingested with the real model."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from conftest import EVAL_SET

from newsindex.cli import cli
from newsindex.queries.evaluate import evaluate, load_labelled
from newsindex.queries.modes import MODES
from newsindex.queries.named import all_queries
from newsindex.queries.search import Matcher, search
from newsindex.warehouse import connection

EVALSET = Path(__file__).parent / "data" / "evalset"
# Three topics of 30 near-identical articles each, and the long article: every class is here.
FIXTURE_TOPICS = ("-strike", "-central-bank", "-rovers-match", "brennholm-year-in-review")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def fixture_set(prefect_server, tmp_path_factory) -> tuple[Path, Path]:
    """(warehouse, labelled queries): the fixture's articles, and every query of the evaluation
    set that they answer, with its relevant list cut to them (the rest are not in the warehouse)."""
    from newsindex.flows.ingest import ingest as ingest_flow

    root = tmp_path_factory.mktemp("fusion")
    articles = [p for p in sorted((EVALSET / "articles").rglob("*.txt")) if p.stem.endswith(FIXTURE_TOPICS)]
    for path in articles:
        target = root / "articles" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    stems = {p.stem for p in articles}
    labelled = []
    for line in (EVALSET / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        item["relevant"] = [r for r in item["relevant"] if r in stems]
        if item["relevant"]:
            labelled.append(item)
    queries = root / "queries.jsonl"
    queries.write_text("".join(json.dumps(item) + "\n" for item in labelled), encoding="utf-8")
    db = root / "fusion.duckdb"
    summary = ingest_flow(paths=[str(root / "articles")], db=str(db))
    assert summary["added"] == len(articles) == 91 and summary["failed"] == 0
    return db, queries


def test_hybrid_is_at_least_the_better_side_on_every_class(fixture_set):
    db, queries = fixture_set
    report = evaluate(db, load_labelled(queries), k=10)
    by_mode = {m["mode"]: m for m in report["modes"]}
    assert set(report["classes"]) == {"paraphrase", "entity", "long", "topical"}
    for cls in report["classes"]:
        semantic, keyword, hybrid = (by_mode[m]["classes"][cls]["hit@1"] for m in ("semantic", "keyword", "hybrid"))
        assert hybrid >= max(semantic, keyword), f"{cls}: hybrid {hybrid:.3f}, semantic {semantic:.3f}, keyword {keyword:.3f}"
    # Neither side alone is enough here, so the test measures fusion, not one side.
    assert by_mode["semantic"]["hit@1"] < by_mode["hybrid"]["hit@1"] and by_mode["keyword"]["hit@1"] < by_mode["hybrid"]["hit@1"]


def test_eval_command_per_class_split_and_json(fixture_set):
    db, queries = fixture_set
    heldout = [q for q in load_labelled(queries) if q["split"] == "heldout"]
    result = run("eval", queries, "--split", "heldout", "--json", "--db", db)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["queries"] == len(heldout) and report["split"] == "heldout"
    assert [m["mode"] for m in report["modes"]] == list(MODES)
    for m in report["modes"]:
        assert set(m["classes"]) == {q["class"] for q in heldout}
        for values in [m, *m["classes"].values()]:
            assert 0.0 <= values["hit@1"] <= values["hit@5"] <= 1.0 and 0.0 <= values["recall"] <= 1.0
    table = run("eval", queries, "--split", "tune", "--mode", "keyword", "--mode", "hybrid", "--db", db)
    assert table.exit_code == 0, table.output
    assert all(word in table.output for word in ("paraphrase", "entity", "long", "topical", "hit@1", "mrr@10", "recall@10"))
    assert "semantic" not in table.output.replace("search quality", "")
    missing = run("eval", queries, "--split", "nonesuch", "--db", db)
    assert missing.exit_code == 1 and "no queries in split 'nonesuch'; it has heldout, tune" in missing.output


def test_eval_applies_each_querys_filters(fixture_set, tmp_path):
    db, queries = fixture_set
    item = next(q for q in load_labelled(queries) if q["class"] == "long")
    unfiltered = evaluate(db, [item], modes=["hybrid"])["modes"][0]["per_query"][0]
    assert unfiltered["first_relevant_rank"] == 1
    # The long article is dated 2022-12-30: a window after it leaves it out.
    windowed = evaluate(db, [{**item, "since": dt.date(2023, 1, 1)}], modes=["hybrid"])["modes"][0]["per_query"][0]
    assert windowed["first_relevant_rank"] is None and windowed["top"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "x", "relevant": ["a"], "since": "2024-02-30"}) + "\n")
    result = run("eval", bad, "--db", db)
    assert result.exit_code == 1 and f"Error: {bad}:1: since '2024-02-30' is not a date" in result.output


def test_eval_on_a_warehouse_without_the_labelled_documents(fixture_set):
    db, _ = fixture_set
    result = run("eval", EVAL_SET, "--db", db)
    assert result.exit_code == 1
    assert result.output.startswith("Error: the warehouse holds none of the 14 labelled documents")
    assert "hit@1" not in result.output


def test_hits_carry_highlights_of_the_query_terms(fixture_set):
    db, _ = fixture_set
    query = "strikes by union workers"
    for mode in MODES:
        hits = search(db, query, k=5, mode=mode).hits
        assert hits
        for hit in hits:
            words = {hit.text[start:end].lower() for start, end in hit.highlights}
            assert words and words <= {"strike", "strikes", "striking", "union", "unions", "worker", "workers"}, (mode, words)
            assert all(0 <= start < end <= len(hit.text) for start, end in hit.highlights)
            assert [hit.snippet[s:e].lower() for s, e in hit.snippet_highlights] and all(
                hit.snippet[s:e].lower() in words for s, e in hit.snippet_highlights
            )
        assert json.loads(json.dumps(hits[0].as_json()))["highlights"] == hits[0].highlights


def test_matcher_uses_the_keyword_index_stemmer():
    text = "Flooding closed the Café; floods returned. The flood-defence failed, said FLOOD officials."
    con = duckdb.connect()
    try:
        connection.load_extension(con, "fts")
        stemmed = Matcher("the floods", [text], con).spans(text)
    finally:
        con.close()
    assert [text[s:e] for s, e in stemmed] == ["Flooding", "floods", "flood", "FLOOD"]
    # Without the extension (a semantic-only session) words match as they are, case and accents folded.
    assert [text[s:e] for s, e in Matcher("floods cafe", [text]).spans(text)] == ["Café", "floods"]
    assert Matcher("the of and", [text]).spans(text) == []


def test_modes_registry_drives_cli_and_queries():
    for mode in MODES.values():
        assert mode.query in all_queries()
    search_help = run("search", "--help").output
    assert all(name in search_help for name in MODES)
    bad = run("search", "x", "--mode", "fuzzy")
    assert bad.exit_code != 0 and all(name in bad.output for name in MODES)


def test_hybrid_sql_uses_the_same_stopwords_as_highlights():
    import re

    from newsindex.queries.search import _STOP

    sql = all_queries()["hybrid_search"].sql
    listed = re.search(r"list_contains\(\[([^\]]*)\], w\)", sql).group(1)
    assert set(re.findall(r"'([a-z]+)'", listed)) == set(_STOP)
