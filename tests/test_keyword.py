"""The BM25 postings index (warehouse/keyword.py, migration 004): the same ranking as the fts index it
replaced, kept current by every write (replace, prune, crash: see test_crash.py), usable from plain
SQL, migrated from an fts-era warehouse, compacted without changing any answer."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import EVAL_SET, write

from newsindex.warehouse import connection, keyword, schema, width

NEWSINDEX = str(Path(sys.executable).with_name("newsindex"))
BENCH = Path(__file__).resolve().parent.parent / "bench"

# The index as the fts extension built it before migration 004 (keyword.refresh_search_index then).
FTS_INDEX = (
    "PRAGMA create_fts_index('chunks', 'chunk_id', 'text', stemmer = 'porter', stopwords = 'english',"
    " ignore = '(\\.|[^\\p{L}\\p{N}])+', strip_accents = 1, lower = 1, overwrite = 1)"
)
FTS_TOP = (
    "SELECT chunk_id, score FROM (SELECT chunk_id, fts_main_chunks.match_bm25(chunk_id, ?) AS score FROM chunks)"
    " WHERE score IS NOT NULL ORDER BY score DESC, chunk_id LIMIT 10"
)
NEW_TOP = "SELECT chunk_id, score FROM bm25_chunks(?) ORDER BY score DESC, chunk_id LIMIT 10"
# As `newsindex search` asks: with the query's stems from fts's stem().
STEMMED_TOP = (
    "SELECT chunk_id, score FROM bm25_chunks($1, stems := (SELECT list(stem(w, 'porter')) FROM"
    " (SELECT unnest(kw_tokenize($1)) AS w))) ORDER BY score DESC, chunk_id LIMIT 10"
)


def _ranked(con, sql: str, query: str) -> list[tuple[str, float]]:
    return [(c, round(s, 9)) for c, s in con.execute(sql, [query]).fetchall()]


def test_same_ranking_as_the_fts_index_on_the_eval_set(search_db, tmp_path):
    """With the query stemmed (as `newsindex search` does) every labelled query gets exactly the old
    top 10 and scores. From plain SQL without stems, top-1 agrees on at least 95 %, and every query
    whose words were all seen at ingest still gets exactly the old top 10; the others differ only
    because a query word unseen at ingest is not stemmed (fts stemmed it onto another word's stem)."""
    copy = tmp_path / "fts.duckdb"
    shutil.copy(search_db, copy)
    con = duckdb.connect(str(copy))
    connection.load_extension(con, "fts")
    con.execute(FTS_INDEX)
    queries = [json.loads(line)["query"] for line in EVAL_SET.read_text(encoding="utf-8").splitlines()]
    same_top, exact = 0, 0
    for query in queries:
        old, new = _ranked(con, FTS_TOP, query), _ranked(con, NEW_TOP, query)
        assert old and new, query
        assert _ranked(con, STEMMED_TOP, query) == old, query
        same_top += old[0][0] == new[0][0]
        words = {w for (w,) in con.execute("SELECT DISTINCT unnest(kw_tokenize(?))", [query]).fetchall()} - {""}
        unseen = [w for w in words if not con.execute("SELECT count(*) FROM kw_words WHERE word = ?", [w]).fetchone()[0]]
        stems_known = [w for w in unseen if con.execute(
            "SELECT count(*) FROM kw_terms WHERE term = stem(?, 'porter')", [w]).fetchone()[0]]  # fmt: skip
        if not stems_known:
            assert new == old, query
            exact += 1
    con.close()
    assert same_top >= 0.95 * len(queries), f"same top-1 on {same_top}/{len(queries)}"
    assert exact >= len(queries) // 2


def test_replaced_and_removed_articles_change_the_index_at_once(ingest, tmp_path, db):
    from newsindex.queries.search import search

    news = tmp_path / "news"
    story = write(news / "story.txt", "date 2024-05-01 Quarrymen found zanzibarite in the hills.\n\nThe find was zanzibarite.\n")
    write(news / "other.txt", "date 2024-05-02 Ferry operators added a night crossing to Ostrava.\n")
    first = ingest(news)
    assert first["added"] == 2 and first["search_index_rebuilt"] is False  # kept current from the start
    assert {h.doc_id for h in search(db, "zanzibarite", mode="keyword").hits} == {_doc_of(db, "story")}

    story.write_text("date 2024-05-01 Quarrymen found quokkaflux in the hills instead.\n", encoding="utf-8")
    second = ingest(news)
    assert second["updated"] == 1 and second["search_index_rebuilt"] is False
    assert search(db, "zanzibarite", mode="keyword").hits == []
    assert [h.doc_id for h in search(db, "quokkaflux", mode="keyword").hits] == [_doc_of(db, "story")]
    assert search(db, "zanzibarite quokkaflux", mode="hybrid").hits[0].keyword_rank == 1

    (news / "other.txt").unlink()
    assert ingest(news, prune=True)["removed"] == 1
    assert search(db, "Ostrava ferry", mode="keyword").hits == []
    with connection.opened(db) as con:
        assert keyword.problems(con) == []
        assert keyword.search_index_is_current(con)


def _doc_of(db, stem: str) -> str:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT doc_id FROM documents WHERE source_path LIKE ?", [f"%/{stem}.txt"]).fetchone()[0]
    finally:
        con.close()


def test_bm25_in_a_plain_duckdb_without_extensions(search_db):
    """SQL users rank by BM25 from any DuckDB client: no fts, no extension loaded or installable."""
    script = (
        "import duckdb, sys\n"
        "con = duckdb.connect(sys.argv[1], read_only=True, config={'autoload_known_extensions': False,"
        " 'autoinstall_known_extensions': False})\n"
        "rows = con.execute(\"SELECT p.title, b.score FROM bm25_chunks('flood Bangladesh monsoon', top := 3) b"
        " JOIN passages p USING (chunk_id) ORDER BY b.score DESC\").fetchall()\n"
        "loaded = con.execute(\"SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name = 'fts'\").fetchone()[0]\n"
        "print(rows[0][0], len(rows), loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(search_db)], capture_output=True, text=True, check=True).stdout
    title, count, loaded = out.rsplit(" ", 2)
    assert "bangladesh" in title.lower() and count == "3" and loaded.strip() == "0"


def test_date_filter_and_top_keep_k_matching_results(search_db):
    """`since` applies before `top`, so a filtered query still returns k results when k match."""
    import datetime as dt

    with connection.opened(search_db, read_only=True) as con:
        since = dt.date(2025, 1, 1)
        everything = con.execute(
            "SELECT b.chunk_id, b.score FROM bm25_chunks('the flood rain storm', since := ?) b ORDER BY score DESC, chunk_id",
            [since],
        ).fetchall()
        assert len(everything) >= 3
        dates = con.execute(
            "SELECT DISTINCT d.published FROM bm25_chunks('the flood rain storm', since := ?) b"
            " JOIN documents d ON d.doc_id = b.doc_id", [since]).fetchall()  # fmt: skip
        assert all(d >= since for (d,) in dates)
        top = con.execute("SELECT chunk_id, score FROM bm25_chunks('the flood rain storm', since := ?, top := 3)"
                          " ORDER BY score DESC, chunk_id", [since]).fetchall()  # fmt: skip
        assert [s for _, s in top] == [s for _, s in everything[:3]]


def test_fts_era_warehouse_migrates_and_is_indexed_once(search_db, tmp_path):
    """A warehouse that still has the fts index (migrations 001-003) loses it in 004 and gets its
    postings built by the first refresh; the answers are those of a fresh build."""
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    for migration in schema.migrations()[:3]:
        con.execute(width.render(migration.sql, 384, migration.name))  # the width warehouses of that era have
    con.execute("CREATE TABLE _migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
    con.executemany("INSERT INTO _migrations VALUES (?, ?, current_timestamp)", [[m.version, m.name] for m in schema.migrations()[:3]])
    source = duckdb.connect(str(search_db), read_only=True)
    for table in ("models", "documents", "chunks"):
        rows = source.execute(f"SELECT * FROM {table}").to_arrow_table()  # noqa: F841 (read by DuckDB)
        con.execute(f"INSERT INTO {table} SELECT * FROM rows")
    source.close()
    connection.load_extension(con, "fts")
    con.execute(FTS_INDEX)
    con.close()

    with connection.opened(old) as con:
        assert not con.execute("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'fts_main_chunks'").fetchone()[0]
        assert not keyword.search_index_is_current(con)
        assert keyword.refresh_search_index(con) is True
        assert keyword.refresh_search_index(con) is False
        assert keyword.problems(con) == []
        migrated = _ranked(con, NEW_TOP, "monsoon relief shelters")
    with connection.opened(search_db, read_only=True) as con:
        assert migrated == _ranked(con, NEW_TOP, "monsoon relief shelters") and migrated


def test_compaction_sorts_postings_and_changes_no_answer(search_db, tmp_path, monkeypatch):
    db = tmp_path / "compact.duckdb"
    shutil.copy(search_db, db)
    queries = ["monsoon relief", "rate cut inflation", "wildfire evacuation Canada", "the"]
    with connection.opened(db) as con:
        # Shuffle the postings so the table is unsorted, as after many appends.
        con.execute("CREATE TEMP TABLE p AS SELECT * FROM kw_postings ORDER BY hash(chunk_no, term_id)")
        con.execute("DELETE FROM kw_postings")
        con.execute("INSERT INTO kw_postings SELECT * FROM p")
        con.execute("UPDATE kw_state SET appended = (SELECT count(*) FROM kw_postings)")
        before = {q: _ranked(con, NEW_TOP, q) for q in queries}
        monkeypatch.setattr(keyword, "COMPACT_MIN_APPENDED", 10)
        assert keyword.needs_compaction(con)
    monkeypatch.setattr(keyword, "COMPACT_SLICE", 300)
    slices = keyword.compact(lambda: connection.connect(db), pause=0)
    assert slices > 3
    with connection.opened(db) as con:
        assert not keyword.needs_compaction(con)
        assert keyword.problems(con) == []
        assert {q: _ranked(con, NEW_TOP, q) for q in queries} == before
        unsorted = con.execute(
            "SELECT count(*) FROM (SELECT term_id < lag(term_id) OVER (ORDER BY rowid) AS down FROM kw_postings) WHERE down"
        ).fetchone()[0]
        assert unsorted == 0


def test_index_problems_are_detected_and_repaired(search_db, tmp_path):
    """A postings table that disagrees with the chunks (never left by a write, but a hand edit or
    a bug) is found by problems() and rebuilt by the next refresh."""
    db = tmp_path / "broken.duckdb"
    shutil.copy(search_db, db)
    with connection.opened(db) as con:
        con.execute("DELETE FROM kw_chunks WHERE chunk_no = (SELECT min(chunk_no) FROM kw_chunks)")
        con.execute("UPDATE kw_postings SET tf = tf + 1 WHERE chunk_no = (SELECT max(chunk_no) FROM kw_chunks)")
        assert len(keyword.problems(con)) >= 2
        assert keyword.refresh_search_index(con) is True
        assert keyword.problems(con) == []


@pytest.mark.parametrize("text, words", [
    ("Zürich's café QX7441 — 2024", ["zurich", "s", "cafe", "qx7441", "2024"]),
    ("الفيضانات في دكا", ["الفيضانات", "في", "دكا"]),
    ("e.g. U.S.A.", ["e", "g", "u", "s", "a"]),
])  # fmt: skip
def test_tokenizer_keeps_letters_and_digits_of_any_script(search_db, text, words):
    with connection.opened(search_db, read_only=True) as con:
        got = con.execute("SELECT list_filter(kw_tokenize(?), w -> w <> '')", [text]).fetchone()[0]
    assert got == words


def test_searches_answer_during_an_ingest_into_200k_chunks(search_db, tmp_path, subprocess_env):
    """Keyword and hybrid searches, each a new `newsindex search` process, one after another for as
    long as an ingest into a 200 000-chunk warehouse runs: every one succeeds, and the new article
    is found once the ingest is done. The warehouse is the labelled corpus copied in SQL."""
    sys.path.insert(0, str(BENCH))
    from replicate import replicate

    big = tmp_path / "big.duckdb"
    assert replicate(search_db, big, 200_000) >= 200_000
    news = tmp_path / "news"
    for i in range(3):
        write(news / f"crane-{i}.txt", f"date 2026-11-2{i} A container crane collapsed at the Port of Valdoria{i}.\n\n"
              "Harbour officials said no one was hurt when the crane folded onto an empty berth in high winds.\n")  # fmt: skip
    ingest = subprocess.Popen([NEWSINDEX, "ingest", str(news), "--db", str(big), "--json"], env=subprocess_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    searches = []
    try:
        for mode in itertools.cycle(["keyword", "hybrid"]):
            if ingest.poll() is not None and len(searches) >= 2:
                break
            started = time.monotonic()
            done = subprocess.run([NEWSINDEX, "search", "crane harbour Valdoria", "--mode", mode, "-k", "3", "--db", str(big),
                                   "--json"], env=subprocess_env, capture_output=True, text=True, timeout=180)  # fmt: skip
            searches.append((mode, done.returncode, round(time.monotonic() - started, 1), done.stderr.strip()[-300:]))
            # A pause, as between a person's searches: readers that never let go starve any writer
            # (README, Guarantees: Locking).
            time.sleep(0.5)
        out, err = ingest.communicate(timeout=600)
    finally:
        if ingest.poll() is None:
            ingest.kill()
    assert ingest.returncode == 0, f"{out[-1500:]}\n{err[-1500:]}\nsearches: {searches}"
    assert json.loads(out)["added"] == 3
    failed = [s for s in searches if s[1] != 0]
    assert not failed, f"{len(failed)} of {len(searches)} searches failed: {failed}"
    found = subprocess.run([NEWSINDEX, "search", "Valdoria0", "--mode", "keyword", "--db", str(big), "--json"],
                           env=subprocess_env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "crane-0" in json.loads(found.splitlines()[0])["source_path"]
