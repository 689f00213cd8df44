"""Incremental ingest: new articles into an empty warehouse and into big ones (issue 11).

    .venv/bin/python bench/ingest.py --incremental                      # 10 articles into empty, 200k, 1M
    .venv/bin/python bench/incremental.py --sizes 0 200000 --articles 1  # the same, standalone

The big warehouses are the labelled corpus copied in SQL (bench/replicate.py; kept in bench/out/),
so the new articles meet the postings of real text. Each run goes through the real flow beside a
Prefect server, on a fresh copy of the warehouse. Time is split into encode, write (the chunk
transactions less their keyword part), index (the keyword postings inside those transactions plus
the end-of-run check) and the rest; a reader in another process opens the file read-only in a loop
throughout, and the longest time one of its opens waited is the reader lock-out. Prints numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(Path(__file__).resolve().parent))

READER = """
import sys, time
from pathlib import Path
from newsindex.warehouse import connection
db, stop = sys.argv[1], Path(sys.argv[2])
longest = opens = 0
while not stop.exists():
    started = time.perf_counter()
    con = connection.connect(db, read_only=True, wait=120)
    waited = time.perf_counter() - started
    con.execute("SELECT count(*) FROM kw_chunks").fetchone()
    con.close()
    longest, opens = max(longest, waited), opens + 1
    time.sleep(0.3)  # a pause, as between interactive searches: a reader that never pauses starves writers
print(f"{longest:.3f} {opens}")
"""


def base_warehouse() -> Path:
    from newsindex.flows.ingest import ingest

    db = OUT / "incremental-base.duckdb"
    if not db.exists():
        ingest(paths=[str(ROOT / "tests" / "data" / "corpus"), str(ROOT / "seeds")], db=str(db))
    return db


def big_warehouse(chunks: int) -> Path:
    from replicate import replicate

    db = OUT / f"incremental-{chunks}.duckdb"
    if not db.exists():
        print(f"copying the corpus into {db.name} …", flush=True)
        replicate(base_warehouse(), db.with_suffix(".building"), chunks)
        db.with_suffix(".building").rename(db)
    from newsindex.warehouse import connection, vector_file

    with connection.opened(db):  # a kept copy made by older code migrates here, once, not in each run
        pass
    # As an ingest that grew the warehouse would have left it (a run then appends to it).
    print(f"vector file of {db.name}: {vector_file.write(db)}", flush=True)
    return db


def timed_index():
    """Wrap the keyword index's entry points to add up their time (inside the write transactions)."""
    from newsindex.warehouse import keyword

    spent = {"index": 0.0}
    for name in ("add_documents", "remove_documents", "refresh"):
        original = getattr(keyword, name)

        def wrapper(*args, _original=original, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent["index"] += time.perf_counter() - started

        setattr(keyword, name, wrapper)
    return spent


def timed_copy():
    """Wrap the vector file's writer (warehouse/vector_file.py, after the writes) to time it."""
    from newsindex.warehouse import vector_file

    spent = {"copy": 0.0, "status": "-"}
    original = vector_file.write

    def write(*args, **kwargs):
        started = time.perf_counter()
        try:
            spent["status"] = original(*args, **kwargs)
            return spent["status"]
        finally:
            spent["copy"] += time.perf_counter() - started

    vector_file.write = write
    return spent


def timed_holds():
    """Wrap connection.opened to record how long each read-write opening holds the file, by caller."""
    import traceback
    from contextlib import contextmanager

    from newsindex.warehouse import connection

    holds: list[tuple[float, str]] = []
    original = connection.opened

    @contextmanager
    def opened(db, *, read_only=False, wait=None, dim=None):
        caller = traceback.extract_stack(limit=3)[0].name
        with original(db, read_only=read_only, wait=wait, dim=dim) as con:
            opened_at = time.perf_counter()
            yield con
        if not read_only:
            holds.append((time.perf_counter() - opened_at, caller))

    connection.opened = opened
    return holds


def run_once(size: int, articles: Path, work: Path, vector_file: bool = True) -> dict:
    from newsindex.flows.ingest import ingest

    db = work / f"run-{size}.duckdb"
    db.unlink(missing_ok=True)
    shutil.rmtree(db.with_name(db.name + ".vectors"), ignore_errors=True)
    if size:
        kept = big_warehouse(size)
        shutil.copy(kept, db)
        if vector_file:
            shutil.copytree(kept.with_name(kept.name + ".vectors"), db.with_name(db.name + ".vectors"))
        # The copies' dirty pages written back now: else the run's first fsync (the checkpoint,
        # the vector file's append) pays for gigabytes a real warehouse never has pending.
        os.sync()
    else:
        from newsindex.warehouse import connection

        with connection.opened(db):
            pass
    stop = work / f"stop-{size}"
    stop.unlink(missing_ok=True)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop)], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the reader is opening the file in its loop before the ingest starts
    spent = timed_index()
    copied = timed_copy()
    holds = timed_holds()
    try:
        started = time.perf_counter()
        summary = ingest(paths=[str(articles)], db=str(db), vector_file=vector_file)
        total = time.perf_counter() - started
    finally:
        stop.touch()  # the reader ends with the run, also a failed one
    longest, opens = reader.communicate(timeout=120)[0].split()
    index = spent["index"]
    return {
        "size": size, "total": total, "encode": summary["embed_seconds"], "write": summary["write_seconds"] - index,
        "index": index, "copy": copied["copy"], "copy_status": copied["status"], "lockout": float(longest), "reader_opens": int(opens), "added": summary["added"],
        "chunks": summary["chunks_embedded"], "longest_hold": max(holds, default=(0.0, "-")),
    }  # fmt: skip


def new_articles(folder: Path, count: int) -> Path:
    from corpus import write_text_corpus

    write_text_corpus(folder, count, seed=2011, tokens=600)
    return folder


def main(argv: list[str] | None = None, server: bool = True) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 200_000, 1_000_000])
    parser.add_argument("--articles", type=int, default=10)
    parser.add_argument("--no-vector-file", dest="vector_file", action="store_false",
                        help="Runs as `ingest --no-vector-file` (no copy of the vectors; by default each big warehouse has one, which the run appends to)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "incremental-runs"
    work.mkdir(exist_ok=True)
    articles = new_articles(OUT / f"incremental-new-{args.articles}", args.articles)
    if server:
        from ingest import prefect_server

        with prefect_server():
            rows = [run_once(size, articles, work, args.vector_file) for size in args.sizes]
    else:
        rows = [run_once(size, articles, work, args.vector_file) for size in args.sizes]
    print(f"\n{args.articles} new articles per run; seconds; lock-out = longest wait of a reader's read-only open")
    header = f"{'warehouse chunks':>16} {'total':>7} {'encode':>7} {'write':>7} {'index':>7} {'vectors':>7} {'lock-out':>8} {'opens':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        hold, caller = r["longest_hold"]
        print(f"{r['size']:>16,} {r['total']:7.2f} {r['encode']:7.2f} {r['write']:7.2f} {r['index']:7.2f} {r['copy']:7.2f} {r['lockout']:8.2f}"
              f" {r['reader_opens']:6d}   longest write hold {hold:.2f}s ({caller})")
    # The last run into an empty warehouse: the first run of the process also pays its warm-up.
    empties = [r["total"] for r in rows if r["size"] == 0]
    if empties:
        for r in rows:
            if r["size"]:
                print(f"into {r['size']:,} / into empty: {r['total'] / empties[-1]:.2f}x")
    print("vectors: the copy one-shot searches read (warehouse/vector_file.py), brought up to date after the writes: "
          + ", ".join(f"{r['size']:,}: {r['copy_status']}" for r in rows))
    for r in rows:
        for path in work.glob(f"run-{r['size']}.duckdb*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    main(server="PREFECT_API_URL" not in os.environ)  # a running server is used as it is
