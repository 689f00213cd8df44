"""Schema migrations: applied in one transaction, recorded, and not applied twice."""

from __future__ import annotations

import duckdb
import pytest

from newsindex.warehouse import store


def test_migrations_from_an_empty_file(db):
    con = store.connect(db)
    applied = store.migrate(con)
    assert applied == [f"{m.version:03d}_{m.name}" for m in store.migrations()]
    assert applied[0] == "001_initial"
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"documents", "chunks", "models", "ingest_runs", "ingest_errors", "_migrations"} <= tables
    assert store.chunk_dimension(con) == 384
    recorded = con.execute("SELECT version, name FROM _migrations ORDER BY version").fetchall()
    assert [(m.version, m.name) for m in store.migrations()] == recorded
    con.close()


def test_second_run_is_a_no_op(db):
    with store.opened(db) as con:
        first = con.execute("SELECT version, applied_at FROM _migrations").fetchall()
    with store.opened(db) as con:
        assert store.migrate(con) == []
        assert con.execute("SELECT version, applied_at FROM _migrations").fetchall() == first


def test_read_only_open_refuses_missing_or_unmigrated(db):
    with pytest.raises(store.WarehouseError, match="no warehouse here yet"):
        store.connect(db, read_only=True)
    db.parent.mkdir(parents=True)
    duckdb.connect(str(db)).close()
    with pytest.raises(store.WarehouseError, match="schema is out of date"):
        with store.opened(db, read_only=True):
            pass


def test_failed_migration_leaves_the_file_untouched(db, monkeypatch):
    broken = store.Migration(1, "initial", store.migrations()[0].sql + "\nCREATE TABLE documents (x INTEGER);")
    monkeypatch.setattr(store, "migrations", lambda: [broken])
    con = store.connect(db)
    with pytest.raises(duckdb.CatalogException):
        store.migrate(con)
    assert con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0] == 0
    con.close()
