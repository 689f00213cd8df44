"""The BM25 keyword index: postings tables in the warehouse (migration 004), changed with the chunks.

`add_documents` and `remove_documents` run inside the transaction that writes or deletes the
chunks (documents.write_documents, documents.prune), so the index and the chunks commit together or not
at all: a crash can never leave one ahead of the other. Only the changed chunks are tokenised, so
an ingest's index work grows with what it changed, not with the warehouse. Queries go through the
`bm25_chunks(query)` table macro, which reads only the postings of the query's terms.

New postings are appended; a full build writes them sorted by term, which is what lets a query skip
the row groups of other terms. `compact` re-sorts the appended tail once it is large, one slice of
terms per short transaction, so no write holds the file for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import duckdb
import pyarrow as pa

from newsindex.warehouse.connection import load_extension, transaction

# Postings appended since the last sort before compaction pays: below this a query scans the tail
# whole in a few milliseconds.
COMPACT_MIN_APPENDED = 1_000_000
# ... and as a share of all postings, so that compaction's cost per ingested posting stays bounded.
COMPACT_SHARE = 0.05
# Postings rewritten per compaction transaction: well under a second of DuckDB work.
COMPACT_SLICE = 2_000_000


def load_stemmer(con: duckdb.DuckDBPyConnection) -> None:
    """stem() comes from the fts extension; only writers need it."""
    load_extension(con, "fts")


# An in-memory DuckDB with fts loaded, kept for the process: a writer opens the warehouse anew for
# each batch (so that readers get in between), and LOADing fts into each of those connections cost
# more CPU than the batch's own index work (bench/RESULTS.md).
_stemmer: duckdb.DuckDBPyConnection | None = None
_stemmer_lock = threading.Lock()


def stem_words(words: pa.Table) -> pa.Table:
    """(word, term): each word of the one-column table `words` with its Porter stem, fts's stem()."""
    global _stemmer
    with _stemmer_lock:
        if _stemmer is None:
            stemmer = duckdb.connect(":memory:")
            load_stemmer(stemmer)
            _stemmer = stemmer
        cursor = _stemmer.cursor()
        try:
            cursor.register("words_to_stem", words)
            return cursor.execute("SELECT word, stem(word, 'porter') AS term FROM words_to_stem").to_arrow_table()
        finally:
            cursor.close()


def is_built(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the index exists and covers the chunks (False too before migration 004)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main'"
        " AND table_name = 'kw_state'"
    ).fetchone()[0]
    return bool(exists) and con.execute("SELECT count(*) FROM kw_state").fetchone()[0] > 0


def is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the index covers the chunks: built, and one indexed row per chunk. Cheap (row counts),
    for every search; `problems` is the thorough check."""
    built, indexed, chunks = con.execute(
        "SELECT (SELECT count(*) FROM kw_state), (SELECT count(*) FROM kw_chunks), (SELECT count(*) FROM chunks)"
    ).fetchone()
    return built > 0 and indexed == chunks


def _chunk_sets_match(con: duckdb.DuckDBPyConnection) -> bool:
    indexed, stored = con.execute(
        "SELECT (SELECT (coalesce(bit_xor(hash(chunk_id || doc_id)), 0), count(*)) FROM kw_chunks),"
        " (SELECT (coalesce(bit_xor(hash(chunk_id || doc_id)), 0), count(*)) FROM chunks)"
    ).fetchone()
    return indexed == stored


def add_documents(con: duckdb.DuckDBPyConnection, doc_ids: Sequence[str] | None) -> int:
    """Index the stored chunks of these documents (all chunks with None); returns postings added.
    Call inside the transaction that inserted the chunks, after removing their old postings."""
    if doc_ids is not None and not doc_ids:
        return 0
    every = doc_ids is None
    ids = [] if every else list(doc_ids)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE kw_new AS SELECT nextval('kw_chunk_nos') AS chunk_no, c.chunk_id, c.doc_id,"
        " c.text, d.published FROM chunks c JOIN documents d USING (doc_id) WHERE ? OR c.doc_id IN (SELECT unnest(?))",
        [every, ids],
    )
    # A stop word is dropped before stemming, as create_fts_index did.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE kw_tokens AS SELECT chunk_no, word, md5_number_lower(word) AS key FROM"
        " (SELECT chunk_no, unnest(kw_tokenize(text)) AS word FROM kw_new)"
        " WHERE word <> '' AND word NOT IN (SELECT word FROM kw_stopwords)"
    )
    new_words = con.execute("SELECT DISTINCT word FROM kw_tokens WHERE key NOT IN (SELECT key FROM kw_words)").to_arrow_table()
    con.register("kw_stemmed", stem_words(new_words))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE kw_new_words AS SELECT word, term FROM kw_stemmed")
    finally:
        con.unregister("kw_stemmed")
    con.execute(
        "INSERT INTO kw_terms SELECT nextval('kw_term_ids'), term, md5_number_lower(term) FROM"
        " (SELECT DISTINCT term FROM kw_new_words WHERE term NOT IN (SELECT term FROM kw_terms) ORDER BY term)"
    )
    con.execute(
        "INSERT INTO kw_words SELECT md5_number_lower(n.word), n.word, t.term_id FROM kw_new_words n JOIN kw_terms t USING (term)"
    )
    con.execute(
        "INSERT INTO kw_chunks SELECT n.chunk_no, n.chunk_id, n.doc_id, coalesce(l.len, 0)"
        " FROM kw_new n LEFT JOIN (SELECT chunk_no, count(*) AS len FROM kw_tokens GROUP BY chunk_no) l USING (chunk_no)"
        " ORDER BY n.chunk_no"
    )
    added = con.execute(
        "INSERT INTO kw_postings SELECT f.term_id, f.chunk_no, f.tf, c.len, n.published FROM"
        " (SELECT w.term_id, t.chunk_no, count(*)::INTEGER AS tf FROM kw_tokens t JOIN kw_words w USING (key) GROUP BY ALL) f"
        " JOIN kw_chunks c USING (chunk_no) JOIN kw_new n USING (chunk_no) ORDER BY f.term_id, f.chunk_no"
    ).fetchone()[0]
    con.execute("UPDATE kw_state SET appended = appended + ?", [0 if every else added])
    for table in ("kw_new", "kw_tokens", "kw_new_words"):
        con.execute(f"DROP TABLE {table}")
    return added


def remove_documents(con: duckdb.DuckDBPyConnection, doc_ids: Sequence[str]) -> None:
    """Drop the postings of these documents' chunks; call in the transaction that deletes them."""
    if not doc_ids:
        return
    con.execute(
        "DELETE FROM kw_postings WHERE chunk_no IN (SELECT chunk_no FROM kw_chunks WHERE doc_id IN (SELECT unnest(?)))",
        [list(doc_ids)],
    )
    con.execute("DELETE FROM kw_chunks WHERE doc_id IN (SELECT unnest(?))", [list(doc_ids)])


def rebuild(con: duckdb.DuckDBPyConnection) -> int:
    """Index every chunk afresh, sorted by term, in one transaction; returns the postings written."""
    with transaction(con):
        # Words and terms stay: a word's stem never changes, and stop words are kept there too.
        for table in ("kw_postings", "kw_chunks", "kw_state"):
            con.execute(f"DELETE FROM {table}")
        con.execute("INSERT INTO kw_state VALUES (current_timestamp, 0)")
        return add_documents(con, None)


def refresh(con: duckdb.DuckDBPyConnection, force: bool = False) -> bool:
    """Build the index where it is missing (a warehouse migrated from the fts index) or does not
    cover the chunks (never expected: every write keeps them together); returns whether it did.
    It compares counts only, so that it holds the file for no time at any size; `problems` is the
    thorough check."""
    if not force and is_built(con) and is_current(con):
        return False
    rebuild(con)
    return True


def needs_compaction(con: duckdb.DuckDBPyConnection) -> bool:
    appended, total = con.execute("SELECT (SELECT max(appended) FROM kw_state), (SELECT count(*) FROM kw_postings)").fetchone()
    return appended is not None and appended >= max(COMPACT_MIN_APPENDED, COMPACT_SHARE * total)


def compact(open_con: Callable[[], duckdb.DuckDBPyConnection], pause: float = 0.3) -> int:
    """Rewrite the postings sorted by term, one slice of terms per transaction on a freshly opened
    connection, pausing between slices so that waiting readers get the file; returns the slices.

    Each slice deletes the postings of a term range and inserts them again in term order: they land
    at the end of the table, slice after slice, so after a pass the table is sorted again. Rows are
    only moved, never changed, so a reader between slices (or a crash in the middle) sees the same
    index, only less well sorted; `appended` is reset by the last slice."""
    con = open_con()
    try:
        counts = con.execute("SELECT term_id, count(*) FROM kw_postings GROUP BY term_id ORDER BY term_id").fetchall()
    finally:
        con.close()
    slices: list[tuple[int, int]] = []
    start, size = None, 0
    for term_id, n in counts:
        if start is None:
            start = term_id
        size += n
        if size >= COMPACT_SLICE:
            slices.append((start, term_id))
            start, size = None, 0
    if start is not None:
        slices.append((start, counts[-1][0]))
    for i, (low, high) in enumerate(slices):
        if i:
            time.sleep(pause)
        con = open_con()
        try:
            with transaction(con):
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE kw_slice AS SELECT * FROM kw_postings"
                    " WHERE term_id BETWEEN ? AND ? ORDER BY term_id, chunk_no",
                    [low, high],
                )
                con.execute("DELETE FROM kw_postings WHERE term_id BETWEEN ? AND ?", [low, high])
                con.execute("INSERT INTO kw_postings SELECT * FROM kw_slice")
                con.execute("DROP TABLE kw_slice")
                if i == len(slices) - 1:
                    con.execute("UPDATE kw_state SET appended = 0")
        finally:
            con.close()
    return len(slices)


def query_stems(con: duckdb.DuckDBPyConnection, query: str) -> list[str]:
    """The Porter stems of the query's words, as fts's match_bm25 took them (fts loaded on `con`)."""
    return con.execute(
        "SELECT coalesce(list(DISTINCT stem(w, 'porter')), []) FROM (SELECT unnest(kw_tokenize(?)) AS w) WHERE w <> ''",
        [query],
    ).fetchone()[0]


def problems(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Where the stored index differs from one built afresh from the chunks (for tests and checks)."""
    found = []
    if not is_built(con):
        return ["the keyword index is not built"]
    if not _chunk_sets_match(con):
        found.append("indexed chunks differ from the stored chunks")
    load_stemmer(con)
    differ = con.execute(
        "WITH tokens AS (SELECT chunk_id, word FROM (SELECT chunk_id, unnest(kw_tokenize(text)) AS word FROM chunks)"
        "   WHERE word <> '' AND word NOT IN (SELECT word FROM kw_stopwords)),"
        " fresh AS (SELECT chunk_id, stem(word, 'porter') AS term, count(*) AS tf FROM tokens GROUP BY ALL),"
        " stored AS (SELECT c.chunk_id, t.term, p.tf FROM kw_postings p JOIN kw_chunks c USING (chunk_no)"
        "   JOIN kw_terms t USING (term_id))"
        " SELECT count(*) FROM ((FROM fresh EXCEPT ALL FROM stored) UNION ALL (FROM stored EXCEPT ALL FROM fresh))"
    ).fetchone()[0]
    if differ:
        found.append(f"{differ} postings differ from a fresh build")
    bad_len = con.execute(
        "SELECT count(*) FROM kw_postings p JOIN kw_chunks c USING (chunk_no) WHERE p.len <> c.len"
    ).fetchone()[0]
    if bad_len:
        found.append(f"{bad_len} postings carry a stale chunk length")
    return found


def search_index_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the keyword index covers the stored chunks (is_current, under the name searches use)."""
    return is_current(con)


def refresh_search_index(con: duckdb.DuckDBPyConnection, force: bool = False) -> bool:
    """Build the keyword index where it is missing or does not match the chunks; returns whether it
    did. Writes keep it current, so this builds only once, after the migration from the fts index."""
    return refresh(con, force)
