"""Read-only query sessions over the warehouse, with `embed(text)` available in SQL.

A session opens the file read-only and only for as long as one command needs it, so ingestion is
blocked for milliseconds, not for the life of a shell. After the extensions are loaded the session
turns off external access and locks its configuration: SQL typed by a user can read the warehouse,
and nothing else.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from newsindex import config
from newsindex.embedding import int8_info, model_info, query_encoder
from newsindex.warehouse import connection, documents, schema

# An ingest holds the file for the length of one write; waiting this long covers that.
READ_WAIT_SECONDS = 10.0


class ModelMismatch(connection.WarehouseError):
    """The configured model is not the one that made the stored vectors."""


def current_model_check(con: duckdb.DuckDBPyConnection, db: str | Path | None = None) -> str | None:
    """None when queries may be embedded with the configured model, else the reason they may not
    (naming `db`, by default the connection's file: a snapshot's caller names the real one).
    Vectors of the model's int8 export count as the model's (queries are embedded exactly either
    way), but not mixed with exact ones: their neighbours would be ranked on two scales."""
    info = model_info(str(config.model_path()), config.model_name())
    own = {info.fingerprint, int8_info(info).fingerprint}
    stored = documents.stored_models(con)
    stored_width = documents.chunk_dimension(con)
    if info.dim != stored_width:
        # Said first and with both widths: no query vector of this model can be compared with these.
        made = f" (made by {', '.join(name for _, name, _ in stored)})" if stored else ""
        return (
            f"{db or schema.path_of(con)}: stores {stored_width}-dim vectors{made}, but the configured model {info.name} "
            f"makes {info.dim}-dim ones; set NEWSINDEX_MODEL to a {stored_width}-dim model (the one it was made with)"
        )
    others = [(fp, name) for fp, name, _ in stored if fp not in own]
    if not others:
        if len(stored) > 1:
            return (
                f"the warehouse holds both exact and int8 vectors of {info.name}; re-ingest everything with one "
                "--precision (`newsindex ingest PATHS --precision exact`, or int8)"
            )
        return None
    described = ", ".join(f"{name} (weights {fp})" for fp, name in others)
    return (
        f"the warehouse's vectors were made by {described}, but the configured model is "
        f"{info.name} (weights {info.fingerprint}); re-ingest with this model or set NEWSINDEX_MODEL to the original"
    )


# What session() found out while opening each connection: whether fts is loaded, and the model
# check's answer (a read-only session keeps writers out, so neither can change while it is open).
checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextmanager
def session(
    db: str | Path | None = None, *, keyword: bool = True, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """`keyword=False` skips loading the fts extension (a third of a warm semantic query's time);
    keyword search takes its stem() to stem the query as ingest stemmed the text.
    `memory_limit` (DuckDB's syntax, e.g. '4GB') caps what the session's queries may hold, and
    turns off spilling: a query over it fails instead of filling the disk beside the warehouse."""
    path = config.db_path(db)
    with connection.opened(path, read_only=True, wait=READ_WAIT_SECONDS) as con:
        if keyword:
            connection.load_extension(con, "fts")
        problem = current_model_check(con, path)
        checked[con] = {"fts": keyword, "model_problem": problem}
        _register_embed(con, problem)
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
            con.execute("SET temp_directory = ''")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        yield con


def _register_embed(con: duckdb.DuckDBPyConnection, mismatch: str | None) -> None:
    import pyarrow as pa

    info = model_info(str(config.model_path()), config.model_name())

    def embed(texts):  # no annotations: DuckDB inspects them, and pa is a local name
        # The check ran before any query: a UDF must not run SQL on the connection that calls it.
        if mismatch:
            raise ModelMismatch(mismatch)
        values = texts.to_pylist()
        present = [t for t in values if t is not None]
        vectors = iter(query_encoder(info).encode(present)) if present else iter(())
        rows = [next(vectors).tolist() if t is not None else None for t in values]
        return pa.array(rows, type=pa.list_(pa.float32(), info.dim))

    con.create_function("embed", embed, ["VARCHAR"], f"FLOAT[{info.dim}]", type="arrow")
