"""Schema migrations: applied in one transaction, recorded, not applied twice; a warehouse of the
first schema migrates keeping its data, and a failed migration changes nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import numpy as np
import pytest

from newsindex.warehouse import connection, documents, keyword, runs, schema


def test_migrations_from_an_empty_file(db):
    con = connection.connect(db)
    applied = schema.migrate(con)
    assert applied == [f"{m.version:03d}_{m.name}" for m in schema.migrations()]
    assert applied[0] == "001_initial"
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"documents", "chunks", "models", "ingest_runs", "ingest_errors", "_migrations"} <= tables
    assert documents.chunk_dimension(con) == 384
    recorded = con.execute("SELECT version, name FROM _migrations ORDER BY version").fetchall()
    assert [(m.version, m.name) for m in schema.migrations()] == recorded
    con.close()


def test_second_run_is_a_no_op(db):
    with connection.opened(db) as con:
        first = con.execute("SELECT version, applied_at FROM _migrations").fetchall()
    with connection.opened(db) as con:
        assert schema.migrate(con) == []
        assert con.execute("SELECT version, applied_at FROM _migrations").fetchall() == first


def test_read_only_open_refuses_missing_or_unmigrated(db):
    with pytest.raises(connection.WarehouseError, match="no warehouse here yet"):
        connection.connect(db, read_only=True)
    db.parent.mkdir(parents=True)
    duckdb.connect(str(db)).close()
    with pytest.raises(connection.WarehouseError, match="schema is out of date"):
        with connection.opened(db, read_only=True):
            pass


def test_failed_migration_on_an_empty_file_creates_nothing(db, monkeypatch):
    broken = schema.Migration(1, "initial", schema.migrations()[0].sql + "\nCREATE TABLE documents (x INTEGER);")
    monkeypatch.setattr(schema, "migrations", lambda: [broken])
    con = connection.connect(db)
    with pytest.raises(connection.WarehouseError, match="migration 001_initial failed"):
        schema.migrate(con)
    assert con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0] == 0
    con.close()


# --- a warehouse made by the first schema ------------------------------------------------------


def _first_schema_warehouse(db, monkeypatch) -> None:
    """A warehouse as the first release made it: only 001 applied, two documents, one finished run."""
    first = schema.migrations()[0]
    assert first.version == 1
    with monkeypatch.context() as patch:
        patch.setattr(schema, "migrations", lambda: [first])
        with connection.opened(db) as con:
            documents.register_model(con, "fp-old", "old-model", 384)
            docs = [_doc("a", ["Alpha one.", "Alpha two."]), _doc("b", ["Beta."])]
            vectors = np.eye(3, 384, dtype=np.float32)
            documents.write_documents(con, docs, vectors, "fp-old")
            con.execute(
                "INSERT INTO ingest_runs (run_id, status, paths, started_at, finished_at, seen, added)"
                " VALUES ('r1', 'completed', ['old/'], TIMESTAMP '2024-01-01 10:00', TIMESTAMP '2024-01-01 10:01', 2, 2)"
            )


def _doc(doc_id: str, chunks: list[str]) -> documents.DocumentRow:
    text = " ".join(chunks)
    spans, start = [], 0
    for chunk in chunks:
        spans.append((start, start + len(chunk)))
        start += len(chunk) + 1
    return documents.DocumentRow(
        doc_id=doc_id, source_path=f"/old/{doc_id}.txt", format="txt", line=None, title=doc_id.upper(),
        lead=chunks[0], published=dt.date(2024, 1, 2), url=None, text=text, content_hash=f"h-{doc_id}",
        chunk_key="k", chunk_texts=chunks, chunk_spans=spans, chunk_tokens=[3] * len(chunks),
    )  # fmt: skip


def _dump(db) -> dict:
    """Everything a migration could change: tables and their columns, views, macros, every row."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        columns = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall()
        views = con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY ALL").fetchall()
        macros = con.execute(
            "SELECT function_name FROM duckdb_functions() WHERE NOT internal AND schema_name = 'main' ORDER BY ALL"
        ).fetchall()
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY ALL").fetchall()]  # fmt: skip
        rows = {t: con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in tables}
        return {"columns": columns, "views": views, "macros": macros, "rows": rows}
    finally:
        con.close()


def test_first_schema_warehouse_migrates_and_keeps_its_data(db, monkeypatch):
    _first_schema_warehouse(db, monkeypatch)
    before = _dump(db)
    assert [r[0] for r in before["rows"]["_migrations"]] == [1]
    with pytest.raises(connection.WarehouseError, match="schema is out of date"):
        with connection.opened(db, read_only=True):
            pass

    with connection.opened(db) as con:
        assert [v for (v,) in con.execute("SELECT version FROM _migrations ORDER BY 1").fetchall()] == [
            m.version for m in schema.migrations()
        ]
        # Every old row is still there, column for column (later migrations only add columns).
        for table in ("documents", "chunks", "models", "ingest_runs", "ingest_errors"):
            old_columns = [c for t, c, _ in before["columns"] if t == table]
            now = con.execute(f"SELECT {', '.join(old_columns)} FROM {table} ORDER BY ALL").fetchall()
            assert now == before["rows"][table], table
        # The later schema works on the old data: views, the filter macro, the new run columns.
        assert con.execute("SELECT doc_id, chunks FROM articles ORDER BY 1").fetchall() == [("a", 2), ("b", 1)]
        assert con.execute("SELECT count(*) FROM passages WHERE passage_filter(published, source_path, doc_id,"
                           " NULL, NULL, 'old/*', NULL)").fetchone()[0] == 3  # fmt: skip
        assert con.execute("SELECT status, pid FROM ingest_runs").fetchall() == [("completed", None)]
        assert keyword.refresh_search_index(con) is True
    with connection.opened(db, read_only=True) as con:
        assert runs.stats(con)["documents"] == 2


def test_failed_migration_leaves_the_file_untouched(db, monkeypatch):
    _first_schema_warehouse(db, monkeypatch)
    before = _dump(db)
    size = db.stat().st_size
    # The real later migrations succeed, then this one changes things and fails half-way.
    broken = schema.Migration(99, "broken", "CREATE TABLE extra (a INTEGER);\n"
                             "ALTER TABLE documents ADD COLUMN z INTEGER;\n"
                             "DELETE FROM chunks;\n"
                             "SELECT * FROM no_such_table;")  # fmt: skip
    real = schema.migrations()
    monkeypatch.setattr(schema, "migrations", lambda: [*real, broken])

    with pytest.raises(connection.WarehouseError) as failure:
        with connection.opened(db):
            pass
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"{db}: migration 099_broken failed (Catalog Error: Table with name no_such_table")
    assert message.endswith("the warehouse was left unchanged")

    assert _dump(db) == before
    assert not db.with_name(db.name + ".wal").exists() or db.with_name(db.name + ".wal").stat().st_size == 0
    assert db.stat().st_size == size
    # And the old warehouse still migrates once the broken migration is gone.
    monkeypatch.setattr(schema, "migrations", lambda: real)
    with connection.opened(db) as con:
        assert con.execute("SELECT count(*) FROM chunks").fetchone()[0] == 3


def _keys(con, table: str) -> list[str]:
    return [t for (t,) in con.execute(
        "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = ? AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
        [table]).fetchall()]  # fmt: skip


def test_migration_005_drops_the_row_keys_and_keeps_rows_order_and_width(db, monkeypatch):
    """A warehouse of schema 004, made with 8-dim vectors, keeps its width through 005 though the
    configured model makes 384-dim ones: a migration that rebuilds a table reads the stored width."""
    before_005 = [m for m in schema.migrations() if m.version < 5]
    with monkeypatch.context() as patch:
        patch.setattr(schema, "migrations", lambda: before_005)
        with connection.opened(db, dim=8) as con:
            assert _keys(con, "chunks") == ["PRIMARY KEY"] and _keys(con, "documents") == ["PRIMARY KEY"]
            documents.register_model(con, "fp-8", "small-model", 8)
            docs = [_doc("b", ["Beta one.", "Beta two."]), _doc("a", ["Alpha."])]
            documents.write_documents(con, docs, np.eye(3, 8, dtype=np.float32), "fp-8")
            stored = {t: con.execute(f"SELECT * FROM {t}").fetchall() for t in ("documents", "chunks")}
    with connection.opened(db) as con:
        assert con.execute("SELECT max(version) FROM _migrations").fetchone()[0] >= 5
        assert documents.chunk_dimension(con) == 8
        for table in ("documents", "chunks"):
            assert _keys(con, table) == [], table
            assert con.execute(f"SELECT * FROM {table}").fetchall() == stored[table], table  # same rows, same order
            nulls = con.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = ? AND constraint_type = 'NOT NULL'",
                                [table]).fetchone()[0]  # fmt: skip
            assert nulls == {"documents": 11, "chunks": 9}[table], table  # all but line, published, url
        assert con.execute("SELECT doc_id, chunks FROM articles ORDER BY 1").fetchall() == [("a", 1), ("b", 2)]
        # Ids stay unique without the key: a rewrite replaces, and one write cannot name an id twice.
        changed = dataclasses.replace(_doc("a", ["Alpha again.", "More."]), content_hash="h-a2")
        assert documents.write_documents(con, [changed], np.eye(2, 8, dtype=np.float32), "fp-8").updated == 1
        assert con.execute("SELECT chunk_id FROM chunks WHERE doc_id = 'a' ORDER BY 1").fetchall() == [("a#0",), ("a#1",)]
        with pytest.raises(connection.ConstraintViolated, match="document id 'b' appears twice in one write"):
            documents.write_documents(con, [_doc("b", ["B."]), _doc("c", ["C."]), _doc("b", ["B2."])],
                                      np.eye(3, 8, dtype=np.float32), "fp-8")  # fmt: skip
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 2


# --- a warehouse made by a newer newsindex -----------------------------------------------------


def _files_beside(db) -> dict[str, tuple[bytes, int]]:
    """Every file of the warehouse (the database, a WAL), as bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in db.parent.iterdir()
            if p.name == db.name or p.name.startswith(db.name + ".wal")}  # fmt: skip


def test_a_newer_warehouse_is_refused_by_writers_and_readers_and_left_unchanged(db, subprocess_env):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import SEEDS

    with connection.opened(db) as con:
        documents.register_model(con, "fp-new", "new-model", 384)
        documents.write_documents(con, [_doc("a", ["Alpha one.", "Alpha two."])], np.eye(2, 384, dtype=np.float32), "fp-new")
        # What a newer release did: a migration this code has never seen, which renamed a column.
        con.execute("ALTER TABLE documents RENAME COLUMN title TO headline")
        con.execute("INSERT INTO _migrations VALUES (7, 'future_schema', current_timestamp)")
        con.execute("CHECKPOINT")
    before = _files_beside(db)
    known = max(m.version for m in schema.migrations())
    expected = f"Error: {db}: made by a newer newsindex (schema 7, this one knows up to {known}); upgrade newsindex"

    newsindex = str(Path(sys.executable).with_name("newsindex"))
    commands = [
        ["ingest", str(SEEDS)],
        ["ingest", str(SEEDS), "--prune"],
        ["stats"],
        ["search", "alpha"],
        ["sql", "SELECT count(*) FROM documents"],
        ["query", "latest_articles"],
    ]
    for command in commands:
        result = subprocess.run([newsindex, *command, "--db", str(db)], capture_output=True, text=True,
                                env=subprocess_env, timeout=300)  # fmt: skip
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.strip().splitlines()[-1] == expected, (command, result.stderr)
        assert "Traceback" not in result.stderr, command
    assert _files_beside(db) == before, "the newer warehouse must be left byte for byte as it was"

    con = connection.connect(db)
    try:
        with pytest.raises(connection.WarehouseError, match="made by a newer newsindex"):
            schema.migrate(con)
    finally:
        con.close()
    assert _files_beside(db) == before
