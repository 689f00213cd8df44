"""The ingest flow: discover article files, plan what changed, then embed and write in batches.

Tasks pass paths and small plain data. Text is re-read from the files inside the batch task and
vectors never leave it, so Prefect never hashes, stores or serialises large values, and memory
stays bounded by one batch however large the corpus is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from newsindex import config, faults
from newsindex.articles import Article, ArticleError, read_articles
from newsindex.chunking import chunk_text, load_tokenizer
from newsindex.config import ChunkSettings
from newsindex.embedding import model_info, shared_embedder
from newsindex.warehouse import store

# Set by the CLI to drive its progress bar: called with (chunks done, chunks planned).
on_progress: Callable[[int, int], None] | None = None

# About 100k characters (~25k tokens) per batch: a few seconds of encoding, long enough that
# sorting by length pays off and short enough that progress moves and the write lock stays brief.
DEFAULT_BATCH_CHARS = 100_000


@dataclass
class Failure:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return str(ArticleError(self.path, self.message, self.line))


@dataclass
class Plan:
    seen: int = 0
    unchanged: int = 0
    work: list[tuple[str, list[str], int]] = field(default_factory=list)  # (file, doc ids, characters)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)  # file -> every doc id it holds
    seconds: float = 0.0


# No task retries on a locked warehouse: store.connect already waits $NEWSINDEX_LOCK_WAIT with
# backoff, and retrying on top would multiply that bound.
@task(cache_policy=NO_CACHE, persist_result=False)
def discover(paths: list[str]) -> tuple[list[str], list[Failure]]:
    """Every candidate file under `paths`, sorted; hidden files and folders are skipped."""
    files: list[str] = []
    failures: list[Failure] = []
    for given in paths:
        # The same file named twice (a folder and a file in it) is still one file.
        root = Path(given)
        if root.is_dir():
            for folder, dirs, names in os.walk(root, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(str(Path(folder) / n) for n in sorted(names) if not n.startswith("."))
        elif root.exists() or root.is_symlink():
            files.append(str(root))
        else:
            failures.append(Failure(str(root), None, "no such file or directory"))
    unique = {os.path.realpath(f) if not os.path.isdir(f) else f: f for f in reversed(files)}
    return sorted(unique.values()), failures


def _articles(path: str, wanted: set[str] | None = None):
    for item in read_articles(path):
        if isinstance(item, Article) and wanted is not None and item.doc_id not in wanted:
            continue
        yield item


@task(cache_policy=NO_CACHE, persist_result=False)
def plan(files: list[str], db: str, chunk_key: str) -> Plan:
    """Parse every file and compare with the warehouse: which documents need embedding."""
    started = time.perf_counter()
    result = Plan()
    found: list[tuple[str, Article]] = []
    owner: dict[str, str] = {}
    for path in files:
        faults.point("parse")
        ids: list[str] = []
        for item in _articles(path):
            if isinstance(item, ArticleError):
                result.failures.append(Failure(item.path, item.line, item.message))
                continue
            result.seen += 1
            if item.doc_id in owner:
                result.failures.append(
                    Failure(path, item.line, f"document id {item.doc_id!r} is already used by {owner[item.doc_id]}")
                )
                continue
            owner[item.doc_id] = path if item.line is None else f"{path}:{item.line}"
            result.warnings.extend(f"{owner[item.doc_id]}: {w}" for w in item.warnings)
            ids.append(item.doc_id)
            found.append((path, item))
        result.sources[str(Path(path).resolve())] = ids
    with store.opened(db) as con:
        stored = store.stored_docs(con, [a.doc_id for _, a in found])
    work: dict[str, tuple[list[str], int]] = {}
    for path, article in found:
        old = stored.get(article.doc_id)
        if old and old.source_path != article.source_path and Path(old.source_path).exists():
            result.failures.append(
                Failure(path, article.line, f"document id {article.doc_id!r} is already used by {old.source_path}")
            )
        elif old and old.content_hash == article.content_hash and old.chunk_key == chunk_key:
            result.unchanged += 1
        else:
            ids, chars = work.get(path, ([], 0))
            ids.append(article.doc_id)
            work[path] = (ids, chars + len(article.text))
    result.work = [(path, ids, chars) for path, (ids, chars) in work.items()]
    result.seconds = time.perf_counter() - started
    return result


def batches(work: list[tuple[str, list[str], int]], batch_chars: int) -> list[list[tuple[str, list[str]]]]:
    """Group (file, doc ids) into batches of about `batch_chars` characters; big files are split."""
    out: list[list[tuple[str, list[str]]]] = []
    current: list[tuple[str, list[str]]] = []
    size = 0
    for path, ids, chars in work:
        per_doc = max(1, chars // max(1, len(ids)))
        start = 0
        while start < len(ids):
            room = max(1, (batch_chars - size) // per_doc)
            part = ids[start : start + room]
            current.append((path, part))
            size += per_doc * len(part)
            start += len(part)
            if size >= batch_chars:
                out.append(current)
                current, size = [], 0
    if current:
        out.append(current)
    return out


@task(cache_policy=NO_CACHE, persist_result=False)
def embed_and_write(
    items: list[tuple[str, list[str]]], db: str, settings: dict, model_dir: str, model_name: str
) -> dict:
    """Re-read, chunk and embed these documents, then store them in one short transaction."""
    chunk_settings = ChunkSettings(**settings)
    info = model_info(model_dir, model_name)
    tokenizer = load_tokenizer(model_dir)
    chunk_key = f"{chunk_settings.key()}|{info.fingerprint}"
    started = time.perf_counter()
    rows: list[store.DocumentRow] = []
    failures: list[Failure] = []
    for path, ids in items:
        wanted = set(ids)
        file_error = False
        for article in _articles(path, wanted):
            if isinstance(article, ArticleError):
                # Bad lines were reported by the plan; a whole-file error means the file changed since.
                if article.line is None:
                    failures.append(Failure(article.path, None, article.message))
                    file_error = True
                continue
            wanted.discard(article.doc_id)
            chunks = chunk_text(article.text, tokenizer, chunk_settings)
            rows.append(
                store.DocumentRow(
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
            )
        if wanted and not file_error:
            failures.append(Failure(path, None, f"changed during the run: {len(wanted)} document(s) vanished; run again"))
    texts = [t for row in rows for t in row.chunk_texts]
    embedder = shared_embedder(model_dir, model_name)  # loaded once per process, not timed as encoding
    parsed = time.perf_counter()
    vectors = embedder.encode(texts)
    faults.point("embed")
    embedded = time.perf_counter()
    with store.opened(db) as con:
        written = store.write_documents(con, rows, vectors, info.fingerprint)
    finished = time.perf_counter()
    return {
        "added": written.added,
        "updated": written.updated,
        "unchanged": written.unchanged,
        "chunks_embedded": len(texts),
        "tokens_embedded": sum(n for row in rows for n in row.chunk_tokens),
        "parse_seconds": parsed - started,
        "embed_seconds": embedded - parsed,
        "write_seconds": finished - embedded,
        "failures": [asdict(f) for f in failures],
    }


@task(cache_policy=NO_CACHE, persist_result=False)
def prune_missing(db: str, roots: list[str], sources: dict[str, list[str]]) -> list[str]:
    with store.opened(db) as con:
        return store.prune(con, roots, {path: set(ids) for path, ids in sources.items()})


@task(cache_policy=NO_CACHE, persist_result=False)
def refresh_search_index(db: str) -> bool:
    """Rebuild the keyword index if the chunks changed, including after an earlier crashed run."""
    with store.opened(db) as con:
        return store.refresh_search_index(con)


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


@flow(name="ingest", log_prints=False)
def ingest(
    paths: list[str] | None = None,
    db: str | None = None,
    prune: bool = False,
    max_tokens: int = ChunkSettings.max_tokens,
    overlap_sentences: int = ChunkSettings.overlap_sentences,
    batch_chars: int = DEFAULT_BATCH_CHARS,
) -> dict:
    """Ingest article files into the warehouse; returns the run summary."""
    logger = get_run_logger()
    config.offline_env()
    started = time.perf_counter()
    paths = [str(p) for p in (paths or [config.DEFAULT_SEEDS])]
    db_file = str(config.db_path(db))
    settings = ChunkSettings(max_tokens, overlap_sentences)
    info = model_info(str(config.model_path()), config.model_name())
    chunk_key = f"{settings.key()}|{info.fingerprint}"
    with store.opened(db_file) as con:
        with store.transaction(con):
            store.register_model(con, info.fingerprint, info.name, info.dim)
            run_id = store.start_run(con, paths, _flow_run_id(), info.fingerprint)
    counts: dict[str, float] = {name: 0 for name in store.RUN_COUNTERS}
    failures: list[Failure] = []
    status = "failed"
    try:
        files, missing = discover(paths)
        failures.extend(missing)
        planned = plan(files, db_file, chunk_key)
        failures.extend(planned.failures)
        for warning in planned.warnings:
            logger.warning(warning)
        counts.update(seen=planned.seen, unchanged=planned.unchanged, parse_seconds=planned.seconds)
        groups = batches(planned.work, batch_chars)
        total_chars = sum(chars for _, _, chars in planned.work)
        done_chars = 0
        logger.info("%d files, %d documents: %d unchanged, %d to embed in %d batches",
                    len(files), planned.seen, planned.unchanged, sum(len(ids) for _, ids, _ in planned.work), len(groups))
        if on_progress:
            on_progress(0, total_chars)
        per_doc_chars = {(path, doc): chars / max(1, len(ids)) for path, ids, chars in planned.work for doc in ids}
        for group in groups:
            result = embed_and_write(group, db_file, asdict(settings), info.path, info.name)
            for key in ("added", "updated", "unchanged", "chunks_embedded", "tokens_embedded",
                        "parse_seconds", "embed_seconds", "write_seconds"):
                counts[key] += result[key]
            failures.extend(Failure(**f) for f in result["failures"])
            done_chars += sum(per_doc_chars[(path, doc)] for path, ids in group for doc in ids)
            if on_progress:
                on_progress(int(done_chars), total_chars)
        if prune:
            removed = prune_missing(db_file, [p for p in paths if Path(p).is_dir()], planned.sources)
            counts["removed"] = len(removed)
        rebuilt = refresh_search_index(db_file)
        status = "completed"
    finally:
        counts["failed"] = len(failures)
        with store.opened(db_file) as con:
            store.finish_run(con, run_id, counts, [(f.path, f.line, f.message) for f in failures], status)
    summary = {
        "run_id": run_id,
        "db": db_file,
        "status": status,
        **{k: (round(v, 3) if isinstance(v, float) else int(v)) for k, v in counts.items()},
        "total_seconds": round(time.perf_counter() - started, 3),
        "model": info.name,
        "search_index_rebuilt": rebuilt,
        "failures": [str(f) for f in failures],
        "warnings": planned.warnings,
    }
    for failure in failures:
        logger.error("%s", failure)
    _artifact(summary)
    return summary


def _artifact(summary: dict) -> None:
    rows = [
        {"measure": key, "value": summary[key]}
        for key in ("seen", "added", "updated", "unchanged", "failed", "removed", "chunks_embedded",
                    "tokens_embedded", "parse_seconds", "embed_seconds", "write_seconds", "total_seconds")
    ]
    rows += [{"measure": "failure", "value": f} for f in summary["failures"]]
    create_table_artifact(
        key="ingest-summary",
        table=rows,
        description=f"Ingest run {summary['run_id']} into {summary['db']}: {summary['status']}",
    )
