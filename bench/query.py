"""Search latency: warm (in-process) and cold (a new `newsindex search` process), per mode, with and
without a date filter, on the seed and on generated warehouses; --ann latency and recall@10.

    .venv/bin/python bench/query.py          # everything: seed, 10k, 100k, 200k, 1M; --ann at 200k, 1M
    .venv/bin/python bench/query.py --sizes 10000 100000 --ann   # a quick subset

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
# Chunk texts follow a Zipf law over a vocabulary whose head is the words of the labelled corpus
# (most frequent first) and whose tail is made-up words, so that postings lists have the skew of
# real text: a few words in most chunks, most words in a handful (the keyword index's real cost).
TAIL_WORDS = 200_000
CHUNK_WORDS = 80
QUERY = "who warned about the attack on the concert hall"
SINCE = dt.date(2025, 1, 1)
TOPICS = 1000


def build(db: Path, chunks: int, seed: int = 0) -> None:
    from newsindex.embedding import model_info
    from newsindex.warehouse import connection, documents, keyword, schema
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
    con = connection.connect(tmp)
    schema.migrate(con)
    documents.register_model(con, info.fingerprint, info.name, info.dim)
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
        texts = chunk_texts(rng, n)
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
    keyword.refresh_search_index(con)
    con.execute("CHECKPOINT")
    con.close()
    tmp.rename(db)


def vocabulary() -> np.ndarray:
    import re
    from collections import Counter

    corpus = [*(ROOT / "tests" / "data" / "corpus").glob("*.txt"), *(ROOT / "seeds").glob("*.txt")]
    counts = Counter(w.lower() for path in corpus for w in re.findall(r"[^\W_]+", path.read_text(encoding="utf-8")))
    head = [w for w, _ in counts.most_common()]
    return np.array(head + [f"x{i}" for i in range(TAIL_WORDS)])


_VOCABULARY: list[np.ndarray] = []


def chunk_texts(rng: np.random.Generator, n: int) -> list[str]:
    if not _VOCABULARY:
        _VOCABULARY.append(vocabulary())
    words = _VOCABULARY[0]
    ranks = (rng.zipf(1.15, (n, CHUNK_WORDS)) - 1) % len(words)
    return [" ".join(row) for row in words[ranks]]


def seed_warehouse(db: Path) -> None:
    if db.exists():
        return
    print("ingesting seeds/ …", flush=True)
    subprocess.run([str(NEWSINDEX), "ingest", str(ROOT / "seeds"), "--db", str(db), "--json"], check=True, capture_output=True)


def warm(con, db: Path, mode: str, filtered: bool, repeat: int = 15):
    """Median ms per query: in the open session `con` from memory (queries/warm.py for semantic,
    warm_keyword.py for keyword, warm_hybrid.py for hybrid) and in the
    session through SQL; with con None, when each query opens the file itself."""
    from newsindex.queries.search import Filters, search

    filters = Filters(since=SINCE) if filtered else None

    def timed(target, in_memory: bool, times: int) -> float:
        search(target, QUERY, k=10, mode=mode, filters=filters, in_memory=in_memory)  # pages / vectors in
        spent, cpu = [], []
        for _ in range(times):
            started, started_cpu = time.perf_counter(), time.process_time()
            hits = search(target, QUERY, k=10, mode=mode, filters=filters, in_memory=in_memory).hits
            spent.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        assert hits or filtered or mode == "keyword"
        CPU[target is con, in_memory] = statistics.median(cpu) * 1000
        return statistics.median(spent) * 1000

    if con is None:  # no session open: DuckDB would share the open one's buffers with the reopen
        return timed(db, False, max(3, repeat // 3))
    return timed(con, True, repeat), timed(con, False, repeat if "1000000" not in db.name else 5)


def resident_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def cpu_line() -> str:
    """The CPU model and the vector extensions NumPy and DuckDB can use (Linux: /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cpu: unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16") if f in flags]
    return f"cpu: {model}; flags: {' '.join(wanted)}"


# CPU seconds (all of this process's threads) of the last warm() call's medians, by (session, in memory):
# on a shared machine they move far less with the load than wall-clock time does.
CPU: dict = {}


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


def approximate(db: Path, rebuild: bool, repeat: int = 50) -> str:
    """`search --ann` on `db`: index open time (build + load with --rebuild-ann, else load from
    disk), warm latency (index lookup alone, and whole search() with embedding and text fetch), and
    recall@10 against the exact scan for queries near stored passages, unfiltered and since SINCE."""
    from newsindex.queries import ann
    from newsindex.queries.search import search
    from newsindex.queries.session import session

    with session(db, keyword=False) as con:
        started = time.perf_counter()
        if rebuild:
            shutil.rmtree(ann.index_dir(db), ignore_errors=True)
        ann._open.clear()
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
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 200_000, 1_000_000])
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("--ann", type=int, nargs="*", default=[200_000, 1_000_000], help="Sizes to measure --ann on (latency, recall)")
    parser.add_argument("--rebuild-ann", action="store_true", help="Build the --ann indexes afresh and time it (minutes at 1M)")
    parser.add_argument("--cold", type=int, nargs="*", default=[100_000, 1_000_000], help="Sizes (besides the seed) to time cold CLI runs on")
    parser.add_argument("--no-vector-file", type=int, nargs="*", default=[],
                        help="Sizes whose cold searches find no vector file, as after `ingest --no-vector-file` (others: one, as after any ingest)")
    parser.add_argument("--modes", nargs="+", choices=["semantic", "keyword", "hybrid"], default=["semantic", "keyword", "hybrid"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    targets = [] if args.no_seed else [("seed", OUT / "seed.duckdb")]
    targets += [(f"{n:,} chunks", OUT / f"query-{n}.duckdb") for n in args.sizes]
    for name, db in targets:
        seed_warehouse(db) if name == "seed" else build(db, int(name.split()[0].replace(",", "")))
    # What an ingest leaves beside a warehouse for one-shot searches (`--no-vector-file`: removes).
    from newsindex.warehouse import vector_file

    copies = []
    for name, db in targets:
        started = time.perf_counter()
        chunks = 0 if name == "seed" else int(name.split()[0].replace(",", ""))
        status = vector_file.remove(db) if chunks in args.no_vector_file else vector_file.write(db)
        copies.append(f"{name}: {status} in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sentence_transformers"], check=True, capture_output=True)
    naive_import = (time.perf_counter() - started) * 1000

    print(f"\n{dt.date.today()} · {platform.node()} · {os.cpu_count()} cores · {platform.processor() or platform.machine()}")
    print(cpu_line())
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"query {QUERY!r}, top 10; filtered = published since {SINCE}; medians in ms")
    print(f"a new process that only imports sentence-transformers: {naive_import:,.0f} ms")
    print(f"vector file (warehouse/vector_file.py, kept by every ingest; cold searches read it): {'; '.join(copies)}\n")
    if args.ann:
        print(f"--ann: open s ({'build + load' if args.rebuild_ann else 'load from disk'}), index lookup ms, whole search() ms"
              " (embedding + lookup + text fetch), recall@10 vs exact over 50 queries near stored passages")
        for n in args.ann:
            print(approximate(OUT / f"query-{n}.duckdb", args.rebuild_ann), flush=True)
        print()
    print("memory: warm, from vectors and postings in memory (semantic: queries/warm.py; keyword: warm_keyword.py;")
    print("hybrid: warm_hybrid.py, both sides' candidates fused as hybrid_search.sql does); sql: the same session, via the mode's")
    print("query; reopen: each query opens and closes the file (SQL); cold: a new `newsindex search` process, as a")
    print("user runs it; mem cpu / sql cpu: CPU ms of this process (all threads) for memory / sql, medians;")
    print("load s: reading the passages / the vectors / the postings into memory\n")
    header = f"{'warehouse':>16} {'mode':>9} {'filter':>6} {'memory':>8} {'sql':>8} {'reopen':>8} {'cold':>8} {'mem cpu':>8} {'sql cpu':>8}"
    print(header)
    print("-" * len(header))
    from newsindex.queries import warm as warm_module, warm_keyword
    from newsindex.queries.search import search
    from newsindex.queries.session import session

    cases = [(mode, filtered) for mode in args.modes for filtered in (False, True)]
    for name, db in targets:
        with session(db) as con:
            started, rss = time.perf_counter(), resident_bytes()
            store = warm_module.passages_for(con)
            passages_load, passages_rss = time.perf_counter() - started, resident_bytes() - rss
            started = time.perf_counter()
            if "semantic" in args.modes:
                search(con, QUERY, mode="semantic")
            load = time.perf_counter() - started
            started, rss = time.perf_counter(), resident_bytes()
            postings = warm_keyword.postings_for(con) if {"keyword", "hybrid"} & set(args.modes) else None
            postings_load, postings_rss = time.perf_counter() - started, resident_bytes() - rss
            in_session, cpu = {}, {}
            for case in cases:
                in_session[case] = warm(con, db, *case)
                cpu[case] = (CPU.get((True, True)), CPU.get((True, False)))
        warm_module._cache.clear()  # free the matrix before the next warehouse
        warm_keyword._cache.clear()
        warm_module._passages.clear()
        big = "1000000" in db.name  # no reopen at 1M: each one reads 1.5 GB of vectors into DuckDB again
        for mode, filtered in cases:
            m, w = in_session[mode, filtered]
            r = warm(None, db, mode, filtered) if not big else None
            c = cold(db, mode, filtered) if name == "seed" or int(name.split()[0].replace(",", "")) in args.cold else None
            cells = [f"{v:8.1f}" if v is not None else f"{'':>8}" for v in (m, w, r)] + [f"{c:8.0f}" if c is not None else f"{'':>8}"]
            cells += [f"{v:8.1f}" if v is not None else f"{'':>8}" for v in cpu[mode, filtered]]
            print(f"{name:>16} {mode:>9} {'since' if filtered else '-':>6} {' '.join(cells)}", flush=True)
        print(f"{name:>16} passages into memory: {passages_load:.1f} s, {store.texts.nbytes / 2**20:,.0f} MiB of text"
              f" (resident set grew {passages_rss / 2**20:,.0f} MiB)", flush=True)
        del store
        if "semantic" in args.modes:
            print(f"{name:>16} first warm query (reads the vectors into memory): {load:.1f} s", flush=True)
        if postings is not None:
            print(f"{name:>16} postings into memory: {postings_load:.1f} s, {len(postings.rows):,} postings,"
                  f" {postings.nbytes / 2**20:,.0f} MiB held (resident set grew {postings_rss / 2**20:,.0f} MiB)", flush=True)
            del postings


if __name__ == "__main__":
    main()
