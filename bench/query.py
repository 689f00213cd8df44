"""Search latency: warm (in-process) and cold (a new `newsindex search` process), per mode, with and
without a date filter, on the seed and on generated warehouses of 10k and 100k chunks.

    .venv/bin/python bench/query.py                 # seed, 10k, 100k
    .venv/bin/python bench/query.py --sizes 1000000 # bigger

Generated warehouses hold random unit vectors and random-word texts (the scan cost does not depend
on what the vectors mean); they are kept in bench/out/ and reused. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
NEWSINDEX = Path(sys.executable).with_name("newsindex")
WORDS = (
    "minister election flood council market police court hospital river storm budget bank school "
    "energy strike border vaccine airport festival museum railway harvest drought bridge factory "
    "protest treaty satellite volcano wildfire league transfer tariff ceasefire embassy warning"
).split()
QUERY = "who warned about the attack on the concert hall"
SINCE = dt.date(2025, 1, 1)
TOPICS = 1000


def build(db: Path, chunks: int, seed: int = 0) -> None:
    from newsindex.embedding import model_info
    from newsindex.warehouse import store
    import pyarrow as pa

    if db.exists():
        return
    rng = np.random.default_rng(seed)
    info = model_info()
    per_doc = 10
    docs = chunks // per_doc
    print(f"building {db.name}: {docs:,} documents, {chunks:,} chunks …", flush=True)
    tmp = db.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    con = store.connect(tmp)
    store.migrate(con)
    store.register_model(con, info.fingerprint, info.name, info.dim)
    dates = np.datetime64("2020-01-01") + rng.integers(0, 6 * 365, docs)
    now = dt.datetime.now()
    step = 20_000
    # Articles about one of TOPICS subjects: a chunk is its topic's centre plus noise (cosine ~0.7 to
    # the centre), so neighbours exist as in real embeddings and an approximate index has structure to use.
    centres = rng.standard_normal((TOPICS, info.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    doc_topic = rng.integers(0, TOPICS, docs)
    for start in range(0, chunks, step):
        n = min(step, chunks - start)
        doc_index = (np.arange(start, start + n) // per_doc)
        vectors = centres[doc_topic[doc_index]] + rng.standard_normal((n, info.dim), dtype=np.float32) / np.sqrt(info.dim)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [" ".join(rng.choice(WORDS, 40)) for _ in range(n)]
        chunk_table = pa.table({
            "chunk_id": [f"d{d}#{i % per_doc}" for d, i in zip(doc_index, range(start, start + n))],
            "doc_id": [f"d{d}" for d in doc_index],
            "ordinal": pa.array(np.arange(start, start + n) % per_doc, pa.int32()),
            "text": texts,
            "char_start": pa.array(np.zeros(n), pa.int32()),
            "char_end": pa.array([len(t) for t in texts], pa.int32()),
            "token_count": pa.array(np.full(n, 40), pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), info.dim),
            "model": [info.fingerprint] * n,
        })  # fmt: skip
        con.execute("INSERT INTO chunks BY NAME SELECT * FROM chunk_table")
    doc_vectors = rng.standard_normal((docs, info.dim), dtype=np.float32)
    doc_vectors /= np.linalg.norm(doc_vectors, axis=1, keepdims=True)
    doc_table = pa.table({
        "doc_id": [f"d{d}" for d in range(docs)],
        "source_path": [f"/bench/corpus/{d % 100}/d{d}.txt" for d in range(docs)],
        "format": ["txt"] * docs,
        "line": pa.array([None] * docs, pa.int32()),
        "title": [f"Generated article {d}" for d in range(docs)],
        "lead": ["generated"] * docs,
        "published": pa.array(dates.astype("datetime64[D]"), pa.date32()),
        "url": pa.array([None] * docs, pa.string()),
        "text": ["generated"] * docs,
        "content_hash": ["x"] * docs,
        "chunk_key": ["bench"] * docs,
        "doc_embedding": pa.FixedSizeListArray.from_arrays(pa.array(doc_vectors.ravel()), info.dim),
        "ingested_at": pa.array([now] * docs, pa.timestamp("us")),
        "updated_at": pa.array([now] * docs, pa.timestamp("us")),
    })  # fmt: skip
    con.execute("INSERT INTO documents BY NAME SELECT * FROM doc_table")
    store.refresh_search_index(con)
    con.execute("CHECKPOINT")
    con.close()
    tmp.rename(db)


def seed_warehouse(db: Path) -> None:
    if db.exists():
        return
    print("ingesting seeds/ …", flush=True)
    subprocess.run([str(NEWSINDEX), "ingest", str(ROOT / "seeds"), "--db", str(db), "--json"], check=True, capture_output=True)


def warm(db: Path, mode: str, filtered: bool, repeat: int = 15) -> tuple[float, float]:
    """(median ms per query in one open session, median ms when each query opens the file itself)."""
    from newsindex.queries.search import Filters, search
    from newsindex.queries.session import session

    filters = Filters(since=SINCE) if filtered else None
    search(db, QUERY, k=10, mode=mode, filters=filters)  # load the encoder once
    in_session, reopening = [], []
    with session(db) as con:
        search(con, QUERY, k=10, mode=mode, filters=filters)  # the file's pages into DuckDB's buffer
        for _ in range(repeat):
            started = time.perf_counter()
            hits = search(con, QUERY, k=10, mode=mode, filters=filters).hits
            in_session.append(time.perf_counter() - started)
    for _ in range(max(3, repeat // 3)):
        started = time.perf_counter()
        search(db, QUERY, k=10, mode=mode, filters=filters)
        reopening.append(time.perf_counter() - started)
    assert hits or filtered or mode == "keyword"
    return statistics.median(in_session) * 1000, statistics.median(reopening) * 1000


def cold(db: Path, mode: str, filtered: bool, repeat: int = 5) -> float:
    args = [str(NEWSINDEX), "search", QUERY, "-k", "10", "--mode", mode, "--db", str(db), "--json"]
    if filtered:
        args += ["--since", SINCE.isoformat()]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def approximate(db: Path, repeat: int = 50) -> str:
    """`search --ann` on `db`: index build time, warm latency (index lookup alone, and whole search()),
    and recall@10 against the exact scan for queries near stored passages, unfiltered and since SINCE."""
    from newsindex.queries import ann
    from newsindex.queries.search import Filters, search
    from newsindex.queries.session import session

    with session(db, keyword=False) as con:
        started = time.perf_counter()
        shutil.rmtree(ann.index_dir(db), ignore_errors=True)
        index = ann.open_index(con, db)
        built = time.perf_counter() - started
        search(con, QUERY, mode="semantic", ann=True)
        whole = []
        for _ in range(15):
            started = time.perf_counter()
            search(con, QUERY, mode="semantic", ann=True)
            whole.append(time.perf_counter() - started)
    rng = np.random.default_rng(1)
    vectors = np.asarray(index.vectors)
    since_days = (SINCE - dt.date(1970, 1, 1)).days
    lines = []
    for filtered in (False, True):
        allowed = index.published >= since_days if filtered else np.ones(len(vectors), bool)
        lookups, recall = [], []
        for _ in range(repeat):
            picked = vectors[rng.integers(len(vectors))] + rng.standard_normal(vectors.shape[1]).astype(np.float32) / np.sqrt(vectors.shape[1])
            query = (picked / np.linalg.norm(picked)).astype(np.float32)
            started = time.perf_counter()
            found = ann.nearest_chunks(index, query, 10, since=SINCE if filtered else None)
            lookups.append(time.perf_counter() - started)
            exact = set(index.chunk_ids[np.argsort(-np.where(allowed, vectors @ query, -np.inf))[:10]].tolist())
            recall.append(len(exact & {c for c, _ in found}) / 10)
        lines.append(f"{db.name:>22} {'since' if filtered else '-':>6} {built:8.1f} {statistics.median(lookups) * 1000:8.1f} {statistics.median(whole) * 1000:8.1f} {np.mean(recall):7.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("--ann", type=int, nargs="*", default=[], help="Sizes to measure --ann on (index build, latency, recall)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    targets = [] if args.no_seed else [("seed", OUT / "seed.duckdb")]
    targets += [(f"{n:,} chunks", OUT / f"query-{n}.duckdb") for n in args.sizes]
    for name, db in targets:
        seed_warehouse(db) if name == "seed" else build(db, int(name.split()[0].replace(",", "")))

    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sentence_transformers"], check=True, capture_output=True)
    naive_import = (time.perf_counter() - started) * 1000

    print(f"\n{dt.date.today()} · {platform.node()} · {os.cpu_count()} cores · {platform.processor() or platform.machine()}")
    print(f"query {QUERY!r}, top 10; filtered = published since {SINCE}; medians in ms")
    print(f"a new process that only imports sentence-transformers: {naive_import:,.0f} ms\n")
    print("warm: in-process, one open session; reopen: in-process, each query opens and closes the file;")
    print("cold: a new `newsindex search` process, as a user runs it\n")
    header = f"{'warehouse':>16} {'mode':>9} {'filter':>6} {'warm':>8} {'reopen':>8} {'cold':>8} {'cold/warm':>9}"
    print(header)
    print("-" * len(header))
    if args.ann:
        print(f"\n--ann: build s, index lookup ms, whole search() ms (with text fetch), recall@10 vs exact over 50 queries near stored passages")
        for n in args.ann:
            print(approximate(OUT / f"query-{n}.duckdb"), flush=True)
        print()
    for name, db in targets:
        for mode in ("semantic", "keyword", "hybrid"):
            for filtered in (False, True):
                w, r = warm(db, mode, filtered)
                c = cold(db, mode, filtered)
                print(f"{name:>16} {mode:>9} {'since' if filtered else '-':>6} {w:8.1f} {r:8.1f} {c:8.0f} {c / w:9.1f}", flush=True)


if __name__ == "__main__":
    main()
