"""Opening the DuckDB warehouse: connections, transactions, waits for the file lock, the ingest
run's own lock, and the one place where DuckDB's exceptions become newsindex's errors.

Connections are opened for one piece of work and closed again: a DuckDB file admits one process at
a time, and holding it would block readers. Every write is one transaction (`transaction`), so a
crash leaves the warehouse as it was before or after a write, never between.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from newsindex.errors import NewsindexError

_LOCK_MESSAGE = "Could not set lock on file"
# How long a writer waits for readers to let go of the file; $NEWSINDEX_LOCK_WAIT overrides it.
DEFAULT_LOCK_WAIT = 60.0
# A reader only waits out an ingest's commit, which is brief.
READ_WAIT = 10.0

log = logging.getLogger("newsindex.warehouse")


class WarehouseError(NewsindexError):
    """A problem with the warehouse file that the user has to act on."""


class WarehouseLocked(WarehouseError):
    """Another process holds the DuckDB file."""


class QueryInterrupted(WarehouseError):
    """A statement was interrupted (Ctrl-C, or a time limit's timer) before it finished."""

    exit_code = 130  # 128 + SIGINT, as shells report a Ctrl-C


class QueryError(WarehouseError):
    """A query that cannot run as written: bad SQL, an unknown table or column, a value that does
    not fit, a named query that does not exist or parameters that do not fit it."""


class QuerySyntaxError(QueryError):
    """SQL that DuckDB's parser rejects."""


class QueryRefused(QueryError):
    """A statement the session's sandbox does not allow (another file, the network)."""


class ConstraintViolated(WarehouseError):
    """A write that breaks a key or NOT NULL constraint of the schema."""


class OutOfMemory(WarehouseError):
    """A statement that needs more memory than DuckDB may use."""


# DuckDB's classes, most specific first; the first that matches decides. DataError and
# ProgrammingError cover what else a query can get wrong (conversions, bad input, binding).
_DRIVER_ERRORS: tuple[tuple[type[BaseException], type[WarehouseError]], ...] = (
    (duckdb.InterruptException, QueryInterrupted),
    (duckdb.ParserException, QuerySyntaxError),
    (duckdb.PermissionException, QueryRefused),
    (duckdb.CatalogException, QueryError),
    (duckdb.BinderException, QueryError),
    (duckdb.ProgrammingError, QueryError),
    (duckdb.DataError, QueryError),
    (duckdb.ConstraintException, ConstraintViolated),
    (duckdb.OutOfMemoryException, OutOfMemory),
)


def database_error(err: BaseException, db: str | Path | None = None) -> BaseException:
    """The domain error for an exception DuckDB raised (the one place that reads DuckDB's classes
    and text); anything that is not DuckDB's is returned as it is. A problem with the query says
    DuckDB's first line as it is; a problem with the file is prefixed with `db` when given."""
    if isinstance(err, RuntimeError) and "interrupt" in str(err).lower():
        # DuckDB reports some interrupted queries as a plain RuntimeError.
        return QueryInterrupted("interrupted")
    if not isinstance(err, duckdb.Error):
        return err
    # DuckDB messages can run to several lines of context; the first says what went wrong.
    first = _first_line(err)
    if isinstance(err, duckdb.IOException) and _LOCK_MESSAGE in str(err):
        return WarehouseLocked(f"{db}: held{_holder(str(err))}" if db else f"held{_holder(str(err))}")
    kind = next((domain for driver, domain in _DRIVER_ERRORS if isinstance(err, driver)), WarehouseError)
    if kind is QueryInterrupted:
        return QueryInterrupted("interrupted")
    if issubclass(kind, QueryError) or db is None:
        return kind(first)
    return kind(f"{db}: {first}")


@contextmanager
def driver_errors(db: str | Path | None = None) -> Iterator[None]:
    """DuckDB's exceptions raised inside become domain errors (see database_error)."""
    try:
        yield
    except (duckdb.Error, RuntimeError) as err:
        mapped = database_error(err, db)
        if mapped is err:
            raise
        raise mapped from None


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
        except duckdb.Error as err:
            if not isinstance(database_error(err), WarehouseLocked):
                raise database_error(err, db) from None
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
    the vector width a new warehouse is made with (see schema.migrate)."""
    # Here, not at the top: the migration runner opens its transactions with this module's.
    from newsindex.warehouse import schema

    con = connect(db, read_only=read_only, wait=wait)
    try:
        with driver_errors(db):
            schema.refuse_newer_schema(con, db)
            if read_only:
                pending = schema.pending_migrations(con)
                if pending:
                    raise WarehouseError(f"{db}: schema is out of date; run `newsindex ingest` to migrate it")
            else:
                schema.migrate(con, dim)
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
