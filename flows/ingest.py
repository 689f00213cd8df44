"""The ingest flow: discover article files, plan what changed, then embed and write in batches.

Tasks pass paths and small plain data. Text is re-read from the files inside the embedding task
and vectors never leave it, so Prefect never hashes, stores or serialises large values, and memory
stays bounded by a few batches however large the corpus is. Each embedding task runs the
three-stage pipeline of flows/pipeline.py over a part of a few million characters.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from newsindex import config, faults
from newsindex.articles import JSONL_SUFFIXES, ArticleError, derived_id_prefix, discover_files, display_path, read_guarded
from newsindex.config import ChunkSettings
from newsindex.embedding import choose_runtime, int8_info, load_encoder, model_info
from newsindex.flows import pipeline
from newsindex.warehouse import connection, documents, keyword, runs, vector_file

# The on_progress of the run_ingest call under way, if any. A context variable, not a flow
# parameter: Prefect sends a run's parameters to its API, and a callable is none. Prefect runs the
# flow and its in-process tasks within the caller's context, so they all see it.
_on_progress: ContextVar[Callable[..., None] | None] = ContextVar("newsindex_ingest_progress", default=None)


def _report(phase: str, done: int = 0, total: int = 0, chunks: int = 0) -> None:
    on_progress = _on_progress.get()
    if on_progress:
        on_progress(phase, done, total, chunks)


def run_ingest(on_progress: Callable[..., None] | None = None, **parameters) -> dict:
    """Run the ingest flow with these parameters (see `ingest`) and return its summary.

    `on_progress(phase, done, total, chunks)` is called as the run goes, with phase "reading"
    (files parsed of files found), "embedding" (characters stored of characters to embed; chunks
    stored so far) or "indexing"."""
    token = _on_progress.set(on_progress)
    try:
        return ingest(**parameters)
    finally:
        _on_progress.reset(token)


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
# Removed documents named in the summary; a mass prune reports its count and the first ones.
PRUNED_LISTED = 1000


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
    retire: dict[str, list[str]] = field(default_factory=dict)  # file -> its superseded `<file id>:<line>` documents
    lines: list[tuple[str, int]] = field(default_factory=list)  # (doc id, line) of moved JSON Lines documents
    seconds: float = 0.0


# No task retries on a locked warehouse: connection.connect already waits $NEWSINDEX_LOCK_WAIT with
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
def plan(files: list[str], db: str, chunk_key: str, prune: bool = False) -> Plan:
    """Parse every file and compare with the warehouse: which documents need embedding, and which
    documents stored under the line-number ids of earlier versions are superseded. `prune`: whether
    this run will also remove what clean files no longer hold (then that is no twin to skip for)."""
    started = time.perf_counter()
    result = Plan()
    found: list[_Found] = []
    owner: dict[str, str] = {}
    derived: dict[str, tuple[str, str]] = {}  # clean JSON Lines file -> (path given, prefix of its made ids)
    for number, path in enumerate(files):
        _report("reading", number, len(files))
        faults.point("parse")
        ids: list[str] = []
        clean = True
        for item in read_guarded(path):
            if isinstance(item, ArticleError):
                result.failures.append(Failure(item.path, item.line, item.message))
                clean = False
                continue
            result.seen += 1
            shown = display_path(path)
            where = shown if item.line is None else f"{shown}:{item.line}"
            if item.doc_id in owner:
                if item.derived_id:  # an id made from the text: the same text twice in one file
                    result.warnings.append(f"{where}: same text as {owner[item.doc_id]}; not stored twice")
                else:
                    result.failures.append(Failure(path, item.line, f"document id {item.doc_id!r} is already used by {owner[item.doc_id]}"))
                continue
            owner[item.doc_id] = where
            result.warnings.extend(f"{where}: {w}" for w in item.warnings)
            ids.append(item.doc_id)
            found.append(_Found(path, item.doc_id, item.line, where, item.source_path,
                                item.content_hash, item.text_hash, len(item.text)))  # fmt: skip
        # Only a file read without errors tells prune which documents it no longer holds: a bad line
        # or a broken file must never cost what was stored from it before.
        if clean:
            result.sources[os.path.realpath(path)] = ids
            if Path(path).suffix.lower() in JSONL_SUFFIXES:
                derived[os.path.realpath(path)] = (path, derived_id_prefix(path))
    with connection.opened(db) as con:
        stored = documents.stored_docs(con, [f.doc_id for f in found])
        new = [f for f in found if f.doc_id not in stored]
        twins = documents.documents_with_texts(con, [(f.text_hash, f.chars) for f in new]) if new else []
        placed = documents.documents_from(con, sorted({f.source_path for f in found if f.line is not None}))
        # Earlier versions named id-less lines `<file id>:<line>`. A clean file that holds such a
        # document's text under its new id supersedes it: removed once the new one is stored, with
        # or without --prune, so an upgrade duplicates nothing. Any other document a file no longer
        # holds (a line dropped from a rolling feed, an edited line's old text) stays until --prune.
        old_style = {doc_id: derived[source][0] for doc_id, source, _ in placed
                     if source in derived and doc_id not in result.sources[source]
                     and _LINE_NUMBER.fullmatch(doc_id.removeprefix(derived[source][1]))}  # fmt: skip
        old_texts = documents.text_hashes(con, sorted(old_style)) if old_style else {}
    held_by = {(f.path, f.text_hash) for f in found}
    for doc_id, path in old_style.items():
        if (path, old_texts.get(doc_id)) in held_by:
            result.retire.setdefault(path, []).append(doc_id)
    now_at = {f.doc_id: f.line for f in found if f.line is not None}
    result.lines = sorted((doc_id, now_at[doc_id]) for doc_id, _, line in placed if doc_id in now_at and line != now_at[doc_id])
    # Which text is already held, and where: a new document with the same text as another would only
    # show up twice in every search. Only a document that is still there after this run counts: not
    # one whose file is gone, not one this run rewrites or retires, not one it prunes.
    going = {doc_id for ids in result.retire.values() for doc_id in ids}
    if prune:
        going |= {doc_id for _, _, source, doc_id in twins if source in result.sources and doc_id not in result.sources[source]}
    held = {text_hash: where for text_hash, where, source, doc_id in twins
            if doc_id not in owner and doc_id not in going and Path(source).exists()}  # fmt: skip
    conflicts = {f.doc_id for f in found if f.doc_id in stored and _taken_elsewhere(stored[f.doc_id], f)}
    held.update({f.text_hash: f.where for f in found if f.doc_id in stored and f.doc_id not in conflicts})
    work: dict[str, tuple[list[str], int]] = {}
    for f in found:
        old = stored.get(f.doc_id)
        if old is None:
            if f.text_hash in held:
                result.warnings.append(f"{f.where}: same text as {held[f.text_hash]}; not stored twice")
                continue
            held[f.text_hash] = f.where
        if f.doc_id in conflicts:
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


_LINE_NUMBER = re.compile(r"[0-9]+")


def _taken_elsewhere(old: documents.StoredDoc, found: _Found) -> bool:
    """A stored document with this id comes from another file that still exists."""
    return old.source_path != found.source_path and Path(old.source_path).exists()


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
    chunks_before: int = 0,
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
        _report("embedding", done, progress_total, chunks_before + outcome.chunks_embedded)

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
def settle(db: str, retire: list[str], lines: list[tuple[str, int]]) -> int:
    """Remove documents superseded under new ids and renumber moved lines; how many were removed."""
    if not retire and not lines:
        return 0
    with connection.opened(db) as con:
        return documents.settle(con, retire, lines)


@task(cache_policy=NO_CACHE, persist_result=False)
def prune_missing(
    db: str, roots: list[str], sources: dict[str, list[str]], found: dict[str, int], allow_mass: bool = False
) -> dict:
    """Remove documents whose file is gone, within the bounds of documents.prune; returns how many, the
    first PRUNED_LISTED of them (file or file:line, doc id) and one line per root left alone."""
    with connection.opened(db) as con:
        outcome = documents.prune(con, roots, {path: set(ids) for path, ids in sources.items()}, found, allow_mass)
    return {
        "count": len(outcome.removed),
        "removed": [[_where(source, line), doc_id] for doc_id, source, line in outcome.removed[:PRUNED_LISTED]],
        "refused": [asdict(Failure(display_path(root), None, why)) for root, why in outcome.refused],
    }


def _where(source: str, line: int | None) -> str:
    shown = display_path(source)
    return shown if line is None else f"{shown}:{line}"


def files_under(roots: list[str], files: list[str]) -> dict[str, int]:
    """How many candidate files this run found under each root folder."""
    counts = {}
    for root in roots:
        prefixes = {os.path.abspath(root).rstrip("/") + "/", os.path.realpath(root).rstrip("/") + "/"}
        counts[root] = sum(1 for f in files if any(os.path.abspath(f).startswith(p) for p in prefixes))
    return counts


@task(cache_policy=NO_CACHE, persist_result=False)
def refresh_search_index(db: str) -> bool:
    """Build the keyword index if it is missing (once, after the migration from the fts index);
    returns whether it did. Writes keep it current; re-sort its appended tail once that is large,
    in short transactions that let readers in between."""
    with connection.opened(db) as con:
        rebuilt = keyword.refresh_search_index(con)
        compact = keyword.needs_compaction(con)
    if compact:
        with connection.driver_errors(db):  # its own connections, outside `opened`
            keyword.compact(lambda: connection.connect(db))
    return rebuilt


@task(cache_policy=NO_CACHE, persist_result=False)
def refresh_vector_file(db: str, keep: bool) -> str:
    """With `keep`, bring the copy of the vectors that one-shot searches read up to date
    (warehouse/vector_file.py: it appends the changed articles' rows), from its own read-only
    connection: readers keep reading. Without, remove any copy (this run's writes made it stale).
    A cache: a failure is logged, not raised."""
    try:
        return vector_file.write(db) if keep else vector_file.remove(db)
    except (OSError, ValueError, connection.WarehouseError) as err:
        get_run_logger().warning("vector file not written (one-shot searches scan the warehouse instead): %s", err)
        return "failed"


class OptionError(ValueError):
    """An ingest option out of its range (the CLI checks the same bounds before it gets here)."""


def check_options(max_tokens: int, overlap_sentences: int, wait: float, batch_chars: int, part_chars: int) -> None:
    """Refuse values that would fail deep inside a run (a zero budget), lose text silently (a
    negative overlap skips sentences) or never end (a NaN wait): deployments and the Python API
    pass parameters without the CLI's checks."""
    problems = []
    for name, value, low in (("max_tokens", max_tokens, 1), ("overlap_sentences", overlap_sentences, 0),
                             ("batch_chars", batch_chars, 1), ("part_chars", part_chars, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problems.append(f"{name} must be a whole number >= {low}, got {value!r}")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
        problems.append(f"wait must be a number of seconds >= 0, got {wait!r}")
    if problems:
        raise OptionError("; ".join(problems))


def _empty_roots(paths: list[str], files: list[str]) -> list[str]:
    """A folder given to ingest in which nothing was found: likely a typo or a dropped mount, and
    `seen 0` alone does not say which folder it was."""
    empty = []
    for root in paths:
        if not Path(root).is_dir():
            continue
        prefix = os.path.join(os.path.abspath(root), "")
        if not any(os.path.abspath(f).startswith(prefix) for f in files):
            empty.append(f"{display_path(root)}: no article files found under it (.txt, .md, .markdown, .jsonl)")
    return empty


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
    allow_mass_prune: bool = False,
    workers: int = 0,
    dask_address: str | None = None,
    precision: str = "exact",
    vector_file: bool = True,
) -> dict:
    """Ingest article files into the warehouse; returns the run summary.

    `precision="int8"` embeds with the quantised export: faster, a little less accurate, and stored
    under its own fingerprint, so every document is re-embedded and never mixed with exact vectors.
    One ingestion writes a warehouse at a time: a run that finds another one going waits up to
    `wait` seconds for it (saying so), then fails without touching anything. With `prune`, a folder
    in which no files were found, or that would lose more than half of its documents, keeps them
    all (one failure line says so) unless `allow_mass_prune`. With `workers` (a local Dask cluster
    of that many processes) or `dask_address` (a running scheduler) the parts are encoded on the
    cluster and this process writes them (flows/distributed.py). With `vector_file` (the default) the
    run then brings the copy of the vectors that one-shot searches read up to date
    (warehouse/vector_file.py); without, it removes any copy."""
    config.offline_env()
    check_options(max_tokens, overlap_sentences, wait, batch_chars, part_chars)
    paths = [str(p) for p in (paths or [config.DEFAULT_SEEDS])]
    db_file = str(config.db_path(db))
    cluster = Cluster(workers, dask_address) if (workers or dask_address) else None
    if cluster:
        cluster.check()
    with connection.ingest_lock(db_file, wait):
        return _ingest(paths, db_file, prune, max_tokens, overlap_sentences, batch_chars, part_chars, allow_mass_prune, cluster, precision,
                       vector_file)  # fmt: skip


@dataclass(frozen=True)
class Cluster:
    """Where the embedding stage runs when not in this process."""

    workers: int = 0
    address: str | None = None

    def check(self) -> None:
        from newsindex.flows import distributed

        if self.workers and self.address:
            raise distributed.ClusterError("give --workers or --dask-address, not both")
        if self.workers < 0 or self.workers > 512:
            raise distributed.ClusterError(f"--workers must be between 1 and 512, got {self.workers}")
        if self.address:
            distributed.check_scheduler(self.address)

    def __str__(self) -> str:
        return f"Dask scheduler {self.address}" if self.address else f"local Dask cluster of {self.workers} workers"


def _ingest(
    paths: list[str], db_file: str, prune: bool, max_tokens: int, overlap_sentences: int, batch_chars: int,
    part_chars: int, allow_mass_prune: bool = False, cluster: Cluster | None = None, precision: str = "exact",
    keep_vector_file: bool = False,
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
    # The first writer of a warehouse fixes its vector width; any later model must match it, and
    # register_model refuses one that does not before the run writes anything.
    with connection.opened(db_file, dim=info.dim) as con:
        with connection.transaction(con):
            documents.register_model(con, info.fingerprint, info.name, info.dim)
            run_id = runs.start_run(con, paths, _flow_run_id(), info.fingerprint)
    counts: dict[str, float] = {name: 0 for name in runs.RUN_COUNTERS}
    cluster_info: dict | None = None
    failures: list[Failure] = []
    pruned: list[list[str]] = []
    status = "failed"
    try:
        files, missing, odd_folders = discover(paths)
        failures.extend(missing)
        planned = plan(files, db_file, chunk_key, prune)
        planned.warnings[:0] = odd_folders + _empty_roots(paths, files)
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
        _report("embedding", 0, total_chars, 0)
        chars_of = {path: chars for path, _, chars in planned.work}
        if cluster and groups:
            from newsindex.flows import distributed

            logger.info("embedding %d parts on a %s", len(groups), cluster)
            on_dask = distributed.embed_on_cluster.with_options(task_runner=distributed.task_runner(cluster.workers, cluster.address))
            job = distributed.EncodeJob(asdict(settings), weights.fingerprint, info.fingerprint, runtime, batch_chars,
                                        ENCODE_BATCH_SIZE)  # fmt: skip
            result = on_dask(groups, db_file, job)
            for key in runs.PART_COUNTERS:
                counts[key] += result[key]
            failures.extend(Failure(*f) for f in result["failures"])
            cluster_info = {"cluster": str(cluster), "parts": result["parts"], "reused_shards": result["reused_shards"],
                            "workers": result["workers"]}  # fmt: skip
            groups = []
            _report("embedding", total_chars, total_chars, int(counts["chunks_embedded"]))
        for group in groups:
            result = embed_and_write(group, db_file, asdict(settings), weights.path, weights.name, runtime,
                                     batch_chars, done_chars, total_chars, int(counts["chunks_embedded"]))
            for key in runs.PART_COUNTERS:
                counts[key] += result[key]
            failures.extend(Failure(**f) for f in result["failures"])
            done_chars += sum(chars_of[path] for path, _ in group)
            _report("embedding", done_chars, total_chars, int(counts["chunks_embedded"]))
        # Before prune: what replaced lines leave behind is no part of what prune is asked to remove.
        # A file that failed while its new versions were stored keeps its old ones.
        broken = {display_path(f.path) for f in failures}
        retire = [doc_id for path, ids in planned.retire.items() if display_path(path) not in broken for doc_id in ids]
        superseded = settle(db_file, sorted(retire), planned.lines)
        if prune:
            roots = [p for p in paths if Path(p).is_dir()]
            outcome = prune_missing(db_file, roots, planned.sources, files_under(roots, files), allow_mass_prune)
            pruned = outcome["removed"]
            counts["removed"] = outcome["count"]
            failures.extend(Failure(**f) for f in outcome["refused"])
            if pruned:
                logger.info("pruned %d documents whose file is gone: %s%s", outcome["count"],
                            ", ".join(where for where, _ in pruned[:20]), " ..." if outcome["count"] > 20 else "")
        counts["removed"] += superseded
        _report("indexing")
        rebuilt = refresh_search_index(db_file)
        copied = refresh_vector_file(db_file, keep_vector_file)
        status = "completed"
    finally:
        counts["failed"] = len(failures)
        with connection.opened(db_file) as con:
            runs.finish_run(con, run_id, counts, [(f.path, f.line, f.message) for f in failures], status)
            previous = runs.previous_failures(con, run_id) if failures else (None, set())
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
        "vector_file": copied,
        "failures": [str(f) for f in failures],
        "warnings": planned.warnings,
        # (file or file:line, doc id) of what --prune removed; the first ones only, the count is "removed"
        "pruned": pruned,
    }
    if cluster_info:
        summary["cluster"] = cluster_info
    repeated = _unchanged_repeats(previous, failures)
    for failure in failures:
        if (failure.path, failure.line, failure.message) not in repeated:
            logger.error("%s", failure)
    if repeated:
        # A schedule would otherwise log the same bad file as an ERROR every few minutes.
        logger.warning("%d input(s) still rejected as in the previous run, unchanged since (see ingest_errors)", len(repeated))
    summary["repeated_failures"] = len(repeated)
    summary.update(_flow_run_links())
    _artifact(summary)
    if failures:
        # Completed, since the good files are stored, but the UI says at a glance that some were not.
        return Completed(message=f"{len(failures)} input(s) failed; see the ingest-summary artifact", data=summary)
    return summary


def _unchanged_repeats(
    previous: tuple[dt.datetime | None, set[tuple[str, int | None, str]]], failures: list[Failure]
) -> set[tuple[str, int | None, str]]:
    """Failures the previous run reported too (`previous`: runs.previous_failures), for files not
    modified since it started."""
    started, before = previous
    repeated = set()
    for f in failures:
        key = (f.path, f.line, f.message)
        if started is None or key not in before:
            continue
        try:
            modified = os.stat(f.path).st_mtime
        except OSError:
            modified = None  # still missing: unchanged too
        if modified is None or modified < started.timestamp():
            repeated.add(key)
    return repeated


def _flow_run_links() -> dict:
    """The Prefect flow run behind this ingest, and its page in the UI when a server has one."""
    from prefect.settings import PREFECT_UI_URL

    run_id = _flow_run_id()
    if not run_id:
        return {}
    ui = PREFECT_UI_URL.value()
    return {"flow_run_id": str(run_id), "flow_run_url": f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else None}


def _artifact(summary: dict) -> None:
    rows = [
        {"measure": key, "value": summary[key]}
        for key in (*runs.RUN_COUNTERS, "total_seconds")
    ]
    rows += [{"measure": key, "value": summary[key]} for key in ("model", "precision", "runtime")]
    rows += [{"measure": "failure", "value": f} for f in summary["failures"]]
    rows += [{"measure": "pruned", "value": f"{where} ({doc_id})"} for where, doc_id in summary["pruned"][:100]]
    create_table_artifact(
        key="ingest-summary",
        table=rows,
        description=f"Ingest run {summary['run_id']} into {summary['db']}: {summary['status']}",
    )
