"""What the warehouse stores: models, documents and their chunks. Every write here is one
transaction that changes the chunks and their keyword postings together (see keyword.py)."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import duckdb

from newsindex import faults
from newsindex.warehouse import keyword, schema
from newsindex.warehouse.connection import ConstraintViolated, WarehouseError, transaction

# --- models -------------------------------------------------------------------------------------


_STATE_SQL = (
    "SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM documents),"
    " (SELECT max(updated_at) FROM documents)::VARCHAR"
)


def warehouse_state(con: duckdb.DuckDBPyConnection) -> tuple:
    """(chunks, documents, newest updated_at): what every write (replace, add, prune) changes, so
    the caches of the warehouse (warm search, the vector file, the approximate index) key on it."""
    return tuple(con.execute(_STATE_SQL).fetchone())


def stored_models(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(fingerprint, name, dim) of every model that has vectors in the warehouse."""
    # EXISTS stops at the first chunk of each model instead of scanning every chunk.
    return con.execute(
        "SELECT fingerprint, name, dim FROM models m WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.model = m.fingerprint)"
    ).fetchall()


class WidthMismatch(WarehouseError):
    """A model whose vectors are not as wide as the warehouse's vector columns."""


def register_model(con: duckdb.DuckDBPyConnection, fingerprint: str, name: str, dim: int) -> None:
    """Record the model behind the vectors about to be written; WidthMismatch, before anything is
    written, if its vectors do not fit the warehouse (its width was fixed by its first model)."""
    stored = chunk_dimension(con)
    if dim != stored:
        raise WidthMismatch(
            f"{schema.path_of(con)}: stores {stored}-dim vectors, but model {name} makes {dim}-dim ones; "
            f"ingest with a {stored}-dim model (NEWSINDEX_MODEL) or into a new warehouse (--db)"
        )
    con.execute("INSERT INTO models (fingerprint, name, dim) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [fingerprint, name, dim])


def chunk_dimension(con: duckdb.DuckDBPyConnection) -> int:
    """The width of the stored vectors: the type of chunks.embedding, fixed when the warehouse was
    made. Every search reads it, so it comes from the plan of a query that never runs, not from
    information_schema (a scan of the whole catalog)."""
    column = con.sql("SELECT embedding FROM chunks").types[0]
    return int(dict(column.children)["size"])


# --- documents and chunks -----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredDoc:
    content_hash: str
    chunk_key: str
    source_path: str


def stored_docs(con: duckdb.DuckDBPyConnection, doc_ids: Sequence[str]) -> dict[str, StoredDoc]:
    rows = con.execute(
        "SELECT doc_id, content_hash, chunk_key, source_path FROM documents WHERE doc_id IN (SELECT unnest(?))",
        [list(doc_ids)],
    ).fetchall()
    return {row[0]: StoredDoc(row[1], row[2], row[3]) for row in rows}


def documents_with_texts(con: duckdb.DuckDBPyConnection, texts: Sequence[tuple[str, int]]) -> list[tuple[str, str, str, str]]:
    """(text hash, file or file:line, source path, doc id) of stored documents whose text has one of
    these (SHA-256, length) pairs; the length test spares hashing every stored text."""
    return con.execute(
        "SELECT sha256(text), CASE WHEN line IS NULL THEN source_path ELSE source_path || ':' || line END, source_path, doc_id"
        " FROM documents WHERE length(text) IN (SELECT unnest(?)) AND sha256(text) IN (SELECT unnest(?))",
        [sorted({n for _, n in texts}), sorted({h for h, _ in texts})],
    ).fetchall()


def documents_from(con: duckdb.DuckDBPyConnection, sources: Sequence[str]) -> list[tuple[str, str, int | None]]:
    """(doc id, source path, line) of every stored document read from one of these files."""
    return con.execute(
        "SELECT doc_id, source_path, line FROM documents WHERE source_path IN (SELECT unnest(?))", [list(sources)]
    ).fetchall()


def text_hashes(con: duckdb.DuckDBPyConnection, doc_ids: Sequence[str]) -> dict[str, str]:
    """doc id -> SHA-256 of its text, for these documents."""
    return dict(con.execute("SELECT doc_id, sha256(text) FROM documents WHERE doc_id IN (SELECT unnest(?))", [list(doc_ids)]).fetchall())


def delete_documents(con: duckdb.DuckDBPyConnection, doc_ids: Sequence[str], db: str | Path = "") -> list[tuple[str, str]]:
    """Remove these documents, their chunks and their postings in one transaction; (doc id, file or
    file:line) of each. All or nothing: an id that is not stored removes none and names it."""
    wanted = list(dict.fromkeys(doc_ids))
    with transaction(con):
        rows = con.execute(
            "SELECT doc_id, CASE WHEN line IS NULL THEN source_path ELSE source_path || ':' || line END"
            " FROM documents WHERE doc_id IN (SELECT unnest(?)) ORDER BY doc_id",
            [wanted],
        ).fetchall()
        missing = sorted(set(wanted) - {doc_id for doc_id, _ in rows})
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (" …" if len(missing) > 5 else "")
            raise WarehouseError(f"{db}: no document {shown}; nothing was deleted (`newsindex sql` can list ids)")
        if keyword.is_built(con):
            keyword.remove_documents(con, wanted)
        con.execute("DELETE FROM chunks WHERE doc_id IN (SELECT unnest(?))", [wanted])
        con.execute("DELETE FROM documents WHERE doc_id IN (SELECT unnest(?))", [wanted])
    return [(doc_id, where) for doc_id, where in rows]


def settle(con: duckdb.DuckDBPyConnection, remove: Sequence[str], lines: Sequence[tuple[str, int]]) -> int:
    """In one transaction: remove documents superseded under new ids (id-less JSON Lines lines that
    earlier versions stored by line number), and record the line each moved JSON Lines document is
    on now. Returns how many documents were removed."""
    removed = 0
    with transaction(con):
        if remove:
            if keyword.is_built(con):
                keyword.remove_documents(con, list(remove))
            con.execute("DELETE FROM chunks WHERE doc_id IN (SELECT unnest(?))", [list(remove)])
            removed = con.execute("DELETE FROM documents WHERE doc_id IN (SELECT unnest(?))", [list(remove)]).fetchone()[0]
        if lines:
            con.execute(
                "UPDATE documents SET line = moved.line FROM (SELECT unnest(?) AS doc_id, unnest(?) AS line) AS moved"
                " WHERE documents.doc_id = moved.doc_id",
                [[doc_id for doc_id, _ in lines], [line for _, line in lines]],
            )
    return int(removed)


def _arrow(kind: str, per_chunk: bool = False):
    """A DocumentRow field whose Arrow type is pyarrow's `kind` (named, so that pyarrow is only
    imported by writers), one value per chunk when `per_chunk`."""
    return field(metadata={"arrow": kind, "per_chunk": per_chunk})


@dataclass
class DocumentRow:
    """One article ready to store: its fields, and its chunks' text, spans and vectors.

    The one list of a document's fields: the documents table's columns in write_documents and a
    Dask shard's columns (flows/distributed.py) are made from it (`arrow_columns`). A field without
    a type is a string; a per-chunk field is a list with one value per chunk."""

    doc_id: str
    source_path: str
    format: str
    line: int | None = _arrow("int32")
    title: str
    lead: str
    published: dt.date | None = _arrow("date32")
    url: str | None
    text: str
    content_hash: str
    chunk_key: str
    chunk_texts: list[str] = _arrow("string", per_chunk=True)
    # A shard holds the spans as two columns, chunk_starts and chunk_ends.
    chunk_spans: list[tuple[int, int]] = _arrow("int32", per_chunk=True)
    chunk_tokens: list[int] = _arrow("int32", per_chunk=True)


def arrow_columns(docs: Sequence[DocumentRow], *, chunks: bool = True) -> dict:
    """Every field of `docs` as an Arrow column named after it (with `chunks`, the per-chunk lists
    too), in DocumentRow's order."""
    import pyarrow as pa

    columns = {}
    for f in fields(DocumentRow):
        kind = getattr(pa, f.metadata.get("arrow", "string"))()
        values = [getattr(d, f.name) for d in docs]
        if not f.metadata.get("per_chunk"):
            columns[f.name] = pa.array(values, kind)
        elif not chunks:
            continue
        elif f.name == "chunk_spans":
            columns["chunk_starts"] = pa.array([[s for s, _ in spans] for spans in values], pa.list_(kind))
            columns["chunk_ends"] = pa.array([[e for _, e in spans] for spans in values], pa.list_(kind))
        else:
            columns[f.name] = pa.array(values, pa.list_(kind))
    return columns


def rows_from_columns(data: dict[str, list]) -> list[DocumentRow]:
    """DocumentRows back from `arrow_columns` read as Python lists (`Table.to_pydict()`)."""
    names = [f.name for f in fields(DocumentRow) if f.name != "chunk_spans"]
    return [
        DocumentRow(**{name: data[name][i] for name in names}, chunk_spans=list(zip(data["chunk_starts"][i], data["chunk_ends"][i])))
        for i in range(len(data["doc_id"]))
    ]


@dataclass
class WriteResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0


def write_documents(con: duckdb.DuckDBPyConnection, docs: Sequence[DocumentRow], vectors, model: str) -> WriteResult:
    """Replace these documents and their chunks in one transaction.

    `vectors` holds one row per chunk, documents in order. A document that another writer stored
    identically in the meantime is left alone, so overlapping runs never duplicate anything.
    """
    import numpy as np
    import pyarrow as pa

    result = WriteResult()
    if not docs:
        return result
    # The tables have no primary key (migration 005): ids are unique because each write deletes an
    # article's rows before inserting them, which needs each id once per write.
    twice = [doc_id for doc_id, n in Counter(d.doc_id for d in docs).items() if n > 1]
    if twice:
        raise ConstraintViolated(f"document id {twice[0]!r} appears twice in one write; nothing was written")
    now = dt.datetime.now()
    with transaction(con):
        current = {
            row[0]: (row[1], row[2], row[3])
            for row in con.execute(
                "SELECT doc_id, content_hash, chunk_key, ingested_at FROM documents WHERE doc_id IN (SELECT unnest(?))",
                [[d.doc_id for d in docs]],
            ).fetchall()
        }
        keep_docs: list[DocumentRow] = []
        keep_rows: list[np.ndarray] = []
        offset = 0
        for doc in docs:
            count = len(doc.chunk_texts)
            old = current.get(doc.doc_id)
            if old and old[0] == doc.content_hash and old[1] == doc.chunk_key:
                result.unchanged += 1
            else:
                keep_docs.append(doc)
                keep_rows.append(np.arange(offset, offset + count))
                if old:
                    result.updated += 1
                else:
                    result.added += 1
            offset += count
        if not keep_docs:
            return result
        ids = [d.doc_id for d in keep_docs]
        indexed = keyword.is_built(con)
        if indexed:
            keyword.remove_documents(con, ids)
        con.execute("DELETE FROM chunks WHERE doc_id IN (SELECT unnest(?))", [ids])
        con.execute("DELETE FROM documents WHERE doc_id IN (SELECT unnest(?))", [ids])
        matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[np.concatenate(keep_rows)])
        doc_vectors = np.zeros((len(keep_docs), matrix.shape[1]), dtype=np.float32)
        start = 0
        for i, doc in enumerate(keep_docs):
            mean = matrix[start : start + len(doc.chunk_texts)].sum(axis=0)
            doc_vectors[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            start += len(doc.chunk_texts)
        documents = pa.table(
            {
                **arrow_columns(keep_docs, chunks=False),
                "ingested_at": pa.array([current[d.doc_id][2] if d.doc_id in current else now for d in keep_docs], pa.timestamp("us")),
                "updated_at": pa.array([now] * len(keep_docs), pa.timestamp("us")),
                "doc_embedding": _vector_column(doc_vectors),
            }
        )
        con.register("documents_arrow", documents)
        con.execute("INSERT INTO documents BY NAME SELECT * FROM documents_arrow")
        con.unregister("documents_arrow")

        chunks = pa.table(
            {
                "chunk_id": [f"{d.doc_id}#{i}" for d in keep_docs for i in range(len(d.chunk_texts))],
                "doc_id": [d.doc_id for d in keep_docs for _ in d.chunk_texts],
                "ordinal": pa.array([i for d in keep_docs for i in range(len(d.chunk_texts))], pa.int32()),
                "text": [t for d in keep_docs for t in d.chunk_texts],
                "char_start": pa.array([s for d in keep_docs for s, _ in d.chunk_spans], pa.int32()),
                "char_end": pa.array([e for d in keep_docs for _, e in d.chunk_spans], pa.int32()),
                "token_count": pa.array([n for d in keep_docs for n in d.chunk_tokens], pa.int32()),
                "embedding": _vector_column(matrix),
                "model": [model] * len(matrix),
            }
        )
        con.register("chunks_arrow", chunks)
        con.execute("INSERT INTO chunks BY NAME SELECT * FROM chunks_arrow")
        con.unregister("chunks_arrow")
        if indexed:  # in this transaction: the keyword index commits with the chunks or not at all
            keyword.add_documents(con, ids)
        result.chunks = len(matrix)
        faults.point("write")
    faults.point("commit")
    return result


def _vector_column(matrix):
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float32()), matrix.shape[1])


@dataclass
class PruneResult:
    removed: list[tuple[str, str, int | None]]  # (doc id, source path, line) of each document removed
    refused: list[tuple[str, str]]  # (root, why its documents were all kept)


# Removing more than this share of a root's stored documents in one run needs the override: a
# folder that lost most of its files at once is more often a dropped mount or a mistake than news.
MASS_PRUNE_SHARE = 0.5
MASS_PRUNE_FLAG = "--allow-mass-prune"


def prune(
    con: duckdb.DuckDBPyConnection,
    roots: Iterable[str],
    keep: dict[str, set[str]],
    found: dict[str, int] | None = None,
    allow_mass: bool = False,
) -> PruneResult:
    """Remove documents whose source file under one of `roots` no longer exists, and documents of
    files read in this run (`keep`: source path -> doc ids seen there) that the file no longer has.

    A root where this run found no files (`found`: root -> files found; an empty folder or a mount
    that dropped) or that would lose more than half of its stored documents is left as it is, with
    one line saying so, unless `allow_mass`. A document is only removed when its file is known to be
    gone: under a folder that cannot be listed, or where stat fails otherwise, it stays."""
    rows = con.execute("SELECT doc_id, source_path, line FROM documents").fetchall()
    result = PruneResult([], [])
    listable: dict[str, bool] = {}
    doomed: list[str] = []
    for given in roots:
        root = str(Path(given).resolve())
        prefix = root.rstrip("/") + "/"
        mine = [row for row in rows if row[1] == root or row[1].startswith(prefix)]
        going = [row for row in mine if _is_gone(row[0], row[1], keep, root, listable)]
        if not going:
            continue
        files = (found or {}).get(given, 1)
        why = None
        if files == 0:
            why = f"no article files found under it (empty, or not mounted?); its {len(mine)} stored documents were kept"
        elif len(going) > MASS_PRUNE_SHARE * len(mine):
            why = f"{len(going)} of its {len(mine)} stored documents would go (more than half); all were kept"
        if why and not allow_mass:
            result.refused.append((given, f"not pruned: {why}; pass {MASS_PRUNE_FLAG} to remove them"))
            continue
        result.removed.extend(going)
        doomed.extend(row[0] for row in going)
    if doomed:
        with transaction(con):
            if keyword.is_built(con):
                keyword.remove_documents(con, doomed)
            con.execute("DELETE FROM chunks WHERE doc_id IN (SELECT unnest(?))", [doomed])
            con.execute("DELETE FROM documents WHERE doc_id IN (SELECT unnest(?))", [doomed])
    return result


def _is_gone(doc_id: str, source: str, keep: dict[str, set[str]], root: str, listable: dict[str, bool]) -> bool:
    if source in keep:
        return doc_id not in keep[source]
    try:
        os.stat(source)
        return False
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError:
        return False  # permission denied, I/O error: not known to be gone
    # Gone, as far as stat can tell; but a folder on the way that cannot be listed (the run could not
    # see its files either) says nothing about them.
    folder = os.path.dirname(source)
    while len(folder) >= len(root):
        if folder not in listable:
            try:
                os.listdir(folder)
                listable[folder] = True
            except FileNotFoundError:
                listable[folder] = True  # gone with its files: that is what pruning is for
            except OSError:
                listable[folder] = False
        if not listable[folder]:
            return False
        if folder == root:
            break
        folder = os.path.dirname(folder)
    return True
