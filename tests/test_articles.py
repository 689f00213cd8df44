"""Parsing the three article formats, and the one-line errors for files that cannot be read."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from conftest import SEED_FILE, write

from newsindex.articles import Article, ArticleError, path_doc_id, read_articles

TODAY = dt.date(2026, 11, 24)


def one(path) -> Article | ArticleError:
    items = list(read_articles(path, today=TODAY))
    assert len(items) == 1
    return items[0]


def test_seed_article():
    article = one(SEED_FILE)
    assert isinstance(article, Article)
    assert article.published == dt.date(2024, 3, 23)
    assert article.lead.startswith("Two weeks before gunmen opened fire inside Crocus City Hall")
    assert article.text.startswith(article.lead)
    assert "date 2024" not in article.text
    assert "Adrienne Watson" in article.text
    assert article.title == "Crocus city hall warning"
    assert article.format == "txt"
    assert article.warnings == []
    assert article.doc_id.startswith("crocus-city-hall-warning-")


def test_doc_id_is_stable_and_path_specific(tmp_path):
    a = write(tmp_path / "a" / "story.txt", "date 2024-01-01 x")
    b = write(tmp_path / "b" / "story.txt", "date 2024-01-01 x")
    assert path_doc_id(a) == path_doc_id(tmp_path / "a" / ".." / "a" / "story.txt")
    assert path_doc_id(a) != path_doc_id(b)


def test_text_header_with_leading_space_and_crlf(tmp_path):
    path = write(tmp_path / "x.txt", "  date 2024-05-06 The lead line.\r\n\r\nSecond paragraph.\r\n")
    article = one(path)
    assert article.published == dt.date(2024, 5, 6)
    assert article.lead == "The lead line."
    assert article.text == "The lead line.\n\nSecond paragraph."


def test_text_without_date_is_kept_with_warning(tmp_path):
    article = one(write(tmp_path / "nodate.txt", "Date night ideas for the city.\n\nMore text."))
    assert isinstance(article, Article)
    assert article.published is None
    assert article.lead == "Date night ideas for the city."
    assert any("no 'date" in w for w in article.warnings)


def test_future_date_is_kept_with_warning(tmp_path):
    article = one(write(tmp_path / "f.txt", "date 2030-01-01 Tomorrow's news."))
    assert article.published == dt.date(2030, 1, 1)
    assert article.warnings == ["date 2030-01-01 is in the future"]


def test_markdown_with_front_matter(tmp_path):
    path = write(
        tmp_path / "post.md",
        "---\ntitle: Flood warning issued\ndate: 2024-02-10\nsource: https://example.org/flood\n---\n"
        "# Ignored heading\n\nRivers rose overnight.\n\nResidents were told to leave.\n",
    )
    article = one(path)
    assert article.title == "Flood warning issued"
    assert article.published == dt.date(2024, 2, 10)
    assert article.url == "https://example.org/flood"
    assert article.lead == "Rivers rose overnight."
    assert article.text.startswith("# Ignored heading")
    assert article.format == "md"


def test_markdown_without_front_matter_uses_heading(tmp_path):
    article = one(write(tmp_path / "plain.md", "# Budget passes\n\nThe council approved it.\n"))
    assert article.title == "Budget passes"
    assert article.published is None
    assert article.lead == "The council approved it."


def test_jsonl_articles_and_ids(tmp_path):
    lines = [
        {"id": "a1", "title": "First", "date": "2024-01-02", "url": "https://e.org/1", "text": "Alpha text."},
        {"text": "Beta has no id.\n\nSecond paragraph."},
        {"id": 7, "text": "Gamma."},
    ]
    path = write(tmp_path / "feed.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = list(read_articles(path, today=TODAY))
    assert [type(i) for i in items] == [Article, Article, Article]
    first, second, third = items
    assert (first.doc_id, first.title, first.published, first.url) == ("a1", "First", dt.date(2024, 1, 2), "https://e.org/1")
    # An id-less line is known by its file and its text, not by its line number.
    assert second.doc_id == f"{path_doc_id(path)}:{second.text_hash[:16]}" and second.line == 2
    assert second.derived_id and not first.derived_id and not third.derived_id
    assert second.title == "Beta has no id."
    assert third.doc_id == "7"
    assert all(i.source_path == str(path.resolve()) for i in items)


def test_content_hash_tracks_content(tmp_path):
    path = write(tmp_path / "h.txt", "date 2024-01-01 One.")
    before = one(path).content_hash
    assert one(path).content_hash == before
    write(path, "date 2024-01-02 One.")
    assert one(path).content_hash != before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "", "is empty (0 bytes)"),
        ("blank.txt", "  \n\t\n", "is empty (only white space)"),
        ("latin1.txt", "date 2024-01-01 Caf\xe9".encode("latin-1"), "is not valid UTF-8 (byte 0xe9 at line 1, column 20)"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file (contains NUL bytes)"),
        ("bad-date.txt", "date 2024/03/07 Lead.", "malformed date '2024/03/07'; expected YYYY-MM-DD"),
        ("impossible.txt", "date 2024-02-30 Lead.", "impossible date '2024-02-30'"),
        ("only-date.txt", "date 2024-02-03\n", "has a date header but no text"),
        ("notes.docx", "date 2024-01-01 x", "unknown extension '.docx'; expected .txt, .md or .jsonl"),
        ("bad-front.md", "---\ntitle: [unclosed\n---\nText.", "front matter is not valid YAML"),
        ("bad-date.md", "---\ndate: 2024-13-01\n---\nText.", "impossible date '2024-13-01'"),
        ("long-date.txt", "date 2" + "0" * 70 + " Lead.", "date header is too long: 71 characters (limit 64)"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    error = one(path)
    assert isinstance(error, ArticleError)
    assert error.message == message
    assert str(error).startswith(str(path))
    assert "\n" not in str(error)


def test_directory_and_missing_file(tmp_path):
    (tmp_path / "folder.txt").mkdir()
    assert one(tmp_path / "folder.txt").message == "is a directory, not an article file"
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    assert one(tmp_path / "dangling.txt").message == f"broken symlink to {tmp_path / 'nowhere.txt'}"


def test_utf16_with_byte_order_mark_is_decoded(tmp_path):
    article = one(write(tmp_path / "utf16.txt", "date 2024-01-01 Caf\u00e9 \u05e9\u05dc\u05d5\u05dd".encode("utf-16")))
    assert isinstance(article, Article)
    assert (article.published, article.text) == (dt.date(2024, 1, 1), "Caf\u00e9 \u05e9\u05dc\u05d5\u05dd")
    assert article.warnings == ["decoded as UTF-16 (byte-order mark); UTF-8 is preferred"]


def test_jsonl_bad_lines_are_reported_and_good_lines_kept(tmp_path):
    path = write(
        tmp_path / "mixed.jsonl",
        '{"id": "ok1", "text": "Fine."}\n'
        "{not json}\n"
        '{"id": "no-text"}\n'
        '{"id": "wrong", "text": 42}\n'
        '[1, 2]\n'
        '{"id": "date", "text": "x", "date": "2024-02-30"}\n'
        '{"id": "ok2", "text": "Also fine."}\n',
    )
    items = list(read_articles(path, today=TODAY))
    good = [i.doc_id for i in items if isinstance(i, Article)]
    bad = [(i.line, i.message) for i in items if isinstance(i, ArticleError)]
    assert good == ["ok1", "ok2"]
    assert bad == [
        (2, "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        (3, "missing 'text'"),
        (4, "'text' must be a string, got int"),
        (5, "expected a JSON object, got list"),
        (6, "impossible date '2024-02-30'"),
    ]
    assert str(items[1]) == f"{path}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)"


def test_id_less_lines_keep_their_ids_when_a_line_is_inserted_above(tmp_path):
    path = tmp_path / "feed.jsonl"
    lines = [json.dumps({"text": t}) for t in ("Alpha story.", "Beta story.", "Gamma story.")]
    write(path, "\n".join(lines) + "\n")
    before = {a.text: a.doc_id for a in read_articles(path, today=TODAY)}
    write(path, "\n".join([json.dumps({"text": "Newest story."}), *lines]) + "\n")
    after = {a.text: (a.doc_id, a.line) for a in read_articles(path, today=TODAY)}
    assert {text: doc_id for text, (doc_id, _) in after.items() if text in before} == before
    assert [line for _, line in after.values()] == [1, 2, 3, 4]
    assert len({doc_id for doc_id, _ in after.values()}) == 4


def billion_laughs(levels: int, width: int = 10) -> str:
    """Front matter of a few hundred bytes whose title, expanded, is width**levels copies of "lol"."""
    lines = ["---", "l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    lines += [f"title: *l{levels - 1}", "date: 2024-01-01", "---", "The body of the article."]
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_fast_in_small_memory(tmp_path):
    """Nine levels of ten would expand to 10**9 strings; the file is rejected before any expansion,
    measured in a fresh process so the peak is this file's alone. The peak is VmHWM: ru_maxrss
    survives exec, so a child of this (model-holding) test process would report the parent's."""
    path = write(tmp_path / "laughs.md", billion_laughs(9))
    assert path.stat().st_size < 1000
    probe = (
        "import re, sys, time; from newsindex.articles import read_articles\n"
        "start = time.perf_counter(); items = [str(i) for i in read_articles(sys.argv[1])]\n"
        "print(repr(items)); print(time.perf_counter() - start)\n"
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1])"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    items, seconds, peak_kb = result.stdout.splitlines()
    assert items == repr([f"{path}:3: front matter uses a YAML alias (*l0); aliases are not allowed"])
    assert float(seconds) < 2
    assert int(peak_kb) < 300_000, f"peak RSS {int(peak_kb) / 1000:.0f} MB"


def test_anchors_without_aliases_and_plain_front_matter_still_load(tmp_path):
    article = one(write(tmp_path / "a.md", "---\ntitle: &t Harbour news\ndate: 2024-01-01\n---\nBody.\n"))
    assert isinstance(article, Article) and article.title == "Harbour news"


@pytest.mark.parametrize(
    ("front", "message"),
    [
        ("title: " + "t" * 1001, "front matter 'title' is too long: 1001 characters (limit 1000)"),
        ("url: https://e.org/" + "u" * 2040, "front matter 'url' is too long: 2054 characters (limit 2048)"),
        ("source: " + "s" * 2049, "front matter 'source' is too long: 2049 characters (limit 2048)"),
        ("date: " + "2" * 65, "front matter 'date' is too long: 65 characters (limit 64)"),
        ("title: [a, b]", "front matter 'title' must be a single value, got a list"),
        ("url: {a: b}", "front matter 'url' must be a single value, got a mapping"),
        ("title: " + "[" * 5000 + "]" * 5000, "front matter is nested too deeply"),
        ("tags: [" + ", ".join(["a"] * 40_000) + "]", "front matter is too long: 120006 characters (limit 65536)"),
    ],
)
def test_front_matter_fields_have_limits(tmp_path, front, message):
    error = one(write(tmp_path / "f.md", f"---\n{front}\n---\nBody.\n"))
    assert isinstance(error, ArticleError) and error.message == message


def test_field_limits_are_inclusive(tmp_path):
    article = one(write(tmp_path / "f.md", "---\ntitle: " + "t" * 1000 + "\n---\nBody.\n"))
    assert isinstance(article, Article) and len(article.title) == 1000
    heading = one(write(tmp_path / "h.md", "# " + "word " * 1000 + "\n\nBody.\n"))
    assert isinstance(heading, Article) and len(heading.title) <= 1001  # derived: shortened, not refused


def test_jsonl_ids_urls_and_fields(tmp_path):
    records = [
        {"id": "a\u0000b", "text": "NUL in the id."},
        {"id": "red\u001b[31m", "text": "An escape in the id."},
        {"id": "tab\tid", "text": "A tab in the id."},
        {"id": "c1\u009b", "text": "A C1 control in the id."},
        {"id": "i" * 257, "text": "A long id."},
        {"title": "T" * 1001, "text": "A long title."},
        {"url": "https://e.org/" + "u" * 2040, "text": "A long url."},
        {"url": ["x"], "text": "A list url."},
        {"date": "2" * 65, "text": "A long date."},
        {"id": "ok", "url": "https://e.org/\u001b]8;;evil\u0007x", "text": "Controls in the url."},
        {"id": "i" * 256, "title": "T" * 1000, "text": "At every limit."},
    ]
    path = write(tmp_path / "f.jsonl", "".join(json.dumps(r) + "\n" for r in records) + '{"id": 1' + "0" * 5000 + ', "text": "x"}\n')
    items = list(read_articles(path, today=TODAY))
    assert [str(i) for i in items if isinstance(i, ArticleError)] == [f"{path}:{n}: {m}" for n, m in [
        (1, "'id' contains a control character (\\x00); ids must be printable"),
        (2, "'id' contains a control character (\\x1b); ids must be printable"),
        (3, "'id' contains a control character (\\t); ids must be printable"),
        (4, "'id' contains a control character (\\x9b); ids must be printable"),
        (5, "'id' is too long: 257 characters (limit 256)"),
        (6, "'title' is too long: 1001 characters (limit 1000)"),
        (7, "'url' is too long: 2054 characters (limit 2048)"),
        (8, "'url' must be a string, got list"),
        (9, "'date' is too long: 65 characters (limit 64)"),
        (12, "contains a number of more than 4300 digits; not accepted"),
    ]]  # fmt: skip
    ok, limits = [i for i in items if isinstance(i, Article)]
    assert ok.url == "https://e.org/]8;;evilx"
    assert "removed 2 control characters from 'url'" in ok.warnings
    assert (len(limits.doc_id), len(limits.title)) == (256, 1000)


def test_a_run_without_spaces_is_kept_out_of_chunks_with_a_warning(tmp_path, tokenizer):
    from newsindex.chunking import chunk_text

    blob = "x" * 2_000_000
    article = one(write(tmp_path / "blob.txt", f"date 2024-01-01 The council met on Monday. {blob} The vote passed."))
    assert isinstance(article, Article) and blob in article.text
    assert article.warnings == ["has a run of 2000000 characters without white space (at character 27); stored, but left out of the chunks that search reads"]
    chunks = chunk_text(article.text, tokenizer)
    assert [c.text for c in chunks] == ["The council met on Monday.", "The vote passed."]
    assert all(article.text[c.start : c.end] == c.text for c in chunks)
    error = one(write(tmp_path / "only-blob.txt", f"date 2024-01-01 {blob}"))
    assert isinstance(error, ArticleError)
    assert error.message == "has no words, only a run of 2000000 characters without white space"


def test_yaml_escapes_cannot_bring_control_characters_back(tmp_path):
    article = one(write(tmp_path / "e.md", '---\ntitle: "Red\\e[31m alert\\0"\nurl: "https://e.org/\\e]8;;x\\a"\n---\nBody.\n'))
    assert isinstance(article, Article)
    assert (article.title, article.url) == ("Red[31m alert", "https://e.org/]8;;x")
    assert "removed 2 control characters from 'url'" in article.warnings


def test_a_heading_that_is_the_title_stays_out_of_the_text(tmp_path):
    article = one(write(tmp_path / "plain.md", "# Budget passes\n\nThe council approved it.\n"))
    assert article.title == "Budget passes" and article.text == "The council approved it."
    same = one(write(tmp_path / "fm.md", "---\ntitle: Budget passes\n---\n#  Budget   passes\n\nText.\n"))
    assert same.text == "Text."
    only = one(write(tmp_path / "only.md", "# Just a heading\n"))
    assert only.title == "Just a heading" and only.text == "# Just a heading"  # nothing else to store


def test_txt_title_from_the_lead_when_the_file_name_is_no_title(tmp_path):
    lead = "A strong earthquake struck southern Kyrgyzstan on Tuesday. Three died."
    numbered = one(write(tmp_path / "quake-kyrgyzstan-4.txt", f"date 2024-01-02 {lead}\n\nMore.\n"))
    assert numbered.title == "A strong earthquake struck southern Kyrgyzstan on Tuesday."
    dated = one(write(tmp_path / "2024-01-02.txt", "date 2024-01-02 " + "word " * 40 + "\n"))
    assert dated.title.endswith("…") and len(dated.title) <= 91
    named = one(write(tmp_path / "crocus-city-hall-warning.txt", f"date 2024-01-02 {lead}\n"))
    assert named.title == "Crocus city hall warning"
