"""Which stored document a file's article is: id-less JSON Lines lines are known by their text, so
inserting a line moves nothing; "same text as" only counts documents that are still there after the
run; renamed and swapped files stay findable after every run. Real ingest runs throughout."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
from conftest import rows, warehouse_problems, write

from newsindex.articles import path_doc_id

A, B, C = "The harbour reopened after the storm.", "Night trains return to the north.", "The library roof is fixed."
N = "Bakers protest the new flour tax."



def feed(path, *texts) -> None:
    write(path, "".join(json.dumps({"text": t, "date": "2024-05-01"}) + "\n" for t in texts))


def stored_texts(db) -> list[str]:
    return sorted(r[0] for r in rows(db, "SELECT text FROM documents"))


def consistent(db) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return warehouse_problems(con)
    finally:
        con.close()


def test_a_line_added_on_top_embeds_only_itself_and_loses_nothing(ingest, db, tmp_path):
    path = tmp_path / "feed.jsonl"
    feed(path, A, B, C)
    first = ingest(path)
    assert (first["added"], first["failed"]) == (3, 0)
    ids = dict(rows(db, "SELECT text, doc_id FROM documents"))

    feed(path, N, A, B, C)
    second = ingest(path)
    assert (second["added"], second["unchanged"], second["updated"], second["removed"]) == (1, 3, 0, 0)
    assert second["chunks_embedded"] == 1 and not any("same text" in w for w in second["warnings"])
    assert stored_texts(db) == sorted([N, A, B, C])
    assert {t: i for t, i in rows(db, "SELECT text, doc_id FROM documents") if t != N} == ids
    # Lines are where the articles are now, so messages that name them point at the right line.
    assert dict(rows(db, "SELECT text, line FROM documents")) == {N: 1, A: 2, B: 3, C: 4}
    assert consistent(db) == []


def test_dropped_and_edited_lines_stay_until_prune_and_a_duplicate_line_is_a_warning(ingest, db, tmp_path):
    """Like lines with ids: what a feed no longer holds (the oldest line of a rolling feed, the old
    text of an edited line) is kept until --prune asks for it to go."""
    news = tmp_path / "news"
    path = news / "feed.jsonl"
    feed(path, A, B, C)
    ingest(news)
    edited = B.replace("north", "south")
    feed(path, N, A, edited, A)
    summary = ingest(news)
    assert (summary["added"], summary["removed"], summary["unchanged"], summary["failed"]) == (2, 0, 1, 0)
    assert f"{path}:4: same text as {path}:2; not stored twice" in summary["warnings"]
    assert stored_texts(db) == sorted([A, B, C, N, edited])
    pruned = ingest(news, prune=True)
    assert (pruned["added"], pruned["removed"], pruned["chunks_embedded"]) == (0, 2, 0)
    assert stored_texts(db) == sorted([N, A, edited])
    assert consistent(db) == []


def test_a_file_with_a_bad_line_keeps_what_it_stored(ingest, db, tmp_path):
    path = tmp_path / "feed.jsonl"
    feed(path, A, B)
    ingest(path)
    write(path, json.dumps({"text": A}) + "\n{broken\n")
    summary = ingest(path)
    assert summary["removed"] == 0 and summary["failed"] == 1
    assert stored_texts(db) == sorted([A, B])


@pytest.mark.parametrize(
    ("now", "kept_old"),
    [([A, B, C], 0), ([N, A, B, C], 0), ([N, A, B], 1)],
    ids=["unchanged", "new-line-on-top", "oldest-line-dropped"],
)
def test_documents_under_old_line_ids_are_replaced_once_without_duplicates(ingest, db, tmp_path, now, kept_old):
    """A warehouse from before content ids holds `<file id>:<line>`: the first run that reads the
    file (unchanged, or with a new line on top, which shifts every old id) stores each line under
    its new id and removes the old ones whose text it stored; a line the file dropped stays, as
    any would without --prune. The next run embeds nothing."""
    path = tmp_path / "feed.jsonl"
    feed(path, A, B, C)
    ingest(path)
    con = duckdb.connect(str(db))
    try:
        # What the earlier version stored: ids by line number.
        for text, line in con.execute("SELECT text, line FROM documents").fetchall():
            old = f"{path_doc_id(path)}:{line}"
            doc_id = con.execute("SELECT doc_id FROM documents WHERE text = ?", [text]).fetchone()[0]
            con.execute("UPDATE chunks SET doc_id = ?, chunk_id = ? || '#' || ordinal WHERE doc_id = ?", [old, old, doc_id])
            con.execute("UPDATE documents SET doc_id = ? WHERE doc_id = ?", [old, doc_id])
    finally:
        con.close()
    assert sorted(r[0] for r in rows(db, "SELECT doc_id FROM documents")) == [f"{path_doc_id(path)}:{n}" for n in (1, 2, 3)]

    feed(path, *now)
    migrated = ingest(path)
    replaced = 3 - kept_old
    assert (migrated["added"], migrated["removed"], migrated["failed"]) == (len(now), replaced, 0)
    assert not any("same text" in w for w in migrated["warnings"])
    assert stored_texts(db) == sorted({*now, A, B, C})
    old_ids = [d for (d,) in rows(db, "SELECT doc_id FROM documents") if d.rsplit(":", 1)[1].isdigit()]
    assert len(old_ids) == kept_old
    assert consistent(db) == []
    again = ingest(path)
    assert (again["added"], again["unchanged"], again["removed"], again["chunks_embedded"]) == (0, len(now), 0, 0)


def findable(db, text) -> bool:
    """Stored with its chunks, and the keyword search finds it."""
    from newsindex.queries.search import search

    stored = rows(db, "SELECT count(*) FROM documents JOIN chunks USING (doc_id) WHERE documents.text = ?", [text])[0][0]
    hits = search(str(db), text, k=3, mode="keyword").hits
    return stored > 0 and any(h.text == text or text in h.text for h in hits)


STORY = "date 2024-03-01 The old bridge over the river will close for repairs in June."
OTHER = "date 2024-03-02 A new ferry will carry commuters while the bridge is closed."


def test_a_renamed_file_stays_findable_after_every_run(ingest, db, tmp_path):
    news = tmp_path / "news"
    write(news / "a.txt", STORY)
    ingest(news)
    text = STORY.removeprefix("date 2024-03-01 ")
    (news / "a.txt").rename(news / "b.txt")
    kept = ingest(news)
    assert kept["failed"] == 0 and findable(db, text)
    pruned = ingest(news, prune=True)
    assert pruned["removed"] == 1 and findable(db, text)
    assert rows(db, "SELECT doc_id FROM documents") == [(path_doc_id(news / "b.txt"),)]

    (news / "b.txt").rename(news / "c.txt")
    at_once = ingest(news, prune=True)
    assert (at_once["added"], at_once["removed"]) == (1, 1) and findable(db, text)
    assert consistent(db) == []


def test_a_copy_then_the_original_removed_is_stored_in_the_same_run(ingest, db, tmp_path):
    news = tmp_path / "news"
    write(news / "a.txt", STORY)
    ingest(news)
    shutil.copy(news / "a.txt", news / "b.txt")
    copied = ingest(news)
    assert f"{news / 'b.txt'}: same text as {news / 'a.txt'}; not stored twice" in copied["warnings"]
    (news / "a.txt").unlink()
    pruned = ingest(news, prune=True)
    assert (pruned["added"], pruned["removed"]) == (1, 1)
    assert rows(db, "SELECT doc_id FROM documents") == [(path_doc_id(news / "b.txt"),)]


def test_a_file_moved_aside_and_replaced_keeps_both_texts(ingest, db, tmp_path):
    """a.txt moves to b.txt and a new a.txt arrives: b.txt's text is not "the same as a.txt", whose
    stored text this very run replaces."""
    news = tmp_path / "news"
    write(news / "a.txt", STORY)
    ingest(news)
    (news / "a.txt").rename(news / "b.txt")
    write(news / "a.txt", OTHER)
    summary = ingest(news)
    assert (summary["added"], summary["updated"]) == (1, 1)
    assert not any("same text" in w for w in summary["warnings"])
    assert stored_texts(db) == sorted(t.split(" ", 2)[2] for t in (STORY, OTHER))
