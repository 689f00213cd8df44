"""`--ann` (queries/ann.py) against the kept libraries that could replace it (issue 10 item 6), in
one run on the same vectors: build time, query latency p50 (one thread each), recall@10 against
the exact top 10, and how many of k=10 results come back under a published-date filter that keeps
1 %, 10 % and 50 % of the chunks (the guarantee `--ann` makes: k results whenever k chunks pass).

    .venv/bin/python bench/ann_libraries.py                  # 100k chunks
    .venv/bin/python bench/ann_libraries.py --chunks 20000   # quick

Candidates:
- queries/ann.py as shipped, built through its public open_index() from a DuckDB file (its build
  time includes reading the chunks from DuckDB and writing the cache; the others' do not);
- DuckDB's vss extension: an HNSW index on the array column, queried with
  WHERE ... ORDER BY array_negative_inner_product(...) LIMIT k;
- usearch HNSW: its Python search() takes no filter, so k*10 are fetched and filtered after;
- faiss HNSWFlat with an IDSelectorRange in SearchParametersHNSW;
- faiss IVFFlat with an IDSelectorRange at nprobe 32 and nothing more ("raw"): queries/ann.py is
  this plus its rule for k (every list when few chunks pass, otherwise nprobe doubled until k pass).
  Before issue 10 queries/ann.py was an IVF of its own in NumPy; bench/RESULTS.md has both.

usearch and the vss extension are not dependencies of newsindex (faiss-cpu is): a candidate whose
library is missing is one line; `pip install usearch==2.26.6 duckdb-extension-vss==1.5.5` adds them.

Vectors are generated: 1000 topics, each chunk its topic's centre plus noise (cosine ~0.7 to it), five
chunks to an article and one article a day, so a date window is a contiguous run of rows unrelated
to the topics. Queries are stored vectors plus the same noise. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits

DIM = 384
K = 10
PER_DOC = 5
EPOCH = dt.date(1970, 1, 1)
FIRST_DAY = dt.date(2000, 1, 1)


def cpu() -> str:
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(f for f in wanted if f in flags) or '-'}"


def data(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = 1 / np.sqrt(DIM)
    v = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM)).astype(np.float32) * noise
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = v[rng.integers(0, n, queries)] + rng.standard_normal((queries, DIM)).astype(np.float32) * noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    days = ((FIRST_DAY - EPOCH).days + np.arange(n) // PER_DOC).astype(np.int32)
    return v.astype(np.float32), q.astype(np.float32), days


def windows(days: np.ndarray) -> dict[str, tuple[int, int]]:
    """Date windows (first, last day, inclusive) keeping about 1 %, 10 % and 50 % of the chunks."""
    span = int(days[-1] - days[0]) + 1
    start = int(days[0]) + span // 4
    return {f"{p}%": (start, start + max(1, span * p // 100) - 1) for p in (1, 10, 50)}


def exact(vectors: np.ndarray, days: np.ndarray, q: np.ndarray, window: tuple[int, int] | None) -> list[int]:
    scores = vectors @ q
    if window:
        scores = np.where((days >= window[0]) & (days <= window[1]), scores, -np.inf)
    top = np.argsort(-scores)[:K]
    return [int(i) for i in top if np.isfinite(scores[i])]


# --- candidates: each is build(vectors, days) -> search(q, window) -> list of row numbers ---------


def ours(vectors, days, folder: Path):
    from newsindex.queries import ann

    db = folder / "ours.duckdb"
    n = len(vectors)
    con = duckdb.connect(str(db))
    chunk_rows = pa.table({
        "chunk_id": [f"{i:08d}" for i in range(n)],
        "doc_id": [f"{i // PER_DOC:08d}" for i in range(n)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
    })  # fmt: skip
    doc_rows = pa.table({
        "doc_id": [f"{d:08d}" for d in range((n + PER_DOC - 1) // PER_DOC)],
        "published": pa.array(days[::PER_DOC].astype("datetime64[D]")),
        "updated_at": [dt.datetime(2025, 1, 1)] * ((n + PER_DOC - 1) // PER_DOC),
    })  # fmt: skip
    con.execute(f"CREATE TABLE chunks (chunk_id VARCHAR, doc_id VARCHAR, embedding FLOAT[{DIM}])")
    con.execute("INSERT INTO chunks SELECT * FROM chunk_rows")
    con.execute("CREATE TABLE documents AS SELECT * FROM doc_rows")
    con.close()
    con = duckdb.connect(str(db), read_only=True)
    started = time.perf_counter()
    index = ann.open_index(con, db)
    built = time.perf_counter() - started
    con.close()

    def search(q, window):
        since, until = (None, None) if window is None else (EPOCH + dt.timedelta(days=window[0]), EPOCH + dt.timedelta(days=window[1]))
        return [int(c) for c, _ in ann.nearest_chunks(index, q, K, since, until)]

    return built, search


def vss(vectors, days, folder: Path):
    from newsindex.warehouse import connection

    con = duckdb.connect()
    connection.load_extension(con, "vss")
    rows = pa.table({"row": pa.array(np.arange(len(vectors)), pa.int64()), "day": days,
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)})  # fmt: skip
    con.execute(f"CREATE TABLE t (row BIGINT, day INTEGER, embedding FLOAT[{DIM}])")
    con.execute("INSERT INTO t SELECT * FROM rows")
    started = time.perf_counter()
    con.execute("CREATE INDEX t_hnsw ON t USING HNSW (embedding) WITH (metric = 'ip')")
    built = time.perf_counter() - started
    con.execute("SET threads = 1")
    sql = (f"SELECT row FROM t WHERE day BETWEEN $lo AND $hi"
           f" ORDER BY array_negative_inner_product(embedding, $q::FLOAT[{DIM}]) LIMIT {K}")  # fmt: skip
    plan = con.execute("EXPLAIN " + sql, {"lo": 0, "hi": 1 << 30, "q": vectors[0].tolist()}).fetchall()
    assert "HNSW_INDEX_SCAN" in str(plan), "vss did not use its index"

    def search(q, window):
        lo, hi = window or (-(1 << 31), (1 << 31) - 1)
        return [r for (r,) in con.execute(sql, {"lo": lo, "hi": hi, "q": q.tolist()}).fetchall()]

    return built, search


def usearch_hnsw(vectors, days, folder: Path):
    from usearch.index import Index

    index = Index(ndim=DIM, metric="ip", dtype="f32")
    started = time.perf_counter()
    index.add(np.arange(len(vectors)), vectors, threads=os.cpu_count() or 1)
    built = time.perf_counter() - started

    def search(q, window):
        if window is None:
            return [int(i) for i in index.search(q, K, threads=1).keys]
        found = index.search(q, K * 10, threads=1).keys
        return [int(i) for i in found if window[0] <= days[i] <= window[1]][:K]

    return built, search


def _range(days, window):
    """Rows are in date order, so a window is one range of ids [lo, hi)."""
    return int(np.searchsorted(days, window[0], "left")), int(np.searchsorted(days, window[1], "right"))


def faiss_hnsw(vectors, days, folder: Path):
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    index.add(vectors)
    built = time.perf_counter() - started
    faiss.omp_set_num_threads(1)

    def search(q, window):
        params = faiss.SearchParametersHNSW(efSearch=64)
        if window:
            selector = faiss.IDSelectorRange(*_range(days, window))
            params.sel = selector
        _, ids = index.search(q[None], K, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    return built, search


def faiss_ivf(vectors, days, folder: Path):
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    lists = max(1, int(np.sqrt(len(vectors))))
    quantizer = faiss.IndexFlatIP(DIM)
    index = faiss.IndexIVFFlat(quantizer, DIM, lists, faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    sample = vectors[np.random.default_rng(0).choice(len(vectors), size=min(len(vectors), 40 * lists), replace=False)]
    index.train(sample)
    index.add(vectors)
    built = time.perf_counter() - started
    faiss.omp_set_num_threads(1)

    def search(q, window):
        params = faiss.SearchParametersIVF(nprobe=min(32, lists))
        if window:
            selector = faiss.IDSelectorRange(*_range(days, window), True)
            params.sel = selector
        _, ids = index.search(q[None], K, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    return built, search


CANDIDATES = {
    "queries/ann.py": ours,
    "duckdb vss HNSW": vss,
    "usearch HNSW (fetch 10k, filter)": usearch_hnsw,
    "faiss HNSWFlat + IDSelector": faiss_hnsw,
    "faiss IVFFlat + IDSelector, raw": faiss_ivf,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--only", nargs="*", help="names (substrings) of the candidates to run")
    args = parser.parse_args()
    print(f"cpu: {cpu()}; load average {os.getloadavg()[0]:.1f}")
    print(f"duckdb {duckdb.__version__}; {args.chunks} chunks of {DIM} dims, {args.queries} queries, k={K}")
    vectors, queries, days = data(args.chunks, args.queries)
    spans = windows(days)
    truth = {name: [exact(vectors, days, q, w) for q in queries] for name, w in [("all", None), *spans.items()]}
    header = f"{'candidate':42} {'build s':>8} {'p50 ms':>7} {'recall':>6}" + "".join(
        f" | {name:>4} k/p50 ms/recall" for name in spans)  # fmt: skip
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="ann-bench-") as tmp:
        for name, make in CANDIDATES.items():
            if args.only and not any(part in name for part in args.only):
                continue
            with threadpool_limits(limits=1):
                try:
                    built, search = make(vectors, days, Path(tmp))
                except ModuleNotFoundError as missing:
                    print(f"{name:42} not installed ({missing.name})", flush=True)
                    continue
                cells = []
                for label, window in [("all", None), *spans.items()]:
                    times, counts, recalls = [], [], []
                    for q, expected in zip(queries, truth[label]):
                        started = time.perf_counter()
                        found = search(q, window)
                        times.append((time.perf_counter() - started) * 1000)
                        counts.append(len(found))
                        recalls.append(len(set(found) & set(expected)) / len(expected))
                        if window:
                            assert all(window[0] <= days[i] <= window[1] for i in found), name
                    cells.append((min(counts), statistics.median(times), statistics.mean(recalls)))
            (_, p50, recall), *filtered = cells
            row = f"{name:42} {built:8.2f} {p50:7.2f} {recall:6.3f}"
            row += "".join(f" | {count:>2}/{k:<2} {ms:7.2f} {r:6.3f}  " for count, ms, r in filtered for k in [K])
            print(row, flush=True)
    print(f"k/: the fewest results any query got of k={K}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
