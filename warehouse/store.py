"""The DuckDB warehouse: opening it, migrating it, and every write ingestion makes.

All writes go through this module and each is one transaction, so a crash leaves the warehouse as
it was before or after a write, never between. Connections are opened for one piece of work and
closed again: a DuckDB file admits one process at a time, and holding it would block readers.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

from newsindex.errors import NewsindexError
from newsindex import faults
from newsindex.warehouse import keyword, width

_LOCK_MESSAGE = "Could not set lock on file"
# How long a writer waits for readers to let go of the file; $NEWSINDEX_LOCK_WAIT overrides it.
DEFAULT_LOCK_WAIT = 60.0
# A reader only waits out an ingest's commit, which is brief.
READ_WAIT = 10.0

log = logging.getLogger("newsindex.warehouse")
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class WarehouseError(NewsindexError):
    """A problem with the warehouse file that the user has to act on."""


class WarehouseLocked(WarehouseError):
    """Another process holds the DuckDB file."""


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


def lock_wait() -> float:
    """Seconds a writer waits for another process to let go of the file ($NEWSINDEX_LOCK_WAIT)."""
    raw = os.environ.get("NEWSINDEX_LOCK_WAIT", "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_LOCK_WAIT
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise WarehouseError(f"NEWSINDEX_LOCK_WAIT must be a number of seconds, got {raw!r}")
    return seconds


def connect(db: str | Path, *, read_only: bool = False, wait: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, retrying with backoff while another process holds the file, for `wait`
    seconds (default: READ_WAIT to read, lock_wait() to write); then WarehouseLocked naming the
    holder's pid."""
    db = Path(db)
    if wait is None:
        wait = READ_WAIT if read_only else lock_wait()
    if read_only and not db.exists():
        raise WarehouseError(f"{db}: no warehouse here yet; run `newsindex ingest` first")
    if not read_only:
        db.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    delay = 0.05
    waiting = False
    while True:
        try:
            con = duckdb.connect(str(db), read_only=read_only)
            if not read_only:
                # ALP-compressed floats scan ~3x slower; vectors are written once and scanned by every query.
                con.execute("SET disabled_compression_methods = 'alp,alprd'")
            return con
        except duckdb.IOException as err:
            if _LOCK_MESSAGE not in str(err):
                raise WarehouseError(f"{db}: {err}") from None
            who = _holder(str(err))
            if time.monotonic() >= deadline:
                raise WarehouseLocked(f"{db}: held{who} for more than {wait:g}s; close that session and retry") from None
            if not waiting and wait >= 1:
                # A writer waiting is news to whoever runs it; a reader waits out a commit quietly.
                log.log(logging.INFO if read_only else logging.WARNING, "%s is held%s; waiting up to %gs for it to let go", db, who, wait)
                waiting = True
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            # Capped low: a reader holds the file for one query, and a writer that sleeps through
            # the gaps between queries would starve behind a busy reader.
            delay = min(delay * 2, 0.25)


def _holder(message: str) -> str:
    """' by process 123 (python3.11)' from DuckDB's lock error, as far as it tells."""
    found = re.search(r"held in (.*?) \(PID (\d+)\)", message) or re.search(r"()PID (\d+)", message)
    if not found:
        return ""
    program = f" ({Path(found[1]).name})" if found[1] else ""
    return f" by process {found[2]}{program}"


@contextmanager
def opened(
    db: str | Path, *, read_only: bool = False, wait: float | None = None, dim: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A migrated connection (read-write) or a checked one (read-only), closed afterwards. `dim`:
    the vector width a new warehouse is made with (see migrate)."""
    con = connect(db, read_only=read_only, wait=wait)
    try:
        refuse_newer_schema(con, db)
        if read_only:
            pending = pending_migrations(con)
            if pending:
                raise WarehouseError(f"{db}: schema is out of date; run `newsindex ingest` to migrate it")
        else:
            migrate(con, dim)
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


class IngestBusy(WarehouseLocked):
    """Another ingestion is writing this warehouse and did not finish in time."""


@contextmanager
def ingest_lock(
    db: str | Path, wait: float = 600.0
) -> Iterator[None]:
    """Hold the warehouse's writer lock for a whole ingest run: one ingestion at a time.

    DuckDB's own file lock only covers an open connection, and ingestion opens and closes the file
    between batches so that readers get in. Two overlapping runs (a slow scheduled one and a manual
    one) would then interleave their plans and writes. An flock on a sidecar file spans the run; the
    kernel drops it when the holder dies, so a killed run never leaves it stuck.

    The sidecar can be deleted or replaced while a run holds it, and a second run would then lock a
    fresh file. So the run also holds an flock on the warehouse file itself, which ingestion never
    replaces: flock and DuckDB's own fcntl locks do not interact on local file systems, so readers
    are not affected.
    """
    path = Path(f"{db}.ingest.lock")
    deadline = time.monotonic() + wait
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WarehouseError(f"{path.parent}: cannot create the warehouse folder ({err.strerror or err})") from None
    while True:
        fd = open_lock_file(path)
        try:
            _flock_waiting(fd, deadline, wait, str(db), lambda: _lock_holder(fd))
            # The standard check: the file locked must still be the one at the path. A run that
            # waited on a file someone then removed would otherwise run beside whoever locks the
            # new one.
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        guard = _warehouse_guard(Path(db))
        try:
            _flock_waiting(guard, deadline, wait, str(db), lambda: f"another ingest run (its lock file {path.name} was removed)")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": dt.datetime.now().isoformat(timespec="seconds")}).encode(), 0)
            except OSError:
                pass  # who holds the lock is only for messages; a full disk must not stop the run here
            try:
                yield
            finally:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
        finally:
            # Closed only once the run closed its connections: closing any descriptor of a file
            # drops the process's fcntl locks on it, DuckDB's included (POSIX).
            os.close(guard)
    finally:
        os.close(fd)


def open_lock_file(path: Path) -> int:
    """A descriptor for the lock file at `path`, created if missing. Never through a symlink (that
    could point anywhere the user can write), never truncated on open, and only a regular file with
    one link: anything else there is refused, with one line, rather than written to."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP or path.is_symlink():
            raise WarehouseError(f"{path}: is a symlink; refusing to use it as a lock file (remove it)") from None
        raise WarehouseError(f"{path}: cannot open the lock file ({err.strerror or err}); the warehouse folder must be writable") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"is {_file_kind(info.st_mode)}, not a regular file"
    elif info.st_nlink != 1:
        problem = f"has {info.st_nlink} hard links"
    if problem:
        os.close(fd)
        raise WarehouseError(f"{path}: {problem}; refusing to use it as a lock file (remove it)")
    return fd


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _warehouse_guard(db: Path) -> int:
    """A read-only descriptor of the warehouse file for the run's second flock, creating an empty
    DuckDB file first if there is none yet (read-only: it can never write the file)."""
    if not db.exists():
        try:
            duckdb.connect(str(db)).close()
        except duckdb.Error as err:
            raise WarehouseError(f"{db}: cannot create the warehouse ({_first_line(err)})") from None
    try:
        return os.open(db, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        raise WarehouseError(f"{db}: cannot open the warehouse ({err.strerror or err})") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _flock_waiting(fd: int, deadline: float, wait: float, db: str, holder: Callable[[], str]) -> None:
    """Take an exclusive flock on `fd`, saying once that it waits, until `deadline`; then IngestBusy."""
    delay, told = 0.1, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            who = holder()
            if time.monotonic() >= deadline:
                raise IngestBusy(f"{db}: {who} is still writing after {wait:.0f}s; try again later") from None
            if not told:
                # Through the same logger as waits for the file lock: the CLI prints it, and a
                # flow run sends it to Prefect (PREFECT_LOGGING_EXTRA_LOGGERS).
                log.warning("%s: waiting for %s to finish", db, who)
                told = True
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)


def _lock_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 256, 0) or b"{}")
        return f"ingest run (pid {info['pid']}, since {info['since']})"
    except (ValueError, KeyError, OSError):
        return "another ingest run"


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
    a new file, tests) gets the configured model's width, the one the next ingest writes with."""
    refuse_newer_schema(con, _path_of(con))
    pending = pending_migrations(con)
    if not pending:
        return []
    if dim is None and any(width.needs_width(m.sql) for m in pending):
        from newsindex.embedding import model_info  # reads the model's files only: no torch

        dim = model_info().dim
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
        path = _path_of(con)
        step = f"migration {current.version:03d}_{current.name}" if current else "migrating"
        first_line = str(err).strip().splitlines()[0]
        raise WarehouseError(f"{path}: {step} failed ({first_line}); the warehouse was left unchanged") from None
    return [f"{m.version:03d}_{m.name}" for m in pending]


def _path_of(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]


# --- extensions and the full-text index ---------------------------------------------------------


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD a DuckDB extension from its PyPI package (duckdb-extension-NAME): no network needed."""
    import importlib

    package = importlib.import_module(f"duckdb_extension_{name}")
    folder = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    files = sorted(folder.glob(f"{name}.duckdb_extension"))
    if not files:
        raise WarehouseError(f"duckdb-extension-{name} has no build for DuckDB {duckdb.__version__} in {folder}")
    # LOAD takes no bound parameters; the path is our own package's, quoted for SQL.
    con.execute("LOAD '" + str(files[0]).replace("'", "''") + "'")


def search_index_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the keyword index covers the stored chunks (see warehouse/keyword.py)."""
    return keyword.is_current(con)


def refresh_search_index(con: duckdb.DuckDBPyConnection, force: bool = False) -> bool:
    """Build the keyword index where it is missing or does not match the chunks; returns whether it
    did. Writes keep it current, so this builds only once, after the migration from the fts index."""
    return keyword.refresh(con, force)


# --- models -------------------------------------------------------------------------------------


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
            f"{_path_of(con)}: stores {stored}-dim vectors, but model {name} makes {dim}-dim ones; "
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


@dataclass
class DocumentRow:
    """One article ready to store: its fields, and its chunks' text, spans and vectors."""

    doc_id: str
    source_path: str
    format: str
    line: int | None
    title: str
    lead: str
    published: dt.date | None
    url: str | None
    text: str
    content_hash: str
    chunk_key: str
    chunk_texts: list[str]
    chunk_spans: list[tuple[int, int]]
    chunk_tokens: list[int]


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
                "doc_id": ids,
                "source_path": [d.source_path for d in keep_docs],
                "format": [d.format for d in keep_docs],
                "line": pa.array([d.line for d in keep_docs], pa.int32()),
                "title": [d.title for d in keep_docs],
                "lead": [d.lead for d in keep_docs],
                "published": pa.array([d.published for d in keep_docs], pa.date32()),
                "url": pa.array([d.url for d in keep_docs], pa.string()),
                "text": [d.text for d in keep_docs],
                "content_hash": [d.content_hash for d in keep_docs],
                "chunk_key": [d.chunk_key for d in keep_docs],
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


# --- runs ---------------------------------------------------------------------------------------


def start_run(con: duckdb.DuckDBPyConnection, paths: Sequence[str], flow_run_id: str | None, model: str) -> str:
    mark_crashed_runs(con)
    run_id = uuid.uuid4().hex[:12]
    con.execute(
        "INSERT INTO ingest_runs (run_id, flow_run_id, status, paths, started_at, model, pid, host)"
        " VALUES (?, ?, 'running', ?, current_timestamp, ?, ?, ?)",
        [run_id, flow_run_id, list(paths), model, os.getpid(), socket.gethostname()],
    )
    return run_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_crashed_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Runs still 'running' whose process on this host is gone (killed, power cut) become 'crashed':
    a run that never finished must not look as if it were still going. Runs of other hosts, and of
    live processes (an overlapping ingest), are left alone."""
    here = socket.gethostname()
    dead = [
        run_id
        for run_id, pid, host in con.execute("SELECT run_id, pid, host FROM ingest_runs WHERE status = 'running'").fetchall()
        if pid is None or (host == here and not _alive(pid))
    ]
    if dead:
        con.execute("UPDATE ingest_runs SET status = 'crashed' WHERE run_id IN (SELECT unnest(?))", [dead])
        log.warning("marked %d unfinished ingest run(s) as crashed: %s", len(dead), ", ".join(dead))
    return dead


RUN_COUNTERS = (
    "seen", "added", "updated", "unchanged", "failed", "removed", "chunks_embedded", "tokens_embedded",
    "parse_seconds", "embed_seconds", "write_seconds",
)  # fmt: skip


def previous_failures(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[dt.datetime | None, set[tuple[str, int | None, str]]]:
    """When the last finished run before `run_id` started, and the inputs it rejected."""
    row = con.execute(
        "SELECT run_id, started_at FROM ingest_runs WHERE run_id <> ? AND finished_at IS NOT NULL"
        " ORDER BY started_at DESC LIMIT 1",
        [run_id],
    ).fetchone()
    if row is None:
        return None, set()
    errors = con.execute("SELECT source_path, line, message FROM ingest_errors WHERE run_id = ?", [row[0]]).fetchall()
    return row[1], {(path, line, message) for path, line, message in errors}


def finish_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    counts: dict[str, float],
    errors: Sequence[tuple[str, int | None, str]],
    status: str,
) -> None:
    assignments = ", ".join(f"{name} = ?" for name in RUN_COUNTERS)
    with transaction(con):
        con.execute(
            f"UPDATE ingest_runs SET {assignments}, status = ?, finished_at = current_timestamp,"
            " total_seconds = epoch(current_timestamp - started_at) WHERE run_id = ?",
            [counts.get(name, 0) for name in RUN_COUNTERS] + [status, run_id],
        )
        if errors:
            con.executemany(
                "INSERT INTO ingest_errors VALUES (?, ?, ?, ?)", [[run_id, path, line, msg] for path, line, msg in errors]
            )


def stats(con: duckdb.DuckDBPyConnection, last_runs: int = 5) -> dict:
    documents, dated, first, last = con.execute(
        "SELECT count(*), count(published), min(published), max(published) FROM documents"
    ).fetchone()
    chunks, tokens = con.execute("SELECT count(*), coalesce(sum(token_count), 0) FROM chunks").fetchone()
    models = [
        {"name": name, "fingerprint": fp, "dim": dim, "chunks": n}
        for fp, name, dim, n in con.execute(
            "SELECT m.fingerprint, m.name, m.dim, count(*) FROM chunks c JOIN models m ON c.model = m.fingerprint"
            " GROUP BY ALL ORDER BY 4 DESC"
        ).fetchall()
    ]
    runs = con.execute(
        "SELECT run_id, status, started_at, seen, added, updated, unchanged, failed, removed, chunks_embedded,"
        " round(total_seconds, 2) FROM ingest_runs ORDER BY started_at DESC LIMIT ?",
        [last_runs],
    ).fetchall()
    run_columns = ["run_id", "status", "started_at", "seen", "added", "updated", "unchanged", "failed", "removed", "chunks_embedded", "seconds"]
    return {
        "documents": documents,
        "dated_documents": dated,
        "first_published": first.isoformat() if first else None,
        "last_published": last.isoformat() if last else None,
        "chunks": chunks,
        "tokens": int(tokens),
        "models": models,
        "runs": [
            {k: (v.isoformat(sep=" ", timespec="seconds") if isinstance(v, dt.datetime) else v) for k, v in zip(run_columns, row)}
            for row in runs
        ],
    }
