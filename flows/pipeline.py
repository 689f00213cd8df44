"""Parse, embed and write in three overlapping stages, so the CPU spends its time in the encoder.

A reader thread parses and chunks the next batch and a writer thread stores the previous one while
the calling thread encodes the current one (torch, ONNX Runtime, the tokenizers and DuckDB release
the GIL while they work). The encoder gets the token ids the chunker computed, not text. Queues of one batch between the stages bound memory by a few batches, however large
the corpus. Plain Python: the ingest flow runs it inside one Prefect task.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from newsindex import faults
from newsindex.articles import Article, ArticleError, read_guarded
from newsindex.chunking import Tokenizer, chunk_text
from newsindex.config import ChunkSettings
from newsindex.embedding import Encoder
from newsindex.warehouse import connection, documents

_END = object()


@dataclass
class Batch:
    rows: list[documents.DocumentRow]
    chars: int  # characters of article text, the unit of the progress bar
    # Content token ids of every chunk, in row order: the chunker's own, so nothing is tokenized twice.
    ids: list[list[int]] = field(default_factory=list)


@dataclass
class Outcome:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks_embedded: int = 0
    tokens_embedded: int = 0
    batches: int = 0
    parse_seconds: float = 0.0
    embed_seconds: float = 0.0
    write_seconds: float = 0.0
    # (path, line, message) of files that changed or broke since the plan read them.
    failures: list[tuple[str, int | None, str]] = field(default_factory=list)


@dataclass
class _Failed:
    error: BaseException


def read_batches(
    items: list[tuple[str, list[str]]],
    settings: ChunkSettings,
    tokenizer: Tokenizer,
    chunk_key: str,
    batch_chars: int,
    failures: list[tuple[str, int | None, str]],
) -> Iterator[Batch]:
    """Documents `items` names ((file, doc ids) pairs), chunked, in batches of about `batch_chars`.
    Each file is read once; a file's documents may span batches."""
    rows: list[documents.DocumentRow] = []
    chunk_ids: list[list[int]] = []
    chars = 0
    for path, ids in items:
        wanted = set(ids)
        file_error = False
        for article in read_guarded(path):
            if isinstance(article, ArticleError):
                # Bad lines were reported by the plan; a whole-file error means the file changed since.
                if article.line is None:
                    failures.append((article.path, None, article.message))
                    file_error = True
                continue
            if article.doc_id not in wanted:
                continue
            wanted.discard(article.doc_id)
            chunks = chunk_text(article.text, tokenizer, settings)
            rows.append(_row(article, chunks, chunk_key))
            chunk_ids.extend(_chunk_ids(chunks, tokenizer))
            chars += len(article.text)
            if chars >= batch_chars:
                yield Batch(rows, chars, chunk_ids)
                rows, chunk_ids, chars = [], [], 0
        if wanted and not file_error:
            failures.append((path, None, f"changed during the run: {len(wanted)} document(s) vanished; run again"))
    if rows:
        yield Batch(rows, chars, chunk_ids)


def _chunk_ids(chunks, tokenizer: Tokenizer) -> list[list[int]]:
    """The chunker's ids, and the few it did not keep (chunks re-measured one by one) computed now."""
    missing = [c.text for c in chunks if c.token_ids is None]
    computed = iter(tokenizer.ids(missing) if missing else [])
    return [c.token_ids if c.token_ids is not None else next(computed) for c in chunks]


def _row(article: Article, chunks, chunk_key: str) -> documents.DocumentRow:
    return documents.DocumentRow(
        doc_id=article.doc_id,
        source_path=article.source_path,
        format=article.format,
        line=article.line,
        title=article.title,
        lead=article.lead,
        published=article.published,
        url=article.url,
        text=article.text,
        content_hash=article.content_hash,
        chunk_key=chunk_key,
        chunk_texts=[c.text for c in chunks],
        chunk_spans=[(c.start, c.end) for c in chunks],
        chunk_tokens=[c.token_count for c in chunks],
    )


def run(
    items: list[tuple[str, list[str]]],
    db: str,
    settings: ChunkSettings,
    encoder: Encoder,
    chunk_key: str,
    batch_chars: int,
    encode_batch_size: int = 32,
    on_batch: Callable[[Outcome, int], None] | None = None,
) -> Outcome:
    """Chunk, embed and store the documents `items` names. `on_batch(outcome so far, characters
    stored by the batch)` is called from this thread after each batch is committed."""
    outcome = Outcome()
    stop = threading.Event()  # set only by this thread, when it stops taking batches
    parsed: queue.Queue = queue.Queue(maxsize=1)
    to_write: queue.Queue = queue.Queue(maxsize=1)
    written: queue.Queue = queue.Queue()
    write_error: list[BaseException] = []
    fingerprint = encoder.info.fingerprint

    def read() -> None:
        try:
            batches = read_batches(items, settings, encoder.tokenizer, chunk_key, batch_chars, outcome.failures)
            while True:
                started = time.perf_counter()
                batch = next(batches, _END)
                outcome.parse_seconds += time.perf_counter() - started
                if not _put(parsed, batch, stop) or batch is _END:
                    return
        except BaseException as err:  # handed to the encoding thread, which raises it
            _put(parsed, _Failed(err), stop)

    def write() -> None:
        # Runs until it is handed _END, even after a failure, so the encoding thread never blocks on it.
        while (item := to_write.get()) is not _END:
            if write_error:
                continue
            batch, vectors = item
            try:
                started = time.perf_counter()
                with connection.opened(db) as con:
                    # DuckDB checkpoints when the last connection closes. The batches' commits
                    # wait in the WAL instead, durable, and the run's last connection (_ingest's,
                    # at the end) checkpoints them all at once, so the file is whole on its own
                    # again after every run. (Before migration 005 each checkpoint also rewrote
                    # the primary-key indexes, a cost that grew with the warehouse.)
                    con.execute("PRAGMA disable_checkpoint_on_shutdown")
                    result = documents.write_documents(con, batch.rows, vectors, fingerprint)
                written.put((result, batch.chars, time.perf_counter() - started))
            except BaseException as err:  # the encoding thread sees it after its next batch and stops
                write_error.append(err)

    reader = threading.Thread(target=read, name="ingest-read", daemon=True)
    writer = threading.Thread(target=write, name="ingest-write", daemon=True)
    reader.start()
    writer.start()
    try:
        while (batch := parsed.get()) is not _END:
            if isinstance(batch, _Failed):
                raise batch.error
            if write_error:
                break
            started = time.perf_counter()
            vectors = encoder.encode_ids(batch.ids, batch_size=encode_batch_size)
            faults.point("embed")
            outcome.embed_seconds += time.perf_counter() - started
            outcome.chunks_embedded += len(batch.ids)
            outcome.tokens_embedded += sum(n for row in batch.rows for n in row.chunk_tokens)
            outcome.batches += 1
            to_write.put((batch, vectors))
            _report(written, outcome, on_batch)
    finally:
        stop.set()
        to_write.put(_END)
        writer.join()
        reader.join()
    if write_error:
        raise write_error[0]
    _report(written, outcome, on_batch)
    return outcome


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless the pipeline is stopping (the consumer may be gone); whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _report(written: queue.Queue, outcome: Outcome, on_batch: Callable[[Outcome, int], None] | None) -> None:
    while True:
        try:
            result, chars, seconds = written.get_nowait()
        except queue.Empty:
            return
        outcome.added += result.added
        outcome.updated += result.updated
        outcome.unchanged += result.unchanged
        outcome.write_seconds += seconds
        if on_batch:
            on_batch(outcome, chars)
