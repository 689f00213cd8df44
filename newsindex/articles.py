"""Reading article files: plain text with a `date` header, Markdown with front matter, JSON Lines.

Every problem with a file becomes an ArticleError that names the file (and line), so one bad file
never stops a run and the user can find and fix it.
"""

from __future__ import annotations

import codecs
import datetime as dt
import errno
import functools
import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsindex.errors import NewsindexError
from newsindex.chunking import MAX_WORD_CHARS, long_runs

TEXT_SUFFIXES = {".txt"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | JSONL_SUFFIXES

# A news article is a few kilobytes; ten megabytes is a dump, a book or a mistake, and would take
# many minutes to embed. Checked with stat before reading; JSON Lines files are streamed instead,
# so there the limit applies to each line and the file may be any size.
MAX_ARTICLE_BYTES = 10_000_000
# Leads are shown in search results; a 50 000-character first line must not become one.
MAX_LEAD_CHARS = 1000
# Limits on the fields a file gives (front matter, JSON Lines): a value over its limit is a mistake
# or an attack, and rejects the article with one line. Titles, urls and ids are printed in every
# search result; a date is a few characters. Titles the reader derives (a heading) are shortened.
FIELD_LIMITS = {"title": 1000, "url": 2048, "source": 2048, "id": 256, "date": 64}
# Front matter is a few lines of fields. PyYAML is pure Python and builds an object per node: 1.5 MB
# of front matter took a minute and 360 MB, so a 10 MB file could hold minutes and gigabytes.
MAX_FRONT_MATTER_CHARS = 65_536
_SNIFF_BYTES = 8192
# UTF-32 first: its little-endian mark starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)  # fmt: skip
# C0 and C1 control characters except tab, newline, carriage return, form feed and vertical tab
# (white space): terminal escapes and mojibake that no reader wants in an article.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# In an id or url even white space is a control character: ids are typed and printed on one line.
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNPRINTABLE_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))

# `date` then a token that starts with a digit: "Date night ideas" is prose, "date 2024/3/7" a bad header.
_DATE_HEADER = re.compile(r"\A\s*date[ \t]+(?P<token>\d\S*)", re.IGNORECASE)
# A time after the date is allowed (front matter often has one) and ignored.
_ISO_DATE = re.compile(r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?:[T ]\d{2}:\d{2}[0-9:.+\-Z]*)?")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(?P<yaml>.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_MD_HEADING = re.compile(r"^#\s+(?P<title>.+?)\s*#*\s*$", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_NON_SPACE = re.compile(r"\S")


class ArticleError(NewsindexError):
    """A file (or one line of it) that cannot be ingested."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        super().__init__(message)
        # Reports are one line of valid UTF-8 whatever the file is called (they go to a terminal
        # and into the ingest_errors table).
        self.path = display_path(path)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


@dataclass
class Article:
    doc_id: str
    source_path: str
    format: str
    title: str
    lead: str
    published: dt.date | None
    url: str | None
    text: str
    line: int | None = None
    warnings: list[str] = field(default_factory=list)
    # True for a JSON Lines line without an `id`: its id is made from the file and the text.
    derived_id: bool = False

    @property
    def content_hash(self) -> str:
        payload = json.dumps(
            [self.title, self.lead, self.published.isoformat() if self.published else None, self.url, self.text],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @property
    def text_hash(self) -> str:
        """SHA-256 of the text alone (DuckDB's sha256(text) gives the same): finds the same article
        stored under two names."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def display_path(path: str | Path) -> str:
    """The path as one printable line: bytes that are not UTF-8 and control characters escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return _UNPRINTABLE_IN_NAME.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _megabytes(size: int, limit_of: str = "") -> str:
    return f"{size / 1e6:.1f} MB (limit {MAX_ARTICLE_BYTES / 1e6:g} MB{limit_of})"


def path_doc_id(path: Path) -> str:
    """Readable and stable: the file's stem plus a short hash of its absolute path, so equal names in
    different folders do not collide and re-runs from another working directory find the same id."""
    digest = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]
    return f"{path.stem}-{digest}"


def derived_id_prefix(path: str | Path) -> str:
    """What every id made for an id-less JSON Lines line of this file starts with (also the
    `<file id>:<line>` ids that earlier versions made)."""
    return f"{path_doc_id(Path(path))}:"


def _derived_id(path: Path, text: str) -> str:
    """An id-less line's identity is its text, not its position: a feed that adds its newest line at
    the top must not shift (and re-embed) every line below it."""
    return derived_id_prefix(path) + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _too_long(name: str, value: str, label: str | None = None) -> str | None:
    """The one-line problem with a field over its limit; `label` names it as the file does."""
    limit = FIELD_LIMITS[name]
    if len(value) <= limit:
        return None
    return f"{label or repr(name)} is too long: {len(value)} characters (limit {limit})"


def read_articles(path: str | Path, today: dt.date | None = None) -> Iterator[Article | ArticleError]:
    """Yield the articles in one file, and an ArticleError for each problem.

    A text or Markdown file yields exactly one item; a JSON Lines file yields one per non-blank line.
    Nothing is read before the file is known to be a regular file of acceptable size, and a JSON
    Lines file is streamed, so memory stays bounded by MAX_ARTICLE_BYTES whatever the input.
    """
    path = Path(path)
    for item in _read(path, today):
        yield _check_words(path, item) if isinstance(item, Article) else item


def _check_words(path: Path, article: Article) -> Article | ArticleError:
    """Runs without white space longer than any word are left out of the chunks (see chunking):
    say so, and refuse an article that has nothing else."""
    runs = long_runs(article.text)
    if not runs:
        return article
    longest = max(runs, key=lambda r: r[1] - r[0])
    size = longest[1] - longest[0]
    gaps = zip([0] + [end for _, end in runs], [start for start, _ in runs] + [len(article.text)])
    if not any(_NON_SPACE.search(article.text, start, end) for start, end in gaps):
        return ArticleError(path, f"has no words, only {_runs_phrase(runs, size)}", article.line)
    article.warnings.append(f"has {_runs_phrase(runs, size)} (at character {longest[0]}); stored, but left out of the chunks that search reads")
    return article


def _runs_phrase(runs: list[tuple[int, int]], longest: int) -> str:
    if len(runs) == 1:
        return f"a run of {longest} characters without white space"
    return f"{len(runs)} runs of over {MAX_WORD_CHARS} characters without white space, the longest {longest}"


def _read(path: Path, today: dt.date | None) -> Iterator[Article | ArticleError]:
    today = today or dt.date.today()
    suffix = path.suffix.lower()
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        yield ArticleError(path, "file name is not valid UTF-8; rename the file")
        return
    if suffix not in SUPPORTED_SUFFIXES:
        yield ArticleError(path, f"unknown extension {suffix or '(none)'!r}; expected .txt, .md or .jsonl")
        return
    try:
        size = _regular_file_size(path)
        with _open(path) as handle:
            head = handle.read(_SNIFF_BYTES)
            encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
            if suffix in JSONL_SUFFIXES and encoding is None:
                # A JSON Lines file starts with "{": then a NUL byte costs only its line.
                if b"\x00" in head and not head.lstrip(codecs.BOM_UTF8 + b" \t\r\n").startswith(b"{"):
                    raise ArticleError(path, "is a binary file (contains NUL bytes)")
                handle.seek(0)
                yield from _parse_jsonl(path, _byte_lines(path, handle), today)
                return
            if size > MAX_ARTICLE_BYTES:
                raise ArticleError(path, f"is too large: {_megabytes(size)}")
            # Read one byte past the limit: the file may have grown since stat.
            raw = head + handle.read(MAX_ARTICLE_BYTES + 1 - len(head))
        if len(raw) > MAX_ARTICLE_BYTES:
            raise ArticleError(path, f"is too large: {_megabytes(len(raw))}")
        content, warnings = _decode(path, raw, encoding)
    except ArticleError as err:
        yield err
        return
    if suffix in JSONL_SUFFIXES:
        lines = enumerate(content.split("\n"), start=1)
        yield from _with_warnings(_parse_jsonl(path, lines, today), warnings)
        return
    try:
        content, removed = _strip_controls(content)
        if removed:
            warnings.append(_removed_message(removed))
        if suffix in TEXT_SUFFIXES:
            article = _parse_text(path, content, today)
        else:
            article = _parse_markdown(path, content, today)
    except ArticleError as err:
        yield err
        return
    article.warnings[:0] = warnings
    yield article


def _with_warnings(items: Iterator[Article | ArticleError], warnings: list[str]) -> Iterator[Article | ArticleError]:
    """File-level warnings (an encoding) are reported once, with the file's first article."""
    for item in items:
        if warnings and isinstance(item, Article):
            item.warnings[:0] = warnings
            warnings = []
        yield item


def _regular_file_size(path: Path) -> int:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise ArticleError(path, f"broken symlink to {display_path(os.readlink(path))}") from None
        raise ArticleError(path, "file not found") from None
    except PermissionError:
        raise ArticleError(path, "permission denied") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ArticleError(path, "symlink loop (too many levels of symbolic links)") from None
        raise ArticleError(path, f"cannot read: {err.strerror or err}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ArticleError(path, "is a directory, not an article file")
    if not stat.S_ISREG(info.st_mode):
        # Opening a named pipe would block the run forever.
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "a special file")
        raise ArticleError(path, f"is not a regular file ({kind})")
    if info.st_size == 0:
        raise ArticleError(path, "is empty (0 bytes)")
    return info.st_size


def _open(path: Path):
    try:
        return open(path, "rb")
    except PermissionError:
        raise ArticleError(path, "permission denied") from None
    except OSError as err:
        raise ArticleError(path, f"cannot read: {err.strerror or err}") from None


def _decode(path: Path, raw: bytes, encoding: str | None) -> tuple[str, list[str]]:
    """The file's text with newlines normalised. UTF-16 and UTF-32 are accepted when a byte-order
    mark says so (Windows editors save "Unicode" that way); without one, only UTF-8."""
    warnings: list[str] = []
    if encoding:
        try:
            text = raw.decode(encoding.lower().replace("-", ""))
        except UnicodeDecodeError as err:
            raise ArticleError(path, f"is not valid {encoding} (bad bytes at offset {err.start})") from None
        warnings.append(f"decoded as {encoding} (byte-order mark); UTF-8 is preferred")
    else:
        if b"\x00" in raw:
            raise ArticleError(path, "is a binary file (contains NUL bytes)")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            offset = err.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0)
            line = raw.count(b"\n", 0, offset) + 1
            column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
            raise ArticleError(
                path, f"is not valid UTF-8 (byte 0x{raw[offset]:02x} at line {line}, column {column})"
            ) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ArticleError(path, "is empty (only white space)")
    return text, warnings


def _byte_lines(path: Path, handle) -> Iterator[tuple[int, str | ArticleError]]:
    """(line number, text) for each line of a UTF-8 file, read one line at a time; a line over the
    limit is skipped in pieces, never held whole."""
    number = 0
    saw_text = False
    while True:
        line = handle.readline(MAX_ARTICLE_BYTES + 1)
        if not line:
            break
        number += 1
        if number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        if len(line) > MAX_ARTICLE_BYTES and not line.endswith(b"\n"):
            size = len(line)
            while line and not line.endswith(b"\n"):
                line = handle.readline(1 << 20)
                size += len(line)
            saw_text = True
            size -= 1 if line.endswith(b"\n") else 0
            yield number, ArticleError(path, f"line too large: {_megabytes(size, ' per line')}", number)
            continue
        if not line.strip():
            continue
        saw_text = True
        if b"\x00" in line:
            yield number, ArticleError(path, "contains NUL bytes (binary data)", number)
            continue
        try:
            yield number, line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield number, ArticleError(path, f"is not valid UTF-8 (byte 0x{line[err.start]:02x} at column {err.start + 1})", number)
    if not saw_text:
        yield 0, ArticleError(path, "is empty (only white space)")


def _strip_controls(text: str) -> tuple[str, int]:
    cleaned, removed = _CONTROL.subn("", text)
    return cleaned, removed


def _removed_message(removed: int) -> str:
    return f"removed {removed} control character{'s' if removed != 1 else ''}"


def _check_date(path: Path, value: str, today: dt.date, line: int | None = None, label: str | None = None) -> tuple[dt.date, list[str]]:
    problem = _too_long("date", value.strip(), label)
    if problem:
        raise ArticleError(path, problem, line)
    match = _ISO_DATE.fullmatch(value.strip())
    if not match:
        raise ArticleError(path, f"malformed date {value.strip()!r}; expected YYYY-MM-DD", line)
    try:
        date = dt.date(int(match["y"]), int(match["m"]), int(match["d"]))
    except ValueError:
        raise ArticleError(path, f"impossible date {value.strip()!r}", line) from None
    warnings = [f"date {date.isoformat()} is in the future"] if date > today else []
    return date, warnings


def _same_words(a: str, b: str) -> bool:
    return a.split() == b.split()


def _first_paragraph(text: str) -> str:
    for para in _PARAGRAPH_BREAK.split(text.strip()):
        para = para.strip()
        if para and not para.startswith("#"):
            return " ".join(para.split())
    return ""


def _title_from_stem(path: Path) -> str:
    words = " ".join(re.sub(r"[-_]+", " ", path.stem).split())
    return words[:1].upper() + words[1:]


# A file name that reads as a title has at least two words of letters and no serial number in it
# (`crocus-city-hall-warning.txt`, not `quake-kyrgyzstan-4.txt` or `2024-03-07.txt`).
_SERIAL = re.compile(r"(^|[\s])\d+($|[\s])")
TITLE_FROM_LEAD_CHARS = 90


def _text_title(path: Path, lead: str) -> str:
    """A `.txt` article's title: its file name made readable when that reads as a title, else the
    lead's first sentence (cut at a word, with an ellipsis, past TITLE_FROM_LEAD_CHARS)."""
    named = _title_from_stem(path)
    words = [w for w in named.split() if any(c.isalpha() for c in w)]
    if len(words) >= 2 and not _SERIAL.search(named) or not lead:
        return named
    sentence = re.split(r"(?<=[.!?])\s", lead, maxsplit=1)[0].strip()
    if len(sentence) > TITLE_FROM_LEAD_CHARS:
        sentence = sentence[: TITLE_FROM_LEAD_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return sentence


def _parse_text(path: Path, content: str, today: dt.date) -> Article:
    header = _DATE_HEADER.match(content)
    warnings: list[str] = []
    published = None
    if header:
        published, warnings = _check_date(path, header["token"], today, label="date header")
        body = content[header.end() :]
    else:
        warnings.append("no 'date YYYY-MM-DD' header; stored without a date")
        body = content
    text = body.strip()
    if not text:
        raise ArticleError(path, "has a date header but no text")
    lead = text.split("\n", 1)[0].strip() if header else _first_paragraph(text)
    lead = _shorten(lead, MAX_LEAD_CHARS)
    return Article(
        doc_id=path_doc_id(path),
        source_path=str(path.resolve()),
        format="txt",
        title=_text_title(path, lead),
        lead=lead,
        published=published,
        url=None,
        text=text,
        warnings=warnings,
    )


def _parse_markdown(path: Path, content: str, today: dt.date) -> Article:
    meta: dict = {}
    body = content
    front = _FRONT_MATTER.match(content)
    if front:
        import yaml

        if len(front["yaml"]) > MAX_FRONT_MATTER_CHARS:
            raise ArticleError(path, f"front matter is too long: {len(front['yaml'])} characters (limit {MAX_FRONT_MATTER_CHARS})")
        try:
            loaded = yaml.load(front["yaml"], Loader=_front_matter_loader()) or {}
        except _AliasRefused as err:
            raise ArticleError(path, f"front matter uses a YAML alias (*{err.args[0]}); aliases are not allowed", err.args[1]) from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 2 if mark else None
            raise ArticleError(path, "front matter is not valid YAML", line) from None
        except RecursionError:
            raise ArticleError(path, "front matter is nested too deeply") from None
        if not isinstance(loaded, dict):
            raise ArticleError(path, "front matter must be a mapping of fields")
        for name in ("title", "date", "url", "source"):
            value = loaded.get(name)
            if value is not None and not isinstance(value, str):
                raise ArticleError(path, f"front matter '{name}' must be a single value, got a {_yaml_kind(value)}")
            problem = _too_long(name, value or "", f"front matter '{name}'")
            if problem:
                raise ArticleError(path, problem)
        meta = loaded
        body = content[front.end() :]
    text = body.strip()
    if not text:
        raise ArticleError(path, "has no text after the front matter")
    warnings: list[str] = []
    published = None
    raw_date = meta.get("date")
    if raw_date not in (None, ""):
        published, warnings = _check_date(path, str(raw_date), today, label="front matter 'date'")
    else:
        warnings.append("no date in front matter; stored without a date")
    heading = _MD_HEADING.search(text)
    # The file's control characters are gone already, but YAML's escapes ("\e", "\0") make new ones.
    title = _strip_controls(meta.get("title") or "")[0]
    if heading and not text[: heading.start()].strip() and (not title or _same_words(title, heading["title"])):
        # The heading that opens the article is its title, not its text: kept out of the body (and so
        # out of the first chunk), unless nothing else is there.
        rest = text[heading.end() :].strip()
        if rest:
            text = rest
    title = title or _shorten(heading["title"] if heading else "", FIELD_LIMITS["title"]) or _title_from_stem(path)
    url, removed = _ANY_CONTROL.subn("", meta.get("url") or meta.get("source") or "")
    if removed:
        warnings.append(_removed_message(removed) + " from 'url'")
    return Article(
        doc_id=path_doc_id(path),
        source_path=str(path.resolve()),
        format="md",
        title=" ".join(title.split()),
        lead=_shorten(_first_paragraph(text), MAX_LEAD_CHARS),
        published=published,
        url=url or None,
        text=text,
        warnings=warnings,
    )


class _AliasRefused(Exception):
    """An alias in front matter: `*a` repeats what `&a` names, so a few hundred bytes of nested
    aliases expand to gigabytes (the "billion laughs"). No article needs one."""


@functools.cache
def _front_matter_loader() -> type:
    """BaseLoader keeps every value a string (YAML's own date parsing would crash on 2024-13-01);
    this one also refuses aliases before they are expanded. Built on first use: yaml is imported
    only when a Markdown file has front matter."""
    import yaml

    class FrontMatterLoader(yaml.BaseLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _AliasRefused(event.anchor, event.start_mark.line + 2)
            return super().compose_node(parent, index)

    return FrontMatterLoader


def _yaml_kind(value) -> str:
    return "list" if isinstance(value, list) else "mapping" if isinstance(value, dict) else type(value).__name__


def _parse_jsonl(
    path: Path, lines: Iterator[tuple[int, str | ArticleError]], today: dt.date
) -> Iterator[Article | ArticleError]:
    source = str(path.resolve())
    for number, line in lines:
        if isinstance(line, ArticleError):
            yield line
            continue
        if not line.strip():
            continue
        try:
            # strict=False: a raw tab or control character inside a string is tolerated (and
            # cleaned below) rather than costing the whole article.
            record = json.loads(line, strict=False)
        except json.JSONDecodeError as err:
            yield ArticleError(path, f"not valid JSON ({err.msg} at column {err.colno})", number)
            continue
        except ValueError:
            # Python refuses to convert an integer of more than 4300 digits (a denial-of-service guard).
            yield ArticleError(path, f"contains a number of more than {sys.get_int_max_str_digits()} digits; not accepted", number)
            continue
        except RecursionError:
            yield ArticleError(path, "is nested too deeply to be an article", number)
            continue
        if not isinstance(record, dict):
            yield ArticleError(path, f"expected a JSON object, got {type(record).__name__}", number)
            continue
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            bad = f"\\u{ord(err.object[err.start]):04x}"
            yield ArticleError(path, f"contains an unpaired surrogate escape {bad}; not valid Unicode", number)
            continue
        text = record.get("text")
        if text is None:
            yield ArticleError(path, "missing 'text'", number)
            continue
        if not isinstance(text, str):
            yield ArticleError(path, f"'text' must be a string, got {type(text).__name__}", number)
            continue
        text, removed = _strip_controls(text.replace("\r\n", "\n").replace("\r", "\n"))
        text = text.strip()
        if not text:
            yield ArticleError(path, "'text' is empty", number)
            continue
        warnings: list[str] = [_removed_message(removed)] if removed else []
        published = None
        if record.get("date") not in (None, ""):
            try:
                published, date_warnings = _check_date(path, str(record["date"]), today, number)
            except ArticleError as err:
                yield err
                continue
            warnings += date_warnings
        else:
            warnings.append("no 'date'; stored without a date")
        try:
            doc_id = _record_id(path, record.get("id"), number)
            title = _record_field(path, record, "title", number)
            url = _record_field(path, record, "url", number)
        except ArticleError as err:
            yield err
            continue
        if url:
            url, removed = _ANY_CONTROL.subn("", url)
            if removed:
                warnings.append(_removed_message(removed) + " from 'url'")
        lead = _first_paragraph(text)
        title = " ".join(_strip_controls(title or "")[0].split())
        yield Article(
            doc_id=doc_id or _derived_id(path, text),
            source_path=source,
            format="jsonl",
            title=title or _shorten(lead, 100),
            lead=_shorten(lead, MAX_LEAD_CHARS),
            published=published,
            url=url or None,
            text=text,
            line=number,
            warnings=warnings,
            derived_id=doc_id is None,
        )


def _record_id(path: Path, raw_id, line: int) -> str | None:
    """The line's own id, or None when it has none. Ids are typed in commands and printed on one
    line, so control characters (NUL above all) are refused rather than cleaned: a cleaned id would
    not be the one the feed uses."""
    if raw_id is None or raw_id == "":
        return None
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise ArticleError(path, f"'id' must be a string or integer, got {type(raw_id).__name__}", line)
    doc_id = str(raw_id)
    control = _ANY_CONTROL.search(doc_id)
    if control:
        escaped = control.group().encode("unicode_escape").decode("ascii")
        raise ArticleError(path, f"'id' contains a control character ({escaped}); ids must be printable", line)
    problem = _too_long("id", doc_id)
    if problem:
        raise ArticleError(path, problem, line)
    return doc_id


def _record_field(path: Path, record: dict, name: str, line: int) -> str | None:
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        raise ArticleError(path, f"'{name}' must be a string, got {type(value).__name__}", line)
    text = str(value)
    problem = _too_long(name, text)
    if problem:
        raise ArticleError(path, problem, line)
    return text


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + "…"


@dataclass
class Discovered:
    files: list[str] = field(default_factory=list)
    errors: list[ArticleError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def discover_files(paths: Sequence[str | Path]) -> Discovered:
    """Every candidate file under `paths`, sorted and each once; hidden files and folders are skipped.
    Everything that is not a folder is a candidate, so read_articles reports what is wrong with it."""
    found = Discovered()
    files: list[str] = []

    def unlistable(err: OSError) -> None:
        found.errors.append(ArticleError(err.filename, f"cannot list the folder: {err.strerror or err}"))

    for given in paths:
        root = Path(given)
        if root.is_dir():
            if root.suffix.lower() in SUPPORTED_SUFFIXES:
                found.warnings.append(f"{display_path(root)}: {_FOLDER_LIKE_ARTICLE}")
            for folder, dirs, names in os.walk(root, onerror=unlistable, followlinks=False):
                for name in dirs:
                    _warn_folder(Path(folder) / name, found.warnings)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(folder, d)))
                files.extend(str(Path(folder) / n) for n in sorted(names) if not n.startswith("."))
        elif root.exists() or root.is_symlink():
            files.append(str(root))
        else:
            found.errors.append(ArticleError(root, "no such file or directory"))
    # The same file named twice (a folder and a file in it, or through a symlink) is still one file.
    unique = {os.path.realpath(f): f for f in reversed(files)}
    found.files = sorted(unique.values())
    return found


def _warn_folder(folder: Path, warnings: list[str]) -> None:
    if folder.name.startswith("."):
        return
    if folder.is_symlink():
        warnings.append(f"{display_path(folder)}: is a symlink to a folder; not followed")
    elif folder.suffix.lower() in SUPPORTED_SUFFIXES:
        warnings.append(f"{display_path(folder)}: {_FOLDER_LIKE_ARTICLE}")


_FOLDER_LIKE_ARTICLE = "is a folder named like an article file; reading the files in it"


def read_guarded(path: str | os.PathLike) -> Iterator[Article | ArticleError]:
    """read_articles, except that an error nobody foresaw costs that file, not the whole run."""
    try:
        yield from read_articles(path)
    except Exception as err:  # noqa: BLE001
        detail = (str(err).splitlines() or [""])[0]
        yield ArticleError(str(path), f"could not be read: {type(err).__name__}: {detail}")
