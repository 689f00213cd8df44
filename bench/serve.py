"""`newsindex serve` under load: a real server process on 127.0.0.1, N concurrent HTTP clients for
S seconds (default 20 and 20), then p50/p95 latency and errors per search mode; and warm
single-client latency of /api/search (the issue's bound: p50 <= 30 ms at 100k chunks).

    .venv/bin/python bench/serve.py --db warehouse/newsindex.duckdb          # the given warehouse
    .venv/bin/python bench/serve.py --chunks 100000                          # a generated one (bench/query.py)
    .venv/bin/python bench/serve.py --chunks 100000 --clients 20 --seconds 20 --modes semantic hybrid

Not a test: it prints numbers, and exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
NEWSINDEX = Path(sys.executable).with_name("newsindex")
QUERIES = [
    "who warned about the attack on the concert hall", "flood", "interest rates and inflation",
    "election recount", "museum theft", "wildfire evacuation", "minister resigns after protest",
    "new metro line opens", "volcano eruption ash cloud", "striker transfer fee", "drought harvest",
    "hospital data breach", "chip factory investment", "storm damage bridge", "court ruling on border",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(db: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([str(NEWSINDEX), "serve", "--db", str(db), "--port", str(port)], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"newsindex serve exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{base}/api/stats", timeout=60).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    sys.exit("newsindex serve did not answer within 300 s")


def warm_latency(base: str, mode: str, repeat: int = 40) -> tuple[float, float, float]:
    """p50 and p95 of one client's sequential searches, and the server's own median took_ms."""
    spent, took = [], []
    with httpx.Client(base_url=base, timeout=60) as client:
        for i in range(repeat + 5):
            started = time.perf_counter()
            response = client.get("/api/search", params={"q": QUERIES[i % len(QUERIES)], "k": 10, "mode": mode})
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if i >= 5:  # the first few warm the encoder and DuckDB's caches
                spent.append(elapsed)
                took.append(response.json()["took_ms"])
    spent.sort()
    return statistics.median(spent) * 1000, spent[int(0.95 * len(spent)) - 1] * 1000, statistics.median(took)


def in_process(db: Path, mode: str, repeat: int = 40) -> float:
    """Median ms of Index.search in this process (no HTTP), for the server's overhead by ratio."""
    from newsindex import Index

    with Index(db) as index:
        spent = []
        for i in range(repeat + 5):
            started = time.perf_counter()
            index.search(QUERIES[i % len(QUERIES)], k=10, mode=mode)
            if i >= 5:
                spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1000


def load(base: str, mode: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def client(number: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            i = number
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    response = http.get("/api/search", params={"q": QUERIES[i % len(QUERIES)], "k": 10, "mode": mode})
                    ok = response.status_code == 200
                    if not ok:
                        errors.append(f"{response.status_code} {response.text[:120]}")
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "per_second": len(latencies) / wall,
        "p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p95": latencies[max(0, int(0.95 * len(latencies)) - 1)] * 1000 if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="Warehouse to serve (default: a generated one of --chunks)")
    parser.add_argument("--chunks", type=int, default=100_000, help="Size of the generated warehouse (bench/query.py's build)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--modes", nargs="*", default=["semantic", "hybrid", "keyword"])
    parser.add_argument("--in-process", action="store_true", help="Also time Index.search without HTTP, in this process, after the server runs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    db = args.db
    if db is None:
        sys.path.insert(0, str(ROOT / "bench"))
        import query

        query.OUT.mkdir(parents=True, exist_ok=True)
        db = query.OUT / f"query-{args.chunks}.duckdb"
        query.build(db, args.chunks)
    started = time.perf_counter()
    process, base = start(db)
    print(f"serving {db} ({httpx.get(f'{base}/api/stats', timeout=60).json()['chunks']:,} chunks), ready after {time.perf_counter() - started:.1f} s")
    failed = False
    try:
        print(f"{'mode':>9} {'1 client p50':>13} {'p95':>7} {'server':>7} | {args.clients} clients x {args.seconds:g} s: {'req/s':>6} {'p50':>7} {'p95':>7} errors")
        for mode in args.modes:
            p50, p95, took = warm_latency(base, mode)
            result = load(base, mode, args.clients, args.seconds)
            failed |= bool(result["errors"])
            print(f"{mode:>9} {p50:10.1f} ms {p95:7.1f} {took:7.1f} | {'':>{len(str(args.clients)) + 19}}"
                  f"{result['per_second']:6.1f} {result['p50']:7.0f} {result['p95']:7.0f} {len(result['errors'])}")  # fmt: skip
            for error in result["errors"][:3]:
                print(f"    {error}")
    finally:
        process.terminate()
        process.wait(timeout=30)
    if args.in_process:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")  # as the server runs
        for mode in args.modes:
            print(f"{mode:>9} Index.search in-process, no HTTP: p50 {in_process(db, mode):.1f} ms")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
