"""Scale-out benchmark (issue 15): the same generated corpus through the in-process flow and through
a local Dask cluster of 1 and 2 worker processes (one thread each), in one run.

    .venv/bin/python bench/scaleout.py [--articles 200]

Prints the CPU, tokens/s of each way, the ratios to in-process, and the cost per part (encode time
per part on the workers, shard load time per part in the writer). Expected throughput at 4, 16
and 64 workers is worked out from these figures in bench/RESULTS.md, not here.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import write_text_corpus  # noqa: E402
from ingest import prefect_server  # noqa: E402


def cpu() -> str:
    model, flags = platform.processor() or "?", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"]
    return f"{model}; {', '.join(f for f in wanted if f in flags) or 'no AVX2'}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=200)
    parser.add_argument("--part-chars", type=int, default=400_000)
    args = parser.parse_args()
    print(f"CPU: {cpu()}")
    folder = Path(tempfile.gettempdir()) / f"newsindex-bench-dask-{args.articles}"
    write_text_corpus(folder, args.articles)
    rows = []
    with prefect_server():
        # Imported once the server runs: Prefect reads PREFECT_API_URL when it is first imported.
        from newsindex.flows.ingest import ingest

        for label, workers in (("in-process", 0), ("1 worker", 1), ("2 workers", 2)):
            db = Path(tempfile.mkdtemp(prefix="newsindex-dask-")) / "bench.duckdb"
            started = time.perf_counter()
            summary = ingest(paths=[str(folder)], db=str(db), workers=workers, part_chars=args.part_chars)
            seconds = time.perf_counter() - started
            parts = summary.get("cluster", {}).get("parts", 0)
            rows.append((label, summary["tokens_embedded"], seconds, parts, summary["embed_seconds"], summary["write_seconds"]))
    base = rows[0][1] / rows[0][2]
    print(f"{'run':<11} {'tokens':>9} {'seconds':>8} {'tokens/s':>9} {'vs in-process':>13} {'parts':>5} {'encode/part':>11} {'load/part':>9}")
    for label, tokens, seconds, parts, embed, write in rows:
        rate = tokens / seconds
        per_part = f"{embed / parts:.2f} s" if parts else "-"
        load = f"{write / parts:.2f} s" if parts else "-"
        print(f"{label:<11} {tokens:>9} {seconds:>8.1f} {rate:>9.0f} {rate / base:>12.2f}x {parts:>5} {per_part:>11} {load:>9}")


if __name__ == "__main__":
    main()
