"""The approximate index (`search --ann`) and the query vector handed to the exact SQL scan."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from newsindex.queries import ann
from newsindex.queries.search import Filters, search, vector_literal
from newsindex.warehouse import connection, schema

DIM = 384


def clustered(rng: np.random.Generator, n: int, topics: int) -> np.ndarray:
    centres = rng.standard_normal((topics, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    v = centres[rng.integers(0, topics, n)] + rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def synthetic_warehouse(path, vectors: np.ndarray, per_doc: int = 5) -> list[dt.date]:
    """Chunks with the given vectors, per_doc to an article, one article a day from 2020-01-01."""
    n = len(vectors)
    docs = (n + per_doc - 1) // per_doc
    dates = [dt.date(2020, 1, 1) + dt.timedelta(days=d) for d in range(docs)]
    con = connection.connect(path)
    schema.migrate(con)
    chunk_rows = pa.table({
        "chunk_id": [f"d{i // per_doc:05d}#{i % per_doc}" for i in range(n)],
        "doc_id": [f"d{i // per_doc:05d}" for i in range(n)],
        "ordinal": pa.array([i % per_doc for i in range(n)], pa.int32()),
        "text": [f"passage {i}" for i in range(n)],
        "char_start": pa.array([0] * n, pa.int32()),
        "char_end": pa.array([9] * n, pa.int32()),
        "token_count": pa.array([3] * n, pa.int32()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        "model": ["test"] * n,
    })  # fmt: skip
    document_rows = pa.table({
        "doc_id": [f"d{d:05d}" for d in range(docs)],
        "source_path": [f"/corpus/d{d}.txt" for d in range(docs)],
        "format": ["txt"] * docs,
        "title": [f"Article {d}" for d in range(docs)],
        "lead": [""] * docs,
        "published": dates,
        "text": ["x"] * docs,
        "content_hash": ["x"] * docs,
        "chunk_key": ["x"] * docs,
        "doc_embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(docs * DIM, np.float32)), DIM),
        "ingested_at": [dt.datetime(2025, 1, 1)] * docs,
        "updated_at": [dt.datetime(2025, 1, 1)] * docs,
    })  # fmt: skip
    con.execute("INSERT INTO chunks BY NAME SELECT * FROM chunk_rows")
    con.execute("INSERT INTO documents BY NAME SELECT * FROM document_rows")
    con.close()
    return dates


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> set[int]:
    scores = vectors @ query
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return set(np.argsort(-scores)[:k].tolist())


def row_of(chunk_id: str, per_doc: int = 5) -> int:
    doc, ordinal = chunk_id[1:].split("#")
    return int(doc) * per_doc + int(ordinal)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    rng = np.random.default_rng(7)
    vectors = clustered(rng, 6000, topics=60)
    path = tmp_path_factory.mktemp("ann") / "synthetic.duckdb"
    dates = synthetic_warehouse(path, vectors)
    con = duckdb.connect(str(path), read_only=True)
    index = ann.open_index(con, path)
    con.close()
    # Questions near stored passages (a query about some topic), not copies of them.
    picked = vectors[rng.integers(0, len(vectors), 40)] + rng.standard_normal((40, DIM)).astype(np.float32) / np.sqrt(DIM)
    queries = (picked / np.linalg.norm(picked, axis=1, keepdims=True)).astype(np.float32)
    return path, vectors, dates, index, queries


def test_recall_at_10_against_exact(synthetic):
    _, vectors, _, index, queries = synthetic
    assert len(index.centroids) > 4 * 8  # the probe below scores under a quarter of the lists
    recall = [len({row_of(c) for c, _ in ann.nearest_chunks(index, q, 10, nprobe=8)} & exact_top(vectors, q, 10)) / 10 for q in queries]
    assert np.mean(recall) >= 0.95
    # The scores are exact inner products of the stored vectors.
    found = ann.nearest_chunks(index, queries[0], 10)
    assert all(abs(score - float(vectors[row_of(c)] @ queries[0])) < 1e-5 for c, score in found)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


@pytest.mark.parametrize("days", [30, 600])
def test_date_filter_still_returns_k(synthetic, days):
    # 30 days (150 chunks) goes to the exact scan of the passing rows; 600 days probes until k pass.
    _, vectors, dates, index, queries = synthetic
    since = dates[0] + dt.timedelta(days=400)
    until = since + dt.timedelta(days=days - 1)
    per_row = np.repeat(np.array(dates, dtype="datetime64[D]"), 5)[: len(vectors)]
    allowed = (per_row >= np.datetime64(since)) & (per_row <= np.datetime64(until))
    for q in queries[:10]:
        found = ann.nearest_chunks(index, q, 10, since=since, until=until, nprobe=2)
        assert len(found) == 10
        assert all(allowed[row_of(c)] for c, _ in found)
    if days == 30:
        assert {row_of(c) for c, _ in ann.nearest_chunks(index, queries[0], 10, since=since, until=until)} == exact_top(vectors, queries[0], 10, allowed)
    assert ann.nearest_chunks(index, queries[0], 10, until=dt.date(1999, 1, 1)) == []


def test_index_is_rebuilt_when_the_chunks_change(tmp_path):
    path = tmp_path / "w.duckdb"
    vectors = clustered(np.random.default_rng(1), 200, topics=5)
    synthetic_warehouse(path, vectors)
    con = duckdb.connect(str(path), read_only=True)
    first = ann.open_index(con, path)
    assert ann.open_index(con, path) is first  # reused while nothing changed
    con.close()
    con = connection.connect(path)
    con.execute("DELETE FROM chunks WHERE doc_id = 'd00000'")
    con.execute("DELETE FROM documents WHERE doc_id = 'd00000'")
    con.close()
    con = duckdb.connect(str(path), read_only=True)
    second = ann.open_index(con, path)
    con.close()
    assert len(first.chunk_ids) == 200 and len(second.chunk_ids) == 195
    assert not any(c.startswith("d00000#") for c in second.chunk_ids.tolist())


def test_a_cache_of_another_layout_is_rebuilt(tmp_path):
    # The NumPy IVF's folder (before faiss) had the same state in meta.json and no ivf.faiss.
    import json

    path = tmp_path / "w.duckdb"
    synthetic_warehouse(path, clustered(np.random.default_rng(2), 200, topics=5))
    con = duckdb.connect(str(path), read_only=True)
    folder = ann.index_dir(path)
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"state": ann.warehouse_state(con), "chunks": 200, "lists": 14}))
    ann._open.clear()
    index = ann.open_index(con, path)
    con.close()
    assert len(index.chunk_ids) == 200 and (folder / "ivf.faiss").is_file()
    assert len(ann.nearest_chunks(index, index.vectors[0], 10)) == 10


def test_ann_on_a_small_warehouse_equals_the_exact_search(search_db):
    # Fewer lists than NPROBE: every vector is scored, so the answer is the exact one.
    query = "Putin dismissed the warning before the Crocus attack"
    for filters in (None, Filters(since=dt.date(2025, 1, 1))):
        exact = search(search_db, query, k=5, mode="semantic", filters=filters)
        approximate = search(search_db, query, k=5, mode="semantic", filters=filters, ann=True)
        assert approximate.warnings == [] and len(approximate.hits) == 5
        assert [h.chunk_id for h in approximate.hits] == [h.chunk_id for h in exact.hits]
        assert [h.text for h in approximate.hits] == [h.text for h in exact.hits]
        assert [h.score for h in approximate.hits] == pytest.approx([h.score for h in exact.hits], abs=1e-5)
    # Where it does not apply, the exact scan answers and says so.
    per_doc = search(search_db, query, k=3, mode="semantic", per_doc=True, ann=True)
    assert per_doc.warnings and len({h.doc_id for h in per_doc.hits}) == 3


def test_vector_literal_reads_back_as_the_same_float32():
    vectors = np.random.default_rng(3).standard_normal((50, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    con = duckdb.connect()
    for v in vectors:
        back = np.array(con.execute("SELECT CAST($v AS FLOAT[384])", {"v": vector_literal(v)}).fetchone()[0], dtype=np.float32)
        assert np.array_equal(back, v)


# Several first searches at once, each a process of its own: one builds, the others wait and load.
_SEARCH_CHILD = """
import sys, duckdb, numpy as np
from pathlib import Path
from newsindex.queries import ann
from newsindex.warehouse.connection import WarehouseError
path = Path(sys.argv[1])
con = duckdb.connect(str(path), read_only=True)
try:
    index = ann.open_index(con, path)
except WarehouseError as err:  # what the CLI prints as `Error: ...`
    sys.exit(f"Error: {err}")
query = index.vectors[0]
print(len(index.chunk_ids), *[c for c, _ in ann.nearest_chunks(index, query, 5)])
"""


def _search_children(path, count: int, **kwargs):
    import subprocess
    import sys

    children = [subprocess.Popen([sys.executable, "-c", _SEARCH_CHILD, str(path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, **kwargs) for _ in range(count)]  # fmt: skip
    return [(child.wait(timeout=600), *child.communicate()) for child in children]


def test_concurrent_first_searches_build_one_index_and_all_answer(tmp_path):
    path = tmp_path / "w.duckdb"
    synthetic_warehouse(path, clustered(np.random.default_rng(5), 20_000, topics=40))
    results = _search_children(path, 4)
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, err
    assert len({out for _, out, _ in results}) == 1, "every search must see the same index"
    assert results[0][1].split()[0] == "20000"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb", "w.duckdb.ann", "w.duckdb.ann.lock"]


def test_a_read_only_folder_is_one_clear_line(tmp_path):
    import os

    from test_prune import _without_file_permission_override

    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "w.duckdb"
    synthetic_warehouse(path, clustered(np.random.default_rng(6), 300, topics=5))
    folder.chmod(0o555)
    try:
        kwargs = {"preexec_fn": _without_file_permission_override} if os.geteuid() == 0 else {}
        [(code, out, err)] = _search_children(path, 1, **kwargs)
    finally:
        folder.chmod(0o755)
    assert code == 1 and "Traceback" not in err, err
    assert err.strip() == (
        f"Error: {path}.ann: cannot build the --ann index beside the warehouse (Permission denied);"
        " search without --ann, or make the folder writable"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["w.duckdb"]
