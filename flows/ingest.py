"""The ingest flow: discover article files, plan what changed, then embed and write in batches.

Tasks pass paths and small plain data. Text is re-read from the files inside the embedding task
and vectors never leave it, so Prefect never hashes, stores or serialises large values, and memory
stays bounded by a few batches however large the corpus is. Each embedding task runs the
three-stage pipeline of flows/pipeline.py over a part of a few million characters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from newsindex import config, faults
from newsindex.articles import ArticleError, discover_files, display_path, read_guarded
from newsindex.config import ChunkSettings
from newsindex.embedding import choose_runtime, int8_info, load_encoder, model_info
from newsindex.flows import pipeline
from newsindex.warehouse import store

# Set by the CLI to drive its progress bar: called with (chunks done, chunks planned).
on_progress: Callable[[int, int], None] | None = None

# About 100k characters (~25k tokens) per batch: a second or two of encoding, long enough that
# sorting by length pays off and short enough that progress moves and the write lock stays brief.
DEFAULT_BATCH_CHARS = 100_000
# How long a run waits for another ingestion of the same warehouse: longer than a typical
# scheduled run, shorter than a stuck one.
DEFAULT_WAIT = 600.0
# About 4M characters (~1M tokens, most of a minute) per task run: each task run costs tens of ms
# with a server and the pipeline fills and drains once per run, while the UI still sees progress.
DEFAULT_PART_CHARS = 4_000_000
# Sequences per forward pass: wider batches of ~128-token chunks spill the cache (bench/RESULTS.md).
ENCODE_BATCH_SIZE = 32


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
def discover(paths: list[str]) -> tuple[list[str], list[Failure], list[str]]:
    """Every candidate file under `paths`, sorted; hidden files and folders are skipped."""
    found = discover_files(paths)
    return found.files, [Failure(e.path, e.line, e.message) for e in found.errors], found.warnings


class _Found(NamedTuple):
    """What the plan keeps of a parsed article: no text, so memory does not grow with the corpus."""

    path: str
    doc_id: str
    line: int | None
    where: str  # file, or file:line, for messages
    source_path: str
    content_hash: str
    text_hash: str
    chars: int


@task(cache_policy=NO_CACHE, persist_result=False)
def plan(files: list[str], db: str, chunk_key: str) -> Plan:
    """Parse every file and compare with the warehouse: which documents need embedding."""
    started = time.perf_counter()
    result = Plan()
    found: list[_Found] = []
    owner: dict[str, str] = {}
    for path in files:
        faults.point("parse")
        ids: list[str] = []
        clean = True
        for item in read_guarded(path):
            if isinstance(item, ArticleError):
                result.failures.append(Failure(item.path, item.line, item.message))
                clean = False
                continue
            result.seen += 1
            if item.doc_id in owner:
                result.failures.append(
                    Failure(path, item.line, f"document id {item.doc_id!r} is already used by {owner[item.doc_id]}")
                )
                continue
            shown = display_path(path)
            owner[item.doc_id] = shown if item.line is None else f"{shown}:{item.line}"
            result.warnings.extend(f"{owner[item.doc_id]}: {w}" for w in item.warnings)
            ids.append(item.doc_id)
            found.append(_Found(path, item.doc_id, item.line, owner[item.doc_id], item.source_path,
                                item.content_hash, item.text_hash, len(item.text)))  # fmt: skip
        # Only a file read without errors tells prune which documents it no longer holds: a bad line
        # or a broken file must never cost what was stored from it before.
        if clean:
            result.sources[os.path.realpath(path)] = ids
    with store.opened(db) as con:
        stored = store.stored_docs(con, [f.doc_id for f in found])
        new = [f for f in found if f.doc_id not in stored]
        twins = store.documents_with_texts(con, [(f.text_hash, f.chars) for f in new]) if new else []
    # Which text is already held, and where: a new document with the same text as another would only
    # show up twice in every search. A file moved elsewhere (its old path gone) is not a twin.
    held = {text_hash: where for text_hash, where, source in twins if Path(source).exists()}
    held.update({f.text_hash: f.where for f in found if f.doc_id in stored})
    work: dict[str, tuple[list[str], int]] = {}
    for f in found:
        old = stored.get(f.doc_id)
        if old is None:
            if f.text_hash in held:
                result.warnings.append(f"{f.where}: same text as {held[f.text_hash]}; not stored twice")
                continue
            held[f.text_hash] = f.where
        if old and old.source_path != f.source_path and Path(old.source_path).exists():
            result.failures.append(
                Failure(f.path, f.line, f"document id {f.doc_id!r} is already used by {old.source_path}")
            )
        elif old and old.content_hash == f.content_hash and old.chunk_key == chunk_key:
            result.unchanged += 1
        else:
            ids, chars = work.get(f.path, ([], 0))
            ids.append(f.doc_id)
            work[f.path] = (ids, chars + f.chars)
    result.work = [(path, ids, chars) for path, (ids, chars) in work.items()]
    result.seconds = time.perf_counter() - started
    return result


def parts(work: list[tuple[str, list[str], int]], part_chars: int) -> list[list[tuple[str, list[str]]]]:
    """Group (file, doc ids) into task-sized parts of about `part_chars` characters. Files are not
    split, so each is read once per run; a file bigger than a part is a part of its own."""
    out: list[list[tuple[str, list[str]]]] = []
    current: list[tuple[str, list[str]]] = []
    size = 0
    for path, ids, chars in work:
        if current and size + chars > part_chars:
            out.append(current)
            current, size = [], 0
        current.append((path, ids))
        size += chars
    if current:
        out.append(current)
    return out


@task(cache_policy=NO_CACHE, persist_result=False)
def embed_and_write(
    items: list[tuple[str, list[str]]],
    db: str,
    settings: dict,
    model_dir: str,
    model_name: str,
    runtime: str,
    batch_chars: int,
    progress_from: int = 0,
    progress_total: int = 0,
) -> dict:
    """Re-read, chunk, embed and store these documents, one transaction per batch, reading the next
    batch and writing the previous one while the model encodes (see flows/pipeline.py)."""
    logger = get_run_logger()
    chunk_settings = ChunkSettings(**settings)
    encoder = load_encoder(runtime, model_info(model_dir, model_name))  # loaded once per process
    chunk_key = f"{chunk_settings.key()}|{encoder.info.fingerprint}"
    done = progress_from

    def batch_stored(outcome: pipeline.Outcome, chars: int) -> None:
        nonlocal done
        done += chars
        logger.info("batch %d stored: %d chunks, %d tokens so far (%.0f tokens/s encoding)",
                    outcome.batches, outcome.chunks_embedded, outcome.tokens_embedded,
                    outcome.tokens_embedded / max(outcome.embed_seconds, 1e-9))
        if on_progress:
            on_progress(done, progress_total)

    outcome = pipeline.run(items, db, chunk_settings, encoder, chunk_key, batch_chars, ENCODE_BATCH_SIZE, batch_stored)
    return {
        "added": outcome.added,
        "updated": outcome.updated,
        "unchanged": outcome.unchanged,
        "chunks_embedded": outcome.chunks_embedded,
        "tokens_embedded": outcome.tokens_embedded,
        "parse_seconds": outcome.parse_seconds,
        "embed_seconds": outcome.embed_seconds,
        "write_seconds": outcome.write_seconds,
        "failures": [asdict(Failure(*f)) for f in outcome.failures],
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
    part_chars: int = DEFAULT_PART_CHARS,
    wait: float = DEFAULT_WAIT,
    precision: str = "exact",
) -> dict:
    """Ingest article files into the warehouse; returns the run summary.

    `precision="int8"` embeds with the quantised export: faster, a little less accurate, and stored
    under its own fingerprint, so every document is re-embedded and never mixed with exact vectors.
    One ingestion writes a warehouse at a time: a run that finds another one going waits up to
    `wait` seconds for it (saying so), then fails without touching anything."""
    config.offline_env()
    paths = [str(p) for p in (paths or [config.DEFAULT_SEEDS])]
    db_file = str(config.db_path(db))
    with store.ingest_lock(db_file, wait):
        return _ingest(paths, db_file, prune, max_tokens, overlap_sentences, batch_chars, part_chars, precision)


def _ingest(
    paths: list[str], db_file: str, prune: bool, max_tokens: int, overlap_sentences: int, batch_chars: int,
    part_chars: int, precision: str = "exact",
) -> dict:
    logger = get_run_logger()
    started = time.perf_counter()
    settings = ChunkSettings(max_tokens, overlap_sentences)
    weights = model_info(str(config.model_path()), config.model_name())
    # Not part of the chunk key: every exact runtime gives the same vectors to cosine 0.9999 (bf16
    # 0.999), so another machine's choice re-embeds nothing. int8 is another fingerprint.
    runtime = choose_runtime(precision)
    info = int8_info(weights) if precision == "int8" else weights
    # Queries are embedded by ONNX Runtime on the exact export, whichever runtime ingests: make it
    # now, while torch is at hand, so a search never has to.
    from newsindex.onnx_export import ensure_export

    ensure_export(weights, "fp32")
    chunk_key = f"{settings.key()}|{info.fingerprint}"
    with store.opened(db_file) as con:
        with store.transaction(con):
            store.register_model(con, info.fingerprint, info.name, info.dim)
            run_id = store.start_run(con, paths, _flow_run_id(), info.fingerprint)
    counts: dict[str, float] = {name: 0 for name in store.RUN_COUNTERS}
    failures: list[Failure] = []
    status = "failed"
    try:
        files, missing, odd_folders = discover(paths)
        failures.extend(missing)
        planned = plan(files, db_file, chunk_key)
        planned.warnings[:0] = odd_folders
        failures.extend(planned.failures)
        for warning in planned.warnings:
            logger.warning(warning)
        counts.update(seen=planned.seen, unchanged=planned.unchanged, parse_seconds=planned.seconds)
        groups = parts(planned.work, part_chars)
        total_chars = sum(chars for _, _, chars in planned.work)
        done_chars = 0
        logger.info("%d files, %d documents: %d unchanged, %d to embed in %d parts (%s)",
                    len(files), planned.seen, planned.unchanged, sum(len(ids) for _, ids, _ in planned.work),
                    len(groups), runtime)
        if on_progress:
            on_progress(0, total_chars)
        chars_of = {path: chars for path, _, chars in planned.work}
        for group in groups:
            result = embed_and_write(group, db_file, asdict(settings), weights.path, weights.name, runtime,
                                     batch_chars, done_chars, total_chars)
            for key in ("added", "updated", "unchanged", "chunks_embedded", "tokens_embedded",
                        "parse_seconds", "embed_seconds", "write_seconds"):
                counts[key] += result[key]
            failures.extend(Failure(**f) for f in result["failures"])
            done_chars += sum(chars_of[path] for path, _ in group)
            if on_progress:
                on_progress(done_chars, total_chars)
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
        "precision": precision,
        "runtime": runtime,
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
    rows += [{"measure": key, "value": summary[key]} for key in ("model", "precision", "runtime")]
    rows += [{"measure": "failure", "value": f} for f in summary["failures"]]
    create_table_artifact(
        key="ingest-summary",
        table=rows,
        description=f"Ingest run {summary['run_id']} into {summary['db']}: {summary['status']}",
    )
