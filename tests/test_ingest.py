"""The ingest flow end to end: real files, the real model, a real DuckDB file, Prefect's test server."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest
from conftest import SEED_FILE, SEEDS, rows, write

from newsindex.articles import path_doc_id



def test_seeds_end_to_end(ingest, db):
    summary = ingest(SEEDS)
    assert summary["status"] == "completed"
    assert (summary["seen"], summary["added"], summary["failed"]) == (1, 1, 0)
    assert summary["chunks_embedded"] >= 4
    from newsindex.embedding import choose_runtime

    assert (summary["precision"], summary["runtime"]) == ("exact", choose_runtime())

    doc_id = path_doc_id(SEED_FILE)
    (title, published, lead, text, source) = rows(db, "SELECT title, published, lead, text, source_path FROM documents")[0]
    assert (title, str(published), source) == ("Crocus city hall warning", "2024-03-23", str(SEED_FILE.resolve()))
    chunks = rows(db, "SELECT doc_id, ordinal, text, char_start, char_end, token_count, embedding, model FROM chunks ORDER BY ordinal")
    assert len(chunks) == summary["chunks_embedded"]
    for i, (cid, ordinal, chunk, start, end, tokens, vector, model) in enumerate(chunks):
        assert (cid, ordinal) == (doc_id, i)
        assert text[start:end] == chunk
        assert 0 < tokens <= 128
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-4
    assert rows(db, "SELECT name, dim FROM models WHERE fingerprint = ?", [chunks[0][7]]) == [("sentence-transformers/all-MiniLM-L6-v2", 384)]

    # The stored vector is the model's embedding of the stored chunk text, to the bound of the
    # runtime this CPU chose (README: 0.9999 for exact fp32 runtimes, 0.999 for bf16 ones).
    from newsindex.embedding import load_encoder

    fresh = load_encoder("torch-fp32").encode([chunks[1][2]])[0]
    bound = 0.999 if summary["runtime"].endswith("bf16") else 0.9999
    assert float(np.dot(fresh, np.asarray(chunks[1][6]))) > bound, summary["runtime"]

    run = rows(db, "SELECT status, seen, added, chunks_embedded, flow_run_id, total_seconds FROM ingest_runs")
    assert run[0][:4] == ("completed", 1, 1, len(chunks))
    assert run[0][4] and run[0][5] > 0
    shown = _artifact_rows(run[0][4])
    assert (shown["added"], shown["runtime"], shown["precision"]) == ("1", summary["runtime"], "exact")


def _artifact_rows(flow_run_id: str) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )

    artifacts = asyncio.run(read())
    assert [a.key for a in artifacts] == ["ingest-summary"]
    import json

    data = artifacts[0].data
    table = json.loads(data) if isinstance(data, str) else data
    return {str(r["measure"]): str(r["value"]) for r in table}


def test_second_run_embeds_nothing(ingest, db):
    ingest(SEEDS)
    before = rows(db, "SELECT chunk_id, embedding FROM chunks ORDER BY chunk_id")
    again = ingest(SEEDS)
    assert (again["seen"], again["unchanged"], again["added"], again["updated"]) == (1, 1, 0, 0)
    assert again["chunks_embedded"] == 0 and again["tokens_embedded"] == 0
    assert rows(db, "SELECT chunk_id, embedding FROM chunks ORDER BY chunk_id") == before
    assert rows(db, "SELECT count(*) FROM documents") == [(1,)]
    assert rows(db, "SELECT count(*) FROM ingest_runs WHERE status = 'completed'") == [(2,)]


def test_changed_file_is_replaced_not_duplicated(ingest, db, tmp_path):
    folder = tmp_path / "news"
    article = write(folder / "story.txt", SEED_FILE.read_text())
    ingest(folder)
    first_ingested, first_updated = rows(db, "SELECT ingested_at, updated_at FROM documents")[0]
    old_chunks = rows(db, "SELECT count(*) FROM chunks")[0][0]

    write(article, "date 2024-03-24 A much shorter version.\n\nOnly two sentences now.")
    summary = ingest(folder)
    assert (summary["updated"], summary["added"], summary["unchanged"]) == (1, 0, 0)
    assert rows(db, "SELECT count(*), max(published)::VARCHAR FROM documents") == [(1, "2024-03-24")]
    chunks = rows(db, "SELECT text FROM chunks")
    assert chunks == [("A much shorter version.\n\nOnly two sentences now.",)]
    assert old_chunks > 1
    ingested, updated = rows(db, "SELECT ingested_at, updated_at FROM documents")[0]
    assert ingested == first_ingested and updated > first_updated


def test_new_chunk_settings_re_embed(ingest, db, tmp_path):
    shutil.copy(SEED_FILE, tmp_path / "seed.txt")
    first = ingest(tmp_path / "seed.txt")
    smaller = ingest(tmp_path / "seed.txt", max_tokens=48, overlap_sentences=0)
    assert smaller["updated"] == 1 and smaller["chunks_embedded"] > first["chunks_embedded"]
    assert rows(db, "SELECT max(token_count) <= 48, count(*) FROM chunks") == [(True, smaller["chunks_embedded"])]


def test_prune_removes_documents_of_deleted_files(ingest, db, tmp_path):
    folder = tmp_path / "news"
    keep = write(folder / "keep.txt", "date 2024-01-01 Kept article about harbours.")
    gone = write(folder / "sub" / "gone.txt", "date 2024-01-02 Article that will be deleted.")
    feed = write(folder / "feed.jsonl", '{"id": "f1", "text": "First feed item."}\n{"id": "f2", "text": "Second feed item."}\n')
    outside = write(tmp_path / "elsewhere" / "other.txt", "date 2024-01-03 Not under the folder.")
    ingest(folder, outside)
    assert rows(db, "SELECT count(*) FROM documents") == [(5,)]

    gone.unlink()
    write(feed, '{"id": "f1", "text": "First feed item."}\n')
    without = ingest(folder)
    assert without["removed"] == 0
    assert rows(db, "SELECT count(*) FROM documents") == [(5,)]

    pruned = ingest(folder, prune=True)
    assert pruned["removed"] == 2
    remaining = {r[0] for r in rows(db, "SELECT doc_id FROM documents")}
    assert remaining == {path_doc_id(keep), "f1", path_doc_id(outside)}
    assert rows(db, "SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)") == [(0,)]
    assert rows(db, "SELECT removed FROM ingest_runs ORDER BY started_at DESC LIMIT 1") == [(2,)]


BAD_INPUTS = {
    "empty.txt": ("", "is empty"),
    "latin1.txt": ("date 2024-01-01 Caf\xe9".encode("latin-1"), "is not valid UTF-8"),
    "binary.txt": (bytes(range(256)), "is a binary file"),
    "bad-date.txt": ("date 2024-3-7 Lead.", "malformed date '2024-3-7'"),
    "impossible.txt": ("date 2023-02-29 Lead.", "impossible date '2023-02-29'"),
    "notes.pdf": ("%PDF-1.4", "unknown extension '.pdf'"),
}


def test_bad_inputs_fail_alone_and_lose_nothing(ingest, db, tmp_path):
    folder = tmp_path / "news"
    earlier = write(folder / "earlier.txt", "date 2024-01-01 Stored before the bad files arrived.")
    ingest(folder)
    for name, (content, _) in BAD_INPUTS.items():
        write(folder / name, content)
    write(folder / "feed.jsonl", '{"id": "good", "text": "A good line."}\n{broken\n')
    write(folder / "nodate.txt", "An article without any date header.")
    write(folder / "good.txt", "date 2024-02-02 A good article that arrives with the bad ones.")

    summary = ingest(folder)
    assert summary["status"] == "completed"
    assert summary["failed"] == len(BAD_INPUTS) + 1
    for name, (_, message) in BAD_INPUTS.items():
        assert any(f.startswith(f"{folder / name}: {message}") for f in summary["failures"]), name
    assert f"{folder / 'feed.jsonl'}:2: not valid JSON" in "\n".join(summary["failures"])
    assert all("\n" not in f for f in summary["failures"])
    assert any("nodate.txt: no 'date YYYY-MM-DD' header" in w for w in summary["warnings"])

    stored = {r[0]: r[1] for r in rows(db, "SELECT doc_id, published FROM documents")}
    assert set(stored) == {path_doc_id(earlier), path_doc_id(folder / "good.txt"), path_doc_id(folder / "nodate.txt"), "good"}
    assert stored[path_doc_id(folder / "nodate.txt")] is None
    errors = rows(db, "SELECT source_path, line, message FROM ingest_errors ORDER BY source_path")
    assert len(errors) == summary["failed"]
    assert (str(folder / "feed.jsonl"), 2) in {(p, line) for p, line, _ in errors}
    assert rows(db, "SELECT failed FROM ingest_runs ORDER BY started_at DESC LIMIT 1") == [(summary["failed"],)]


def test_missing_path_and_duplicate_ids(ingest, db, tmp_path):
    write(tmp_path / "a.jsonl", '{"id": "same", "text": "One."}\n')
    write(tmp_path / "b.jsonl", '{"id": "same", "text": "Two."}\n')
    summary = ingest(tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "missing")
    assert summary["added"] == 1
    assert sorted(summary["failures"]) == sorted([
        f"{tmp_path / 'b.jsonl'}:1: document id 'same' is already used by {tmp_path / 'a.jsonl'}:1",
        f"{tmp_path / 'missing'}: no such file or directory",
    ])


def test_many_batches_and_parts_store_everything(ingest, db, tmp_path):
    for i in range(12):
        write(tmp_path / f"a{i:02}.txt", f"date 2024-01-{i + 1:02} Article number {i} about topic {i}.\n\n" + "More words here. " * 30)
    events: list[tuple[str, int, int, int]] = []
    summary = ingest(tmp_path, batch_chars=1500, part_chars=2500,
                     on_progress=lambda phase, done, total, chunks=0: events.append((phase, done, total, chunks)))
    # Phases in order: every file read (counted), then embedding, then the keyword index.
    phases = [e[0] for e in events]
    assert phases.index("embedding") > phases.index("reading") and phases[-1] == "indexing"
    reading = [(d, t) for p, d, t, _ in events if p == "reading"]
    files = reading[0][1]  # the articles and whatever else lies in the folder (the warehouse)
    assert files >= 12 and reading == [(i, files) for i in range(files)]
    embedding = [e for e in events if e[0] == "embedding"]
    assert [c for *_, c in embedding] == sorted(c for *_, c in embedding) and embedding[-1][3] == summary["chunks_embedded"]
    progress = [(d, t) for p, d, t, _ in embedding]
    assert summary["added"] == 12
    assert rows(db, "SELECT count(DISTINCT doc_id), count(*) FROM chunks") == [(12, summary["chunks_embedded"])]
    assert rows(db, "SELECT count(*) FROM (SELECT chunk_id FROM chunks GROUP BY chunk_id HAVING count(*) > 1)") == [(0,)]
    total = progress[0][1]
    assert progress[0] == (0, total) and progress[-1] == (total, total) and total > 0
    assert len(progress) >= 8  # 3 parts of 2 batches: reported per batch, not only per part
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_parts_keep_files_whole():
    from newsindex.flows.ingest import parts

    work = [("a", ["a1", "a2"], 300), ("b", ["b1"], 900), ("c", ["c1"], 100), ("d", ["d1"], 2000)]
    assert parts(work, 1000) == [[("a", ["a1", "a2"])], [("b", ["b1"]), ("c", ["c1"])], [("d", ["d1"])]]
    assert parts([], 1000) == []


def test_pipeline_write_failure_stops_it_and_is_raised(tmp_path):
    """A writer that cannot write ends the run with its error instead of hanging the other stages."""
    from newsindex.config import ChunkSettings
    from newsindex.embedding import load_encoder
    from newsindex.flows import pipeline
    from newsindex.warehouse import connection

    for i in range(6):
        write(tmp_path / "news" / f"s{i}.txt", f"date 2024-01-0{i + 1} Story {i}.\n\n" + "Some sentence here. " * 40)
    items = [(str(p), [path_doc_id(p)]) for p in sorted((tmp_path / "news").iterdir())]
    not_a_db = tmp_path / "folder.duckdb"
    not_a_db.mkdir()
    with pytest.raises(connection.WarehouseError, match="folder.duckdb"):
        pipeline.run(items, str(not_a_db), ChunkSettings(), load_encoder("torch-fp32"), "key", batch_chars=800)


@pytest.mark.parametrize("max_tokens", [0])
def test_invalid_budget_fails_the_run_and_keeps_data(ingest, db, max_tokens, tmp_path):
    ingest(SEEDS)
    # Not a byte copy: a new file with the same text as a stored one is skipped, never embedded.
    write(tmp_path / "copy.txt", SEED_FILE.read_text() + "\n\nOne more sentence.")
    # Refused before the run starts (flows/ingest.check_options), so no run is recorded either.
    with pytest.raises(Exception, match="max_tokens must be a whole number >= 1, got 0"):
        ingest(tmp_path, max_tokens=max_tokens)
    assert rows(db, "SELECT count(*) FROM documents") == [(1,)]
    assert rows(db, "SELECT status FROM ingest_runs ORDER BY started_at") == [("completed",)]
