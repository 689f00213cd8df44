"""The Python API: `from newsindex import Index`. The CLI's `serve` and the web app are thin layers
over it.

An Index answers every question from a snapshot of the warehouse: a private byte copy of the file,
opened read-only by this process alone (and unlinked at once, so nothing is left behind), plus the
chunk vectors as one float32 matrix in memory (queries/warm.py) for exact semantic search and the
keyword index's postings as arrays (queries/warm_keyword.py) for BM25; hybrid fuses both sides'
candidates from memory in hybrid_search.sql (queries/warm_hybrid.py). The
warehouse itself is held (DuckDB's read lock) only while its bytes are copied, then let go.

Why a copy and not the file: DuckDB admits one read-write process or many read-only ones. A
long-lived reader that kept the file open would lock every ingest out; one that opened it per
request would make each request wait while an ingest writes (and fail if the ingest holds it long).
With a copy, an ingest is delayed at most by the copy itself (a file copy: well under a second at
100k chunks), and
requests never wait for it: while a writer holds the file they are answered from the snapshot, and
`freshness()` says how old it is and which ingest run is writing. When the file changes (its and
its WAL's size and modification time), the next `refresh()` takes a new copy and swaps it in; the
server calls it once a second from a background thread, a notebook's Index on each call at most
once a second.

Cost: disk for one copy of the warehouse per live snapshot (two for a moment while one replaces
the other), and memory for the matrix (1.5 KB per chunk) and the postings (6-8 bytes a posting,
bench/RESULTS.md) plus what DuckDB caches of the copy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from newsindex.errors import NewsindexError
from newsindex import config

MAX_QUERY_CHARS = 1000
MAX_K = 1000
MAX_SQL_CHARS = 20_000
SQL_SECONDS = 5.0
SQL_MAX_ROWS = 1000
# How often a notebook's Index compares the file with its snapshot (a stat call or two).
CHECK_EVERY = 1.0


class ApiError(NewsindexError):
    """Base for the API's own refusals; the server maps each subclass to an HTTP status."""


class BadRequest(ApiError):
    """Arguments out of bounds or malformed (HTTP 400)."""


class NotFound(ApiError):
    """No such document (HTTP 404)."""


class NotReady(ApiError):
    """No snapshot yet: no warehouse file, or it was held since the start (HTTP 503)."""


class SqlRefused(ApiError):
    """SQL that the read-only sandbox does not run (HTTP 403)."""


class SqlTimeout(ApiError):
    """SQL that ran past its time limit (HTTP 408)."""


@dataclass(frozen=True)
class Freshness:
    """How current the snapshot is. `current` is False when the file changed since the copy and no
    new copy could be taken yet (an ingest holds it); `writer` names the ingest run writing now."""

    loaded_at: dt.datetime
    checked_at: dt.datetime
    current: bool
    writer: str | None
    documents: int
    chunks: int
    held_seconds: float = 0.0  # how long the last copy held the file (an ingest waits at most this)
    load_seconds: float = 0.0  # how long the last copy took in all (copy, index, vectors)

    def as_json(self) -> dict:
        return {
            "loaded_at": self.loaded_at.isoformat(timespec="seconds"),
            "age_seconds": round((dt.datetime.now() - self.loaded_at).total_seconds(), 1),
            "checked_at": self.checked_at.isoformat(timespec="seconds"),
            "current": self.current,
            "writer": self.writer,
            "documents": self.documents,
            "chunks": self.chunks,
            "held_seconds": round(self.held_seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
        }


class Hits(list):
    """The search hits (newsindex.queries.search.Hit, best first), with what the search said."""

    def __init__(self, hits=(), *, query: str = "", mode: str = "", seconds: float = 0.0,
                 warnings: list[str] | None = None, freshness: Freshness | None = None):  # fmt: skip
        super().__init__(hits)
        self.query, self.mode, self.seconds = query, mode, seconds
        self.warnings = warnings or []
        self.freshness = freshness


@dataclass
class Passage:
    chunk_id: str
    ordinal: int
    char_start: int
    char_end: int
    token_count: int
    text: str


@dataclass
class Document:
    doc_id: str
    title: str
    published: dt.date | None
    source_path: str
    url: str | None
    format: str
    lead: str
    text: str
    ingested_at: dt.datetime
    updated_at: dt.datetime
    passages: list[Passage] = field(default_factory=list)


@dataclass
class SqlResult:
    columns: list[str]
    rows: list[tuple]
    truncated: bool
    seconds: float


@dataclass
class _Snapshot:
    con: duckdb.DuckDBPyConnection
    vectors: object  # queries.warm.WarmVectors
    postings: object  # queries.warm_keyword.WarmPostings, None without a current keyword index
    passages: object  # queries.warm.WarmPassages
    signature: tuple
    loaded_at: dt.datetime
    documents: int
    chunks: int
    model_problem: str | None
    generation: int
    held_seconds: float
    load_seconds: float
    closer: contextlib.ExitStack
    cursors: dict = field(default_factory=dict)  # thread id -> that thread's connection


def file_signature(path: Path) -> tuple:
    """Size and modification time of the file and its WAL: every commit changes one of them."""
    parts = []
    for candidate in (path, Path(f"{path}.wal")):
        try:
            info = candidate.stat()
            parts.append((info.st_size, info.st_mtime_ns))
        except FileNotFoundError:
            parts.append(None)
    return tuple(parts)


def ingest_writer(path: Path) -> str | None:
    """The ingest run holding `<warehouse>.ingest.lock`, as it recorded itself; None when none is.
    Read without locking: taking the lock, even briefly, could make a starting ingest wait."""
    try:
        raw = Path(f"{path}.ingest.lock").read_bytes()[:256]
        info = json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or "pid" not in info:
        return None
    return f"ingest run (pid {info['pid']}, since {info.get('since', '?')})"


class Index:
    """A warehouse to search, read and ingest into, from Python:

        from newsindex import Index
        index = Index("warehouse/newsindex.duckdb")
        for hit in index.search("who warned Russia", k=5):
            print(hit.score, hit.title, hit.highlights)
    """

    def __init__(self, path: str | os.PathLike | None = None, *, wait: float = 10.0):
        """Opens nothing yet: the first question copies the warehouse into memory, waiting up to
        `wait` seconds if an ingest holds the file."""
        self.path = config.db_path(path).resolve()
        self._wait = wait
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()
        self._checked_at = dt.datetime.now()
        self._last_check = 0.0
        self._stale = False
        self._background: threading.Thread | None = None
        self._stop = threading.Event()
        self._paused = 0

    # --- snapshot ----------------------------------------------------------------------------

    def refresh(self, wait: float = 0.0) -> bool:
        """Take a new snapshot if the file changed since the last one; returns whether it did. If
        the file is held (an ingest writing), waits up to `wait` seconds, then keeps the old one."""
        if not self._lock.acquire(blocking=self._snapshot is None):
            return False  # another thread is refreshing right now
        try:
            self._last_check = time.monotonic()
            self._checked_at = dt.datetime.now()
            if self._paused:
                return False
            signature = file_signature(self.path)
            old = self._snapshot
            if old is not None and signature == old.signature:
                self._stale = False
                return False
            if signature[0] is None:
                if old is None:
                    raise NotReady(f"{self.path}: no warehouse here yet; run `newsindex ingest` first")
                self._stale = True
                return False
            if old is not None and ingest_writer(self.path) and not self._due_during_ingest(old):
                self._stale = True
                return False
            snapshot = self._load(wait, 0 if old is None else old.generation + 1)
            if snapshot is None:
                self._stale = True
                return False
            self._snapshot, self._stale = snapshot, False
            self._checked_at = snapshot.loaded_at
            return True
        finally:
            self._lock.release()

    @staticmethod
    def _due_during_ingest(old: _Snapshot) -> bool:
        """While an ingest run goes on, its batches commit every second or two: copying after each
        would keep the machine busy with copies and hold up the run. Take one at most every 5 s
        (or twice the last copy's time); the run's end is picked up as soon as its lock is free."""
        return (dt.datetime.now() - old.loaded_at).total_seconds() >= max(5.0, 2 * old.load_seconds)

    def _load(self, wait: float, generation: int) -> _Snapshot | None:
        from newsindex.queries import readonly, session as sessions, warm, warm_keyword
        from newsindex.warehouse import connection

        started = time.perf_counter()
        copied = self._copy_file(wait)
        if copied is None:
            return None
        copy, signature, held = copied
        # The copy is opened as `newsindex sql` opens the warehouse (session(): read-only, fts,
        # embed(), external access off, configuration locked), so the sandbox is the CLI's own.
        options = {}
        if "memory_limit" in inspect.signature(sessions.session).parameters and hasattr(readonly, "limits"):
            options["memory_limit"] = f"{readonly.limits().memory_bytes}B"
        stack = contextlib.ExitStack()
        try:
            con = stack.enter_context(sessions.session(copy, **options))
        except connection.WarehouseError as err:
            raise connection.WarehouseError(str(err).replace(str(copy), str(self.path))) from None
        finally:
            # Unlinked at once: the open connection keeps the data, and the space is freed when the
            # snapshot is dropped, even if this process is killed.
            for leftover in (copy, Path(f"{copy}.wal")):
                leftover.unlink(missing_ok=True)
        try:
            problem = sessions.current_model_check(con, self.path)
            state = warm.warehouse_state(con)
            vectors = warm.load(con, state)
            postings = warm_keyword.load(con, state) if warm_keyword.is_available(con) else None
            passages = warm.load_passages(con, state)
        except BaseException:
            stack.close()
            raise
        return _Snapshot(con, vectors, postings, passages, signature, dt.datetime.now(), int(state[1]), int(state[0]), problem, generation,
                         held, time.perf_counter() - started, stack)  # fmt: skip

    def _copy_file(self, wait: float) -> tuple[Path, tuple, float] | None:
        """A private copy of the warehouse file (and its WAL), taken while holding DuckDB's read
        lock so that no writer changes it meanwhile; None if a writer held it for `wait` seconds.
        A byte copy holds the file ~20x shorter than copying the tables through DuckDB (the BM25
        index alone is one row per word)."""
        import shutil
        import tempfile

        from newsindex.warehouse import connection

        holder = duckdb.connect(":memory:")
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    # ATTACH takes no bound parameters; the path is the configured warehouse's.
                    holder.execute("ATTACH '" + str(self.path).replace("'", "''") + "' AS src (READ_ONLY)")
                    break
                except duckdb.Error as err:
                    if not isinstance(connection.database_error(err), connection.WarehouseLocked):
                        raise connection.database_error(err, self.path) from None
                    if time.monotonic() >= deadline:
                        return None
                    time.sleep(0.1)
            attached = time.perf_counter()
            try:
                signature = file_signature(self.path)  # the file cannot change while attached
                folder = self.path.parent if os.access(self.path.parent, os.W_OK) else Path(tempfile.gettempdir())
                fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.snapshot-", dir=folder)
                os.close(fd)
                copy = Path(name)
                try:
                    shutil.copyfile(self.path, copy)
                    if Path(f"{self.path}.wal").exists():
                        shutil.copyfile(f"{self.path}.wal", f"{copy}.wal")
                except BaseException:
                    copy.unlink(missing_ok=True)
                    Path(f"{copy}.wal").unlink(missing_ok=True)
                    raise
            finally:
                holder.execute("DETACH src")
            return copy, signature, time.perf_counter() - attached
        finally:
            holder.close()

    def _current(self) -> _Snapshot:
        """The snapshot to answer from, refreshed first when due (unless a background thread does it)."""
        if self._snapshot is None:
            if not self.refresh(wait=self._wait) and self._snapshot is None:
                raise NotReady(f"{self.path}: held by another process since this index started; try again shortly")
        elif self._background is None and time.monotonic() - self._last_check >= CHECK_EVERY:
            self.refresh()
        return self._snapshot

    def _cursor(self) -> tuple[_Snapshot, duckdb.DuckDBPyConnection]:
        """This thread's connection to the current snapshot: a DuckDB connection serves one thread
        at a time, and one kept per thread keeps search()'s per-connection checks cached."""
        snapshot = self._current()
        # Kept on the snapshot, not in a thread-local: an idle thread must not keep a replaced
        # snapshot (its file and its matrix) alive.
        ident = threading.get_ident()
        con = snapshot.cursors.get(ident)
        if con is None:
            con = snapshot.cursors[ident] = snapshot.con.cursor()
        return snapshot, con

    def freshness(self) -> Freshness:
        snapshot = self._current()
        return Freshness(
            loaded_at=snapshot.loaded_at,
            checked_at=self._checked_at,
            current=not self._stale and file_signature(self.path) == snapshot.signature,
            writer=ingest_writer(self.path),
            documents=snapshot.documents,
            chunks=snapshot.chunks,
            held_seconds=snapshot.held_seconds,
            load_seconds=snapshot.load_seconds,
        )

    def start_refreshing(self, every: float = 1.0) -> None:
        """Refresh from a daemon thread every `every` seconds, so that no call pays for a copy."""
        if self._background is not None:
            return

        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a bad moment for the file; the next tick retries
                    self._stale = True

        self._stop.clear()
        self._background = threading.Thread(target=loop, name="newsindex-refresh", daemon=True)
        self._background.start()

    def close(self) -> None:
        self._stop.set()
        if self._background is not None:
            self._background.join(timeout=5)
            self._background = None
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            snapshot.closer.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- questions ---------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        since: dt.date | str | None = None,
        until: dt.date | str | None = None,
        source: str | None = None,
        per_doc: bool = False,
        offset: int = 0,
    ) -> Hits:
        """Hits `offset+1 .. offset+k` for `query`: semantic, keyword (BM25) or hybrid (both, fused),
        each with `highlights`, [start, end) spans of the query's words in `hit.text`."""
        from newsindex.queries import search as searching

        started = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise BadRequest("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise BadRequest(f"the query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
        if mode not in searching.MODES:
            raise BadRequest(f"unknown search mode {mode!r}; choose one of {', '.join(searching.MODES)}")
        if not 1 <= k <= MAX_K or not 0 <= offset <= MAX_K - k:
            raise BadRequest(f"k must be 1..{MAX_K} and k + offset at most {MAX_K}; got k={k}, offset={offset}")
        if source is not None and len(source) > MAX_QUERY_CHARS:
            raise BadRequest(f"the source glob is longer than {MAX_QUERY_CHARS} characters")
        filters = searching.Filters(since=_day(since, "since"), until=_day(until, "until"), source=source or None)
        snapshot, con = self._cursor()
        warnings: list[str] = []
        if searching.REGISTRY[mode].embeds and snapshot.model_problem:
            # The snapshot's check names the warehouse; search() on the copy would name the copy.
            raise searching.ModelMismatch(snapshot.model_problem)
        if mode == "semantic":
            hits = self._semantic(snapshot, con, query, k + offset, filters, per_doc)
        else:
            # From the snapshot's vectors and postings where the mode has a warm path (keyword).
            result = searching.search(con, query, k=k + offset, mode=mode, filters=filters, per_doc=per_doc, in_memory=True,
                                      preloaded=(snapshot.vectors, snapshot.postings, snapshot.passages))  # fmt: skip
            hits, warnings = result.hits, result.warnings
        hits = hits[offset:]
        # search() marks the matched words itself where its Hit has `highlights`; the semantic
        # hits built here, and hits of a search() without them, get them here.
        marks_them = "highlights" in searching.Hit.__dataclass_fields__
        if mode == "semantic" or not marks_them:
            matcher = getattr(searching, "highlights", None)
            if marks_them and callable(matcher):
                spans = matcher([hit.text for hit in hits], query, con)
            else:
                spans = [highlight_spans(hit.text, query) for hit in hits]
            for hit, found in zip(hits, spans):
                hit.highlights = found
        return Hits(hits, query=query, mode=mode, seconds=time.perf_counter() - started, warnings=warnings,
                    freshness=self.freshness())  # fmt: skip

    def _semantic(self, snapshot: _Snapshot, con, query: str, k: int, filters, per_doc: bool) -> list:
        """Exact semantic search from the snapshot's matrix (queries/warm.py): the answer
        semantic_search.sql gives, without scanning DuckDB's copy of the vectors."""
        from newsindex.queries import search as searching, warm

        vector = searching.embed_query(query)
        allowed = warm.allowed_rows(con, snapshot.vectors, filters.since, filters.until, filters.source, None)
        found = warm.top_chunks(snapshot.vectors, vector, k, allowed, per_doc)
        passages = warm.passages(con, [chunk_id for chunk_id, _ in found], snapshot.passages)
        fields = searching.Hit.__dataclass_fields__
        hits = []
        for chunk_id, score in found:
            if chunk_id not in passages:
                continue
            values = {name: value for name, value in passages[chunk_id].items() if name in fields}
            hit = searching.Hit(rank=len(hits) + 1, score=float(score), **values)
            hit.semantic_rank, hit.semantic_score = hit.rank, hit.score
            hit.snippet = searching.snippet(hit.text, query)
            hits.append(hit)
        return hits

    def related(self, doc_id: str, k: int = 10) -> list[dict]:
        """The k documents most like `doc_id` (by their mean chunk vectors): doc_id, title,
        published, source_path, score."""
        from newsindex.queries import named, search as searching

        if not 1 <= k <= MAX_K:
            raise BadRequest(f"k must be 1..{MAX_K}; got {k}")
        _, con = self._cursor()
        try:
            return searching.related(con, doc_id, k)
        except named.QueryError as err:
            if "no document" in str(err):
                raise NotFound(str(err)) from None
            raise

    def document(self, doc_id: str) -> Document:
        """One article with its full text and its passages (chunks) in order."""
        from newsindex.queries import named

        _, con = self._cursor()
        cursor = con.execute(
            "SELECT doc_id, title, published, source_path, url, format, lead, text, ingested_at, updated_at"
            " FROM documents WHERE doc_id = ?",
            [doc_id],
        )
        row = cursor.fetchone()
        if row is None:
            raise NotFound(f"no document with id {doc_id!r}")
        document = Document(*row)
        statement = named.get("document_chunks")
        for chunk in con.execute(statement.sql, statement.bind({"doc": doc_id})).fetchall():
            document.passages.append(Passage(*chunk))
        return document

    def stats(self) -> dict:
        """Documents, chunks, tokens, models and the last runs, as `newsindex stats --json`."""
        from newsindex.warehouse import runs

        _, con = self._cursor()
        return runs.stats(con)

    def runs(self, limit: int = 20) -> list[dict]:
        """The last ingest runs (the named query ingest_history)."""
        from newsindex.queries import named

        if not 1 <= limit <= MAX_K:
            raise BadRequest(f"limit must be 1..{MAX_K}; got {limit}")
        _, con = self._cursor()
        statement = named.get("ingest_history")
        cursor = con.execute(statement.sql, statement.bind({"limit": limit}))
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def sql(
        self,
        statement: str,
        params: list | dict | None = None,
        *,
        max_rows: int = SQL_MAX_ROWS,
        seconds: float = SQL_SECONDS,
    ) -> SqlResult:
        """Run one read-only SQL statement (SELECT or EXPLAIN, checked as `newsindex sql` checks it)
        with bound `params` (`?` or `$name`), on the snapshot with external access off and the
        configuration locked. Stops after `seconds`; keeps the first `max_rows` rows and says whether
        there were more."""
        from newsindex.queries import named, readonly
        from newsindex.warehouse.connection import QuerySyntaxError

        if not isinstance(statement, str) or not statement.strip():
            raise BadRequest("no SQL statement given")
        if len(statement) > MAX_SQL_CHARS:
            raise BadRequest(f"the SQL is {len(statement)} characters long; the limit is {MAX_SQL_CHARS}")
        if not 0 <= max_rows <= 100_000:
            raise BadRequest(f"max_rows must be 0..100000; got {max_rows}")
        snapshot = self._current()
        # A connection of its own: interrupting it on time-out touches no other request.
        con = snapshot.con.cursor()
        try:
            try:
                statements = readonly.check_statements(con, statement)
            except QuerySyntaxError as err:
                raise BadRequest(str(err)) from None
            except named.QueryError as err:
                raise SqlRefused(str(err)) from None
            if len(statements) != 1:
                raise BadRequest(f"one statement at a time; got {len(statements)}")
            started = time.perf_counter()
            timer = threading.Timer(seconds, con.interrupt)
            timer.start()
            try:
                cursor = con.execute(statements[0], params or None)
                columns = [d[0] for d in cursor.description] if cursor.description else []
                rows = cursor.fetchmany(max_rows + 1) if columns else []
            except (duckdb.InterruptException, RuntimeError) as err:
                if time.perf_counter() - started >= seconds * 0.9:
                    raise SqlTimeout(f"the query ran past the {seconds:g} s limit and was stopped") from None
                raise BadRequest(_first_line(err)) from None
            except duckdb.PermissionException as err:
                raise SqlRefused(_first_line(err)) from None
            except duckdb.Error as err:
                raise BadRequest(_first_line(err)) from None
            finally:
                timer.cancel()
            return SqlResult(columns, rows[:max_rows], len(rows) > max_rows, time.perf_counter() - started)
        finally:
            con.close()

    # --- writing -----------------------------------------------------------------------------

    def ingest(self, paths, prune: bool = False, **options) -> dict:
        """Run the ingest flow on `paths` (files or folders) into this warehouse and return its
        summary; then take a fresh snapshot. `options` go to the flow (max_tokens, wait, ...). Uses
        the Prefect server `newsindex ingest` would use, else Prefect's temporary one."""
        config.offline_env()
        # Read by Prefect once, when first imported (below): no settings context exists before.
        os.environ.setdefault(*config.PREFECT_EXTRA_LOGGERS)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from newsindex.flows.ingest import ingest as ingest_flow

        prefect_api = contextlib.nullcontext()
        if "PREFECT_API_URL" not in os.environ:
            from newsindex.flows import server

            chosen = server.api_url_for_run()
            if chosen:
                prefect_api = temporary_settings(updates={PREFECT_API_URL: chosen})

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        # Not attached to the file meanwhile: two DuckDB instances in one process would not see
        # each other's file lock.
        with self._lock:
            self._paused += 1
        try:
            with prefect_api:
                summary = ingest_flow(paths=[str(p) for p in paths], db=str(self.path), prune=prune, **options)
        finally:
            with self._lock:
                self._paused -= 1
        self.refresh(wait=self._wait)
        return summary


def _day(value, name: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise BadRequest(f"{name}: {str(value)[:40]!r} is not a date (YYYY-MM-DD)") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_WORD = re.compile(r"\w+")
_STOP = frozenset(
    "the a an of to in on and or for is was who what which did does how why when with by at from".split()
)


def highlight_spans(text: str, query: str) -> list[list[int]]:
    """[start, end) spans of the words in `text` that match a query word, on a stem-like prefix (as
    search.snippet matches them): "floods" and "flooding" for "flood". Stop words are not marked."""
    stems = {w.lower()[: max(4, len(w) - 2)] for w in _WORD.findall(query) if len(w) > 1 and w.lower() not in _STOP}
    if not stems:
        return []
    return [[m.start(), m.end()] for m in _WORD.finditer(text) if any(m.group().lower().startswith(s) for s in stems)]
