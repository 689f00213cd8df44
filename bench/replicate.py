"""A big warehouse made from a small real one by copying its rows in SQL: documents, chunks (with
their vectors) and their keyword postings, each copy under new ids. No embedding, no tokenising:
200 000 chunks take about a minute. Used by bench/ingest.py's incremental run and by the test
that searches during an ingest (tests/test_keyword.py).

    .venv/bin/python bench/replicate.py SMALL.duckdb BIG.duckdb 200000
"""

from __future__ import annotations

import sys
from pathlib import Path


def replicate(base: str | Path, target: str | Path, chunks: int) -> int:
    """Copy `base` (migrated, keyword index built) into `target` until it holds at least `chunks`
    chunks; returns the chunk count. Copy i of document D is `D~i`, its file `/replica/i/<file>`."""
    from newsindex.warehouse import connection, schema

    target = Path(target)
    target.unlink(missing_ok=True)
    con = connection.connect(target)
    try:
        schema.migrate(con)
        con.execute("ATTACH '" + str(base).replace("'", "''") + "' AS base (READ_ONLY)")
        per_copy = con.execute("SELECT count(*) FROM base.chunks").fetchone()[0]
        copies = -(-chunks // per_copy)
        stride = con.execute("SELECT max(chunk_no) + 1 FROM base.kw_chunks").fetchone()[0]
        with connection.transaction(con):
            con.execute("INSERT INTO models SELECT * FROM base.models")
            con.execute(
                "INSERT INTO documents SELECT d.* REPLACE (d.doc_id || '~' || i AS doc_id,"
                " '/replica/' || i || d.source_path AS source_path, d.content_hash || i AS content_hash)"
                " FROM base.documents d, range(?) r(i)",
                [copies],
            )
            con.execute(
                "INSERT INTO chunks SELECT c.* REPLACE (c.doc_id || '~' || i AS doc_id, c.doc_id || '~' || i || '#' || c.ordinal AS chunk_id)"
                " FROM base.chunks c, range(?) r(i) ORDER BY i, c.doc_id, c.ordinal",
                [copies],
            )
            con.execute("DELETE FROM kw_words")
            con.execute("DELETE FROM kw_terms")
            con.execute("INSERT INTO kw_terms SELECT * FROM base.kw_terms")
            con.execute("INSERT INTO kw_words SELECT * FROM base.kw_words")
            con.execute(
                "INSERT INTO kw_chunks SELECT chunk_no + i * ? AS chunk_no, doc_id || '~' || i || substr(chunk_id, length(doc_id) + 1),"
                " doc_id || '~' || i, len FROM base.kw_chunks, range(?) r(i) ORDER BY 1",
                [stride, copies],
            )
            con.execute(
                "INSERT INTO kw_postings SELECT term_id, chunk_no + i * ? AS chunk_no, tf, len, published"
                " FROM base.kw_postings, range(?) r(i) ORDER BY term_id, chunk_no",
                [stride, copies],
            )
            for sequence, table, column in (("kw_chunk_nos", "kw_chunks", "chunk_no"), ("kw_term_ids", "kw_terms", "term_id")):
                start = con.execute(f"SELECT max({column}) + 1 FROM {table}").fetchone()[0]
                con.execute(f"DROP SEQUENCE {sequence}")
                con.execute(f"CREATE SEQUENCE {sequence} START {int(start)}")
            con.execute("DELETE FROM kw_state")
            con.execute("INSERT INTO kw_state VALUES (current_timestamp, 0)")
        con.execute("DETACH base")
        con.execute("CHECKPOINT")
        total = con.execute("SELECT count(*) FROM chunks").fetchone()[0]
    finally:
        con.close()
    settle(target)
    return total


def settle(db: str | Path) -> None:
    """Write and remove one document, as an ingest would: the first write after the bulk copy
    costs a one-time rewrite at its checkpoint (tens of seconds at 200k chunks, see
    bench/RESULTS.md), which belongs to making the copy, not to the ingests measured on it."""
    import datetime as dt

    import numpy as np

    from newsindex.warehouse import connection, documents

    with connection.opened(db) as con:
        fingerprint = con.execute("SELECT fingerprint FROM models LIMIT 1").fetchone()[0]
        doc = documents.DocumentRow(
            doc_id="settle", source_path="/settle.txt", format="txt", line=None, title="settle", lead="settle",
            published=dt.date(2000, 1, 1), url=None, text="settle", content_hash="settle", chunk_key="settle",
            chunk_texts=["settle"], chunk_spans=[(0, 6)], chunk_tokens=[1],
        )  # fmt: skip
        documents.write_documents(con, [doc], np.ones((1, documents.chunk_dimension(con)), np.float32), fingerprint)
    with connection.opened(db) as con:
        documents.prune(con, ["/settle.txt"], {"/settle.txt": set()})


if __name__ == "__main__":
    print(replicate(sys.argv[1], sys.argv[2], int(sys.argv[3])), "chunks")
