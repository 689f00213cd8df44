"""Bad input at scale: one folder holding every kind of broken or odd article file, ingested in one
real flow run on top of a good warehouse. Each kind has its one-line message naming the file (and
the line, for JSON Lines); the good files of the same run are stored; nothing stored earlier changes.

The two flow runs happen once for the module (`batch`); the tests below read their results.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from conftest import write

from newsindex.articles import MAX_ARTICLE_BYTES, path_doc_id, read_articles

BIG = 200_000_000
AS_ROOT = os.geteuid() == 0
FUTURE = dt.date.today() + dt.timedelta(days=400)

EARLIER_TEXT = (
    "date 2024-01-10 The harbour authority approved a new breakwater for the old port.\n\n"
    "Construction starts in spring and will take two years, the authority said."
)
ARABIC = "غمرت الفيضانات وادي النيل بعد أمطار غزيرة استمرت ثلاثة أيام، وأجلت السلطات آلاف السكان."
HEBREW = "הרכבת החדשה לירושלים נפתחה לנוסעים ביום ראשון, וזמן הנסיעה התקצר לחצי שעה."
EMOJI = "The lantern festival 🎉🏮 drew record crowds 👨‍👩‍👧‍👦 to the riverside despite the rain ☔🇯🇵."
SENTENCE = "Sentence {i} of the long line describes the tunnel works under the river in some detail."
LONG_LINE = " ".join(SENTENCE.format(i=i) for i in range(600))[:50_000].rstrip()
BLOB = "x" * 2_000_000  # a 2 MB "word": no white space at all
# Seven levels of nine aliases: a 300-byte file whose title would expand to 4.8 million strings.
LAUGHS = "---\nl0: &l0 [" + ", ".join(["lol"] * 9) + "]\n" + "".join(
    f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]\n" for n in range(1, 7)
) + "title: *l6\n---\nThe body.\n"
IDLESS = ["The lighthouse keeper retired after forty years.", "Fishermen welcome the new quota rules."]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00\x1f\xf3\xffa"


@dataclass
class Batch:
    news: Path
    db: Path
    first: dict
    summary: dict
    seconds: float
    before: tuple[list, list]
    earlier_ids: list[str]


def rows(db: Path, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def snapshot(db: Path, ids: list[str]) -> tuple[list, list]:
    """Every column of these documents and their chunks, vectors included."""
    docs = rows(db, "SELECT * FROM documents WHERE doc_id IN (SELECT unnest(?)) ORDER BY doc_id", [ids])
    chunks = rows(db, "SELECT * FROM chunks WHERE doc_id IN (SELECT unnest(?)) ORDER BY chunk_id", [ids])
    return docs, chunks


def jsonl(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in records)


def write_earlier(news: Path) -> None:
    write(news / "earlier.txt", EARLIER_TEXT)
    write(news / "earlier.jsonl", jsonl({"id": "shared-id", "date": "2024-01-11", "text": "Night trains return to the northern line after a decade."}))
    write(news / "earlier.md", "---\ntitle: Library reopens\ndate: 2024-01-12\n---\nThe city library reopened after repairs to its roof.\n")
    write(news / "became-bad.txt", "date 2024-01-13 The museum extended its opening hours for the winter.")


def write_huge_jsonl(path: Path) -> None:
    """Line 2 is a single 200 MB JSON object, between two good lines."""
    with open(path, "wb") as out:
        out.write(jsonl({"id": "huge-1", "text": "A short feed item before the enormous line."}))
        head, tail = b'{"id": "huge-2", "text": "', b'"}'
        out.write(head)
        block = b"word " * 200_000
        left = BIG - len(head) - len(tail)
        while left:
            out.write(block[:left])
            left -= min(left, len(block))
        out.write(tail + b"\n")
        out.write(jsonl({"id": "huge-3", "text": "A short feed item after the enormous line."}))


def write_bad_batch(news: Path) -> None:
    # Files stored by the first run that break: what was stored from them stays as it was.
    write(news / "became-bad.txt", "date 2024-02-30 The museum extended its opening hours for the winter.")
    with open(news / "earlier.jsonl", "ab") as feed:
        feed.write(b'{"id": "appended", "text": 3}\n')
    write(news / "empty.txt", b"")
    write(news / "blank.md", " \n\t\n  ")
    write(news / "blank.jsonl", "\n  \n\n")
    write(news / "latin1.txt", "date 2024-01-01 Café crème".encode("latin-1"))
    write(news / "png.txt", PNG)
    write(news / "random.md", random.Random(5).randbytes(4096))
    write(news / "late-nul.txt", "date 2024-01-01 " + "Words and more words. " * 500 + "\x00 after eleven kilobytes.")
    with open(news / "huge.txt", "wb") as sparse:  # 200 MB on paper, no disk: must be refused by its size
        sparse.truncate(BIG)
    write_huge_jsonl(news / "huge.jsonl")
    if not AS_ROOT:
        write(news / "unreadable.txt", "date 2024-01-01 Nobody may read this.").chmod(0)
    (news / "broken-link.txt").symlink_to(news / "nowhere.txt")
    (news / "loop-a.txt").symlink_to(news / "loop-b.txt")
    (news / "loop-b.txt").symlink_to(news / "loop-a.txt")
    os.mkfifo(news / "pipe.txt")
    write(news / "bad-date.txt", "date 2024/03/07 Lead.")
    write(news / "impossible-date.txt", "date 2024-02-30 Lead.")
    write(news / "only-date.txt", "date 2024-02-03\n")
    write(news / "notes.docx", "date 2024-01-01 Not a format we read.")
    write(news / "bad-front.md", "---\ntitle: [unclosed\n---\nText.")
    write(news / "list-front.md", "---\n- a\n- b\n---\nText.")
    write(Path(os.fsdecode(os.fsencode(news) + b"/caf\xe9.txt")), "date 2024-01-01 A Latin-1 file name.")
    write(news / "odd\nname.txt", b"")
    write(news / "feed.jsonl", jsonl(
        {"id": "feed-1", "date": "2024-05-01", "text": "The ferry timetable changes on Monday for the summer."},
        b"{not json",
        {"id": "feed-3", "title": "No text here"},
        {"id": "feed-4", "text": ["a", "list"]},
        ["not", "an", "object"],
        {"id": "feed-6", "text": "A bad month.", "date": "2024-13-01"},
        b'{"id": "feed-7", "text": "A lone \\ud800 surrogate."}',
        b'{"id": "feed-8", "text": "caf\xe9"}',
        b'{"id": "feed-9", "text": "a\x00b"}',
        {"id": True, "text": "A boolean id."},
        {"id": "feed-11", "date": "2024-05-02", "text": "Bakers protest the new flour tax outside parliament."},
        {"id": "feed-1", "text": "A different story reusing the first id."},
    ))  # fmt: skip
    write(news / "laughs.md", LAUGHS)
    write(news / "long-title.md", "---\ntitle: " + "t" * 1001 + "\n---\nA title longer than any headline.\n")
    write(news / "big-front.md", "---\ntags: [" + ", ".join(["a"] * 40_000) + "]\n---\nA minute of YAML parsing.\n")
    write(news / "deep-front.md", "---\ntitle: " + "[" * 5000 + "]" * 5000 + "\n---\nNested lists.\n")
    write(news / "blob-only.txt", f"date 2024-04-11 {BLOB}")
    write(news / "fields.jsonl", jsonl(
        {"id": "nul\u0000id", "text": "An id with a NUL character."},
        {"id": "esc\u001b[31m", "text": "An id with a terminal escape."},
        {"id": "i" * 257, "text": "An id of 257 characters."},
        {"id": "long-title", "title": "T" * 1001, "text": "A title of 1001 characters."},
        {"id": "long-url", "url": "https://e.org/" + "u" * 2040, "text": "A url of 2054 characters."},
        {"id": "long-date", "date": "2" * 65, "text": "A date of 65 characters."},
        b'{"id": 1' + b"0" * 5000 + b', "text": "An id of 5001 digits."}',
        {"id": "list-url", "url": ["https://e.org/"], "text": "A url that is a list."},
        b"[" * 5000 + b"]" * 5000,
        {"id": "control-url", "url": "https://e.org/\u001b]8;;x\u0007a", "text": "The tram depot closes for the winter."},
    ))  # fmt: skip
    write(news / "other.jsonl", jsonl(
        {"id": "shared-id", "text": "A story that reuses an id stored by earlier.jsonl."},
        {"id": "feed-11", "text": "A story that reuses an id from feed.jsonl."},
        {"id": "archived-id", "text": "A story that reuses an id stored from another folder."},
    ))  # fmt: skip

    # Accepted, some with a warning.
    write(news / "utf16.txt", "date 2024-04-01 Notepad saved this one as Unicode: café, naïve.".encode("utf-16"))
    write(news / "utf32.md", "# Wide\n\nSaved as UTF-32 with its byte-order mark.".encode("utf-32"))
    (news / "linked-folder").symlink_to(news.parent / "archive")
    write(news / "future.txt", f"date {FUTURE.isoformat()} The observatory will open to the public.")
    write(news / "nodate.txt", "A note without any date header about the bridge repairs.")
    write(news / "controls.txt", "date 2024-04-02 Bell\x07 and escape\x1b[0m and delete\x7f are removed.")
    write(news / "copy-of-earlier.txt", EARLIER_TEXT)
    write(news / "twin-a.txt", "date 2024-04-03 Two files carry this very same story about a lost cat.")
    write(news / "twin-b.txt", "date 2024-04-03 Two files carry this very same story about a lost cat.")
    write(news / "story.txt" / "inside.txt", "date 2024-04-04 A file inside a folder named like an article.")
    write(news / "long-line.txt", f"date 2024-04-05 {LONG_LINE}")
    write(news / ("l" * 240 + ".txt"), "date 2024-04-06 A file with a very long name.")
    write(news / "arabic.txt", f"date 2024-04-07 {ARABIC}")
    write(news / "hebrew.md", f"---\ntitle: רכבת\ndate: 2024-04-08\n---\n{HEBREW}\n")
    write(news / "emoji.jsonl", jsonl({"id": "emoji-1", "date": "2024-04-09", "text": EMOJI}))
    write(news / "good.txt", "date 2024-04-10 A good article that arrives together with the bad ones.")
    write(news / "blob.txt", f"date 2024-04-12 The harbour crane was repaired. {BLOB} Work resumes on Monday.")
    write(news / "long-heading.md", "# " + "word " * 300 + "\n\nA heading of 1500 characters becomes a shortened title.\n")
    write(news / "idless.jsonl", jsonl({"text": IDLESS[0]}, {"text": IDLESS[1]}, {"text": IDLESS[0]}))
    write(news / "good.md", "# Market day\n\nStalls returned to the square for the first market of the year.\n")


@pytest.fixture(scope="module")
def batch(prefect_server, tmp_path_factory) -> Batch:
    from newsindex.flows.ingest import ingest as ingest_flow

    root = tmp_path_factory.mktemp("bad-input").resolve()
    news, db = root / "news", root / "warehouse.duckdb"
    write_earlier(news)
    # Stored, but not read by the second run: its ids are taken by a file outside that run.
    write(root / "archive" / "archive.jsonl", jsonl({"id": "archived-id", "text": "An archived story about the old tram depot."}))
    first = ingest_flow(paths=[str(news), str(root / "archive")], db=str(db))
    assert (first["added"], first["failed"]) == (5, 0)
    earlier_ids = [r[0] for r in rows(db, "SELECT doc_id FROM documents")]
    before = snapshot(db, earlier_ids)

    write_bad_batch(news)
    started = time.perf_counter()
    # With --prune: a file that fails must not count as a file that lost its documents.
    summary = ingest_flow(paths=[str(news)], db=str(db), prune=True)
    seconds = time.perf_counter() - started
    yield Batch(news, db, first, summary, seconds, before, earlier_ids)
    (news / "huge.jsonl").unlink()


def N(batch: Batch, name: str) -> str:
    return str(batch.news / name)


# (file, line or None, message): every failure the bad batch must report, and no other.
def expected_failures(news: Path) -> set[tuple[str, int | None, str]]:
    feed, earlier = str(news / "feed.jsonl"), str(news / "earlier.jsonl")
    found = {
        ("laughs.md", 3, "front matter uses a YAML alias (*l0); aliases are not allowed"),
        ("long-title.md", None, "front matter 'title' is too long: 1001 characters (limit 1000)"),
        ("deep-front.md", None, "front matter is nested too deeply"),
        ("big-front.md", None, "front matter is too long: 120006 characters (limit 65536)"),
        ("blob-only.txt", None, "has no words, only a run of 2000000 characters without white space"),
        ("fields.jsonl", 1, "'id' contains a control character (\\x00); ids must be printable"),
        ("fields.jsonl", 2, "'id' contains a control character (\\x1b); ids must be printable"),
        ("fields.jsonl", 3, "'id' is too long: 257 characters (limit 256)"),
        ("fields.jsonl", 4, "'title' is too long: 1001 characters (limit 1000)"),
        ("fields.jsonl", 5, "'url' is too long: 2054 characters (limit 2048)"),
        ("fields.jsonl", 6, "'date' is too long: 65 characters (limit 64)"),
        ("fields.jsonl", 7, "contains a number of more than 4300 digits; not accepted"),
        ("fields.jsonl", 8, "'url' must be a string, got list"),
        ("fields.jsonl", 9, "is nested too deeply to be an article"),
        ("became-bad.txt", None, "impossible date '2024-02-30'"),
        ("earlier.jsonl", 2, "'text' must be a string, got int"),
        ("empty.txt", None, "is empty (0 bytes)"),
        ("blank.md", None, "is empty (only white space)"),
        ("blank.jsonl", None, "is empty (only white space)"),
        ("latin1.txt", None, "is not valid UTF-8 (byte 0xe9 at line 1, column 20)"),
        ("png.txt", None, "is a binary file (contains NUL bytes)"),
        ("random.md", None, "is a binary file (contains NUL bytes)"),
        ("late-nul.txt", None, "is a binary file (contains NUL bytes)"),
        ("huge.txt", None, "is too large: 200.0 MB (limit 10 MB)"),
        ("huge.jsonl", 2, "line too large: 200.0 MB (limit 10 MB per line)"),
        ("broken-link.txt", None, f"broken symlink to {news / 'nowhere.txt'}"),
        ("loop-a.txt", None, "symlink loop (too many levels of symbolic links)"),
        ("loop-b.txt", None, "symlink loop (too many levels of symbolic links)"),
        ("pipe.txt", None, "is not a regular file (a named pipe)"),
        ("bad-date.txt", None, "malformed date '2024/03/07'; expected YYYY-MM-DD"),
        ("impossible-date.txt", None, "impossible date '2024-02-30'"),
        ("only-date.txt", None, "has a date header but no text"),
        ("notes.docx", None, "unknown extension '.docx'; expected .txt, .md or .jsonl"),
        ("bad-front.md", 2, "front matter is not valid YAML"),
        ("list-front.md", None, "front matter must be a mapping of fields"),
        ("caf\\xe9.txt", None, "file name is not valid UTF-8; rename the file"),
        ("odd\\nname.txt", None, "is empty (0 bytes)"),
        ("feed.jsonl", 2, "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        ("feed.jsonl", 3, "missing 'text'"),
        ("feed.jsonl", 4, "'text' must be a string, got list"),
        ("feed.jsonl", 5, "expected a JSON object, got list"),
        ("feed.jsonl", 6, "impossible date '2024-13-01'"),
        ("feed.jsonl", 7, "contains an unpaired surrogate escape \\ud800; not valid Unicode"),
        ("feed.jsonl", 8, "is not valid UTF-8 (byte 0xe9 at column 30)"),
        ("feed.jsonl", 9, "contains NUL bytes (binary data)"),
        ("feed.jsonl", 10, "'id' must be a string or integer, got bool"),
        ("feed.jsonl", 12, f"document id 'feed-1' is already used by {feed}:1"),
        ("other.jsonl", 1, f"document id 'shared-id' is already used by {earlier}:1"),
        ("other.jsonl", 2, f"document id 'feed-11' is already used by {feed}:11"),
        ("other.jsonl", 3, f"document id 'archived-id' is already used by {news.parent / 'archive' / 'archive.jsonl'}"),
    }
    if not AS_ROOT:
        found.add(("unreadable.txt", None, "permission denied"))
    return {(f"{news}/{name}", line, message) for name, line, message in found}


def as_line(path: str, line: int | None, message: str) -> str:
    return f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"


FAILURE_KINDS = sorted({(name, line) for name, line, _ in expected_failures(Path("/n"))})


@pytest.mark.parametrize(("path", "line"), FAILURE_KINDS, ids=[f"{p[3:]}:{l}" if l else p[3:] for p, l in FAILURE_KINDS])
def test_each_kind_has_its_one_line_message(batch, path, line):
    expected = {(p, l, m) for p, l, m in expected_failures(batch.news) if (p.replace(str(batch.news), "/n"), l) == (path, line)}
    ((file, line, message),) = expected
    reported = as_line(file, line, message)
    assert reported in batch.summary["failures"]
    assert "\n" not in reported and reported.startswith(str(batch.news) + "/")
    assert (file, line, message) in set(rows(batch.db, "SELECT source_path, line, message FROM ingest_errors WHERE run_id = ?", [batch.summary["run_id"]]))


def test_the_run_reports_exactly_these_failures(batch):
    expected = expected_failures(batch.news)
    assert batch.summary["status"] == "completed"
    assert sorted(batch.summary["failures"]) == sorted(as_line(*f) for f in expected)
    assert batch.summary["failed"] == len(expected) >= 36
    stored = rows(batch.db, "SELECT source_path, line, message FROM ingest_errors WHERE run_id = ?", [batch.summary["run_id"]])
    assert sorted(stored, key=str) == sorted(expected, key=str)
    assert rows(batch.db, "SELECT status, failed FROM ingest_runs WHERE run_id = ?", [batch.summary["run_id"]]) == [("completed", len(expected))]


def test_the_cli_prints_one_line_per_failure(batch, capsys):
    from newsindex.cli.ingest import _print_summary

    _print_summary(batch.summary)
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("failed ")]
    assert sorted(failed) == sorted(f"failed {f}" for f in batch.summary["failures"])
    warned = [line for line in lines if line.startswith("warning ")]
    assert sorted(warned) == sorted(f"warning {w}" for w in batch.summary["warnings"])


def test_good_files_in_the_same_run_are_stored(batch):
    news = batch.news
    stored = {r[0] for r in rows(batch.db, "SELECT doc_id FROM documents")}
    new_files = ["utf16.txt", "utf32.md", "future.txt", "nodate.txt", "controls.txt", "twin-a.txt", "story.txt/inside.txt",
                 "long-line.txt", "l" * 240 + ".txt", "arabic.txt", "hebrew.md", "good.txt", "good.md", "blob.txt", "long-heading.md"]  # fmt: skip
    expected = set(batch.earlier_ids) | {path_doc_id(news / f) for f in new_files}
    expected |= {"huge-1", "huge-3", "feed-1", "feed-11", "emoji-1", "control-url"}
    expected |= {f"{path_doc_id(news / 'idless.jsonl')}:{hashlib.sha256(t.encode()).hexdigest()[:16]}" for t in IDLESS}
    assert stored == expected
    assert batch.summary["added"] == len(expected) - len(batch.earlier_ids)
    assert (batch.summary["removed"], batch.summary["updated"]) == (0, 0)
    assert rows(batch.db, "SELECT count(*) FROM documents WHERE doc_id NOT IN (SELECT doc_id FROM chunks)") == [(0,)]
    assert rows(batch.db, "SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)") == [(0,)]


def test_nothing_stored_earlier_changes(batch):
    assert snapshot(batch.db, batch.earlier_ids) == batch.before
    assert len(batch.before[0]) == 5 and len(batch.before[1]) >= 5


WARNINGS = [
    ("utf16.txt", "decoded as UTF-16 (byte-order mark); UTF-8 is preferred"),
    ("utf32.md", "decoded as UTF-32 (byte-order mark); UTF-8 is preferred"),
    ("linked-folder", "is a symlink to a folder; not followed"),
    ("future.txt", f"date {FUTURE.isoformat()} is in the future"),
    ("nodate.txt", "no 'date YYYY-MM-DD' header; stored without a date"),
    ("controls.txt", "removed 3 control characters"),
    ("copy-of-earlier.txt", "same text as {news}/earlier.txt; not stored twice"),
    ("twin-b.txt", "same text as {news}/twin-a.txt; not stored twice"),
    ("story.txt", "is a folder named like an article file; reading the files in it"),
    ("blob.txt", "has a run of 2000000 characters without white space (at character 32); stored, but left out of the chunks that search reads"),
    ("fields.jsonl:10", "removed 2 control characters from 'url'"),
    ("idless.jsonl:3", "same text as {news}/idless.jsonl:1; not stored twice"),
]


@pytest.mark.parametrize(("name", "warning"), WARNINGS, ids=[n for n, _ in WARNINGS])
def test_accepted_with_a_warning(batch, name, warning):
    assert f"{batch.news / name}: {warning.format(news=batch.news)}" in batch.summary["warnings"]


def test_accepted_content_is_stored_as_meant(batch):
    def doc(name):
        return rows(batch.db, "SELECT published, lead, text FROM documents WHERE doc_id = ?", [path_doc_id(batch.news / name)])[0]

    assert doc("utf16.txt") == (dt.date(2024, 4, 1), "Notepad saved this one as Unicode: café, naïve.", "Notepad saved this one as Unicode: café, naïve.")
    assert doc("controls.txt")[2] == "Bell and escape[0m and delete are removed."
    assert doc("future.txt")[0] == FUTURE and doc("nodate.txt")[0] is None
    assert rows(batch.db, "SELECT text FROM documents WHERE doc_id = 'emoji-1'") == [(EMOJI,)]
    title = rows(batch.db, "SELECT title FROM documents WHERE doc_id = ?", [path_doc_id(batch.news / "long-heading.md")])[0][0]
    assert title.startswith("word word") and len(title) <= 1001
    assert rows(batch.db, "SELECT url FROM documents WHERE doc_id = 'control-url'") == [("https://e.org/]8;;xa",)]

    # A 2 MB run without white space stays in the text, but no chunk holds it: the words around it
    # are chunked (and found), none of the chunks is a lone [UNK].
    blob_id = path_doc_id(batch.news / "blob.txt")
    assert BLOB in rows(batch.db, "SELECT text FROM documents WHERE doc_id = ?", [blob_id])[0][0]
    assert rows(batch.db, "SELECT text FROM chunks WHERE doc_id = ? ORDER BY ordinal", [blob_id]) == [
        ("The harbour crane was repaired.",), ("Work resumes on Monday.",)]  # fmt: skip
    assert rows(batch.db, "SELECT max(length(text)) < 50000 FROM chunks") == [(True,)]

    # One 50 000-character line: stored whole, cut into chunks the model can take, lead shortened.
    published, lead, text = doc("long-line.txt")
    assert text == LONG_LINE and len(text) >= 49_999
    assert len(lead) <= 1001 and text.startswith(lead.rstrip("…"))
    chunks = rows(batch.db, "SELECT count(*), max(token_count), min(char_start), max(char_end) FROM chunks WHERE doc_id = ?",
                  [path_doc_id(batch.news / "long-line.txt")])  # fmt: skip
    count, most, first, last = chunks[0]
    assert count > 50 and most <= 128 and (first, last) == (0, len(text))


@pytest.mark.parametrize(
    ("mode", "query", "name"),
    [
        ("keyword", "الفيضانات", "arabic.txt"),
        ("semantic", ARABIC, "arabic.txt"),
        ("keyword", "לירושלים", "hebrew.md"),
        ("semantic", HEBREW, "hebrew.md"),
        ("keyword", "lantern", "emoji-1"),
        ("semantic", "lantern festival crowds by the river in the rain", "emoji-1"),
    ],
)
def test_right_to_left_and_emoji_text_is_found(batch, mode, query, name):
    from newsindex.queries.search import search

    doc_id = name if name == "emoji-1" else path_doc_id(batch.news / name)
    hits = search(str(batch.db), query, k=3, mode=mode).hits
    assert hits and hits[0].doc_id == doc_id


def test_200_mb_files_are_never_read_whole(batch):
    """The size check comes from stat and JSON Lines stream line by line: reading either 200 MB file
    allocates about one line's limit, not the file."""
    for name, expected in [("huge.txt", []), ("huge.jsonl", ["huge-1", "huge-3"])]:
        tracemalloc.start()
        started = time.perf_counter()
        items = list(read_articles(batch.news / name))
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert [getattr(i, "doc_id", None) for i in items if not hasattr(i, "message")] == expected
        assert peak < 2.5 * MAX_ARTICLE_BYTES, (name, peak)
        assert seconds < 30, (name, seconds)
        print(f"{name}: {seconds:.2f} s, peak {peak / 1e6:.1f} MB traced")
    print(f"bad batch run: {batch.seconds:.1f} s, first run {batch.first['total_seconds']:.1f} s")


def _without_file_permission_override() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set, so root's child obeys file modes like any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.skipif(not AS_ROOT, reason="without root the unreadable file is part of the batch run above")
def test_unreadable_file_as_root_without_override(tmp_path):
    """chmod 000 does not stop root, so the file is read by a child without root's override."""
    path = write(tmp_path / "unreadable.txt", "date 2024-01-01 Nobody may read this.")
    path.chmod(0)
    probe = "import sys; from newsindex.articles import read_articles; print([str(i) for i in read_articles(sys.argv[1])])"
    try:
        result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60,
                                preexec_fn=_without_file_permission_override)  # fmt: skip
    except subprocess.SubprocessError as err:
        pytest.skip(f"cannot drop capabilities here: {err}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr([f"{path}: permission denied"])
