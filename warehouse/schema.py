"""The warehouse's schema: the numbered migrations in warehouse/migrations/ and the runner that
applies the pending ones, all in one transaction, and refuses a file made by a newer newsindex."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

from newsindex.warehouse import width
from newsindex.warehouse.connection import WarehouseError, transaction

_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("newsindex.warehouse").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)



def _applied_versions(con: duckdb.DuckDBPyConnection) -> set[int]:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = '_migrations' AND table_schema = 'main'"
    ).fetchone()[0]
    if not exists:
        return set()
    return {row[0] for row in con.execute("SELECT version FROM _migrations").fetchall()}


def refuse_newer_schema(con: duckdb.DuckDBPyConnection, db: str | Path) -> None:
    """WarehouseError if a migration this code does not know was applied: a newer newsindex made
    the file, and old code would write rows its schema no longer means, or fail half way on a
    renamed column. Readers are refused too: no query here knows what the new schema means.
    Nothing is written before this check, so the file stays exactly as it was."""
    known = {m.version for m in migrations()}
    unknown = _applied_versions(con) - known
    if unknown:
        raise WarehouseError(
            f"{db}: made by a newer newsindex (schema {max(unknown)}, this one knows up to {max(known)}); upgrade newsindex"
        )


def pending_migrations(con: duckdb.DuckDBPyConnection) -> list[Migration]:
    applied = _applied_versions(con)
    return [m for m in migrations() if m.version not in applied]


def migrate(con: duckdb.DuckDBPyConnection, dim: int | None = None) -> list[str]:
    """Apply every pending migration in one transaction and record each; returns their names.

    Migrations that create vector columns are templates of their width (warehouse/width.py). The
    writer that creates a warehouse knows its model and passes `dim`; one that does not (delete on
    a new file, tests) gets the configured model's width, the one the next ingest writes with. A
    warehouse that exists keeps the width of its stored vectors."""
    refuse_newer_schema(con, path_of(con))
    pending = pending_migrations(con)
    if not pending:
        return []
    if any(width.needs_width(m.sql) for m in pending):
        if 1 not in _applied_versions(con):
            if dim is None:
                from newsindex.embedding import model_info  # reads the model's files only: no torch

                dim = model_info().dim
        else:  # a migration that rebuilds a stored table keeps its width, whatever the model
            from newsindex.warehouse.documents import chunk_dimension  # documents imports this module

            dim = chunk_dimension(con)
    current = None
    try:
        with transaction(con):
            con.execute(
                "CREATE TABLE IF NOT EXISTS _migrations ("
                " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            for migration in pending:
                current = migration
                con.execute(width.render(migration.sql, dim, f"migration {migration.version:03d}_{migration.name}"))
                con.execute(
                    "INSERT INTO _migrations VALUES (?, ?, current_timestamp)", [migration.version, migration.name]
                )
    except duckdb.Error as err:
        path = path_of(con)
        step = f"migration {current.version:03d}_{current.name}" if current else "migrating"
        first_line = str(err).strip().splitlines()[0]
        raise WarehouseError(f"{path}: {step} failed ({first_line}); the warehouse was left unchanged") from None
    return [f"{m.version:03d}_{m.name}" for m in pending]


def path_of(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
