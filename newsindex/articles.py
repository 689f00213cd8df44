"""Reading article files: plain text with a `date` header, Markdown with front matter, JSON Lines.

Every problem with a file becomes an ArticleError that names the file (and line), so one bad file
never stops a run and the user can find and fix it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TEXT_SUFFIXES = {".txt"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
JSONL_SUFFIXES = {".jsonl"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | JSONL_SUFFIXES

# `date` then a token that starts with a digit: "Date night ideas" is prose, "date 2024/3/7" a bad header.
_DATE_HEADER = re.compile(r"\A\s*date[ \t]+(?P<token>\d\S*)", re.IGNORECASE)
# A time after the date is allowed (front matter often has one) and ignored.
_ISO_DATE = re.compile(r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?:[T ]\d{2}:\d{2}[0-9:.+\-Z]*)?")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(?P<yaml>.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_MD_HEADING = re.compile(r"^#\s+(?P<title>.+?)\s*#*\s*$", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


class ArticleError(Exception):
    """A file (or one line of it) that cannot be ingested."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        super().__init__(message)
        self.path = str(path)
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

    @property
    def content_hash(self) -> str:
        payload = json.dumps(
            [self.title, self.lead, self.published.isoformat() if self.published else None, self.url, self.text],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def path_doc_id(path: Path) -> str:
    """Readable and stable: the file's stem plus a short hash of its absolute path, so equal names in
    different folders do not collide and re-runs from another working directory find the same id."""
    digest = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]
    return f"{path.stem}-{digest}"


def read_articles(path: str | Path, today: dt.date | None = None) -> Iterator[Article | ArticleError]:
    """Yield the articles in one file, and an ArticleError for each problem.

    A text or Markdown file yields exactly one item; a JSON Lines file yields one per non-blank line.
    """
    path = Path(path)
    today = today or dt.date.today()
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        yield ArticleError(path, f"unknown extension {suffix or '(none)'!r}; expected .txt, .md or .jsonl")
        return
    try:
        content = _read_text(path)
    except ArticleError as err:
        yield err
        return
    if suffix in JSONL_SUFFIXES:
        yield from _parse_jsonl(path, content, today)
        return
    try:
        if suffix in TEXT_SUFFIXES:
            yield _parse_text(path, content, today)
        else:
            yield _parse_markdown(path, content, today)
    except ArticleError as err:
        yield err


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ArticleError(path, "is a directory, not an article file") from None
    except FileNotFoundError:
        raise ArticleError(path, "file not found (a broken symlink?)") from None
    except PermissionError:
        raise ArticleError(path, "permission denied") from None
    except OSError as err:
        raise ArticleError(path, f"cannot read: {err.strerror or err}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ArticleError(path, "is UTF-16 encoded; articles must be UTF-8")
    if b"\x00" in raw[:8192]:
        raise ArticleError(path, "is a binary file (contains NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ArticleError(path, f"is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ArticleError(path, "is empty")
    return text


def _check_date(path: Path, value: str, today: dt.date, line: int | None = None) -> tuple[dt.date, list[str]]:
    match = _ISO_DATE.fullmatch(value.strip())
    if not match:
        raise ArticleError(path, f"malformed date {value.strip()!r}; expected YYYY-MM-DD", line)
    try:
        date = dt.date(int(match["y"]), int(match["m"]), int(match["d"]))
    except ValueError:
        raise ArticleError(path, f"impossible date {value.strip()!r}", line) from None
    warnings = [f"date {date.isoformat()} is in the future"] if date > today else []
    return date, warnings


def _first_paragraph(text: str) -> str:
    for para in _PARAGRAPH_BREAK.split(text.strip()):
        para = para.strip()
        if para and not para.startswith("#"):
            return " ".join(para.split())
    return ""


def _title_from_stem(path: Path) -> str:
    words = re.sub(r"[-_]+", " ", path.stem).strip()
    return words[:1].upper() + words[1:]


def _parse_text(path: Path, content: str, today: dt.date) -> Article:
    header = _DATE_HEADER.match(content)
    warnings: list[str] = []
    published = None
    if header:
        published, warnings = _check_date(path, header["token"], today)
        body = content[header.end() :]
    else:
        warnings.append("no 'date YYYY-MM-DD' header; stored without a date")
        body = content
    text = body.strip()
    if not text:
        raise ArticleError(path, "has a date header but no text")
    lead = text.split("\n", 1)[0].strip() if header else _first_paragraph(text)
    return Article(
        doc_id=path_doc_id(path),
        source_path=str(path.resolve()),
        format="txt",
        title=_title_from_stem(path),
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

        try:
            # BaseLoader keeps every value a string: YAML's own date parsing would crash on 2024-13-01.
            loaded = yaml.load(front["yaml"], Loader=yaml.BaseLoader) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 2 if mark else None
            raise ArticleError(path, "front matter is not valid YAML", line) from None
        if not isinstance(loaded, dict):
            raise ArticleError(path, "front matter must be a mapping of fields")
        meta = loaded
        body = content[front.end() :]
    text = body.strip()
    if not text:
        raise ArticleError(path, "has no text after the front matter")
    warnings: list[str] = []
    published = None
    raw_date = meta.get("date")
    if raw_date not in (None, ""):
        published, warnings = _check_date(path, str(raw_date), today)
    else:
        warnings.append("no date in front matter; stored without a date")
    heading = _MD_HEADING.search(text)
    title = str(meta.get("title") or (heading["title"] if heading else "") or _title_from_stem(path))
    url = meta.get("url") or meta.get("source")
    return Article(
        doc_id=path_doc_id(path),
        source_path=str(path.resolve()),
        format="md",
        title=title.strip(),
        lead=_first_paragraph(text),
        published=published,
        url=str(url) if url else None,
        text=text,
        warnings=warnings,
    )


def _parse_jsonl(path: Path, content: str, today: dt.date) -> Iterator[Article | ArticleError]:
    source = str(path.resolve())
    base_id = path_doc_id(path)
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield ArticleError(path, f"not valid JSON ({err.msg} at column {err.colno})", number)
            continue
        if not isinstance(record, dict):
            yield ArticleError(path, f"expected a JSON object, got {type(record).__name__}", number)
            continue
        text = record.get("text")
        if text is None:
            yield ArticleError(path, "missing 'text'", number)
            continue
        if not isinstance(text, str):
            yield ArticleError(path, f"'text' must be a string, got {type(text).__name__}", number)
            continue
        text = text.replace("\r\n", "\n").strip()
        if not text:
            yield ArticleError(path, "'text' is empty", number)
            continue
        warnings: list[str] = []
        published = None
        if record.get("date") not in (None, ""):
            try:
                published, warnings = _check_date(path, str(record["date"]), today, number)
            except ArticleError as err:
                yield err
                continue
        else:
            warnings.append("no 'date'; stored without a date")
        raw_id = record.get("id")
        if raw_id is not None and not isinstance(raw_id, (str, int)):
            yield ArticleError(path, f"'id' must be a string or integer, got {type(raw_id).__name__}", number)
            continue
        lead = _first_paragraph(text)
        title = record.get("title")
        yield Article(
            doc_id=str(raw_id) if raw_id not in (None, "") else f"{base_id}:{number}",
            source_path=source,
            format="jsonl",
            title=str(title).strip() if title else _shorten(lead, 100),
            lead=lead,
            published=published,
            url=str(record["url"]) if record.get("url") else None,
            text=text,
            line=number,
            warnings=warnings,
        )


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + "…"
