"""The vector width in SQL text: the one value newsindex writes into SQL instead of binding it.

A column type (`FLOAT[384]`) is part of the statement, not a value, so DuckDB cannot take it as a
bound parameter. The warehouse's width is the model's, fixed when its first writer creates it,
so the schema migrations and the search queries that cast the query vector to the column's type
are templates: `FLOAT[{dim}]`. `render` fills in `{dim}` with a checked integer and nothing else,
and refuses any other `{name}` marker, so no text can ever reach SQL this way.
"""

from __future__ import annotations

import re

from newsindex.errors import NewsindexError

MARKER = "{dim}"
# Far above any text embedding model, and below DuckDB's own ARRAY limit (100 000 elements).
MAX_DIM = 65_535
# `{name}` in lower case: DuckDB's own braces (`\p{L}` in regular expressions, struct literals
# `{'a': 1}`, quantifiers `{2}`) never look like this.
_MARKERS = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class TemplateError(NewsindexError):
    """A vector width or an SQL template that cannot be used."""


def checked(dim: object) -> int:
    """`dim` as the int it must be: a whole number from 1 to MAX_DIM (not a bool, not text)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise TemplateError(f"vector width must be a whole number from 1 to {MAX_DIM}, got {dim!r}")
    return int(dim)


def needs_width(sql: str) -> bool:
    return MARKER in sql


def check_markers(sql: str, source: str) -> None:
    """TemplateError naming `source` if the SQL holds a `{name}` marker other than `{dim}`."""
    unknown = sorted({m for m in _MARKERS.findall(sql) if m != "dim"})
    if unknown:
        raise TemplateError(f"{source}: unknown template marker {{{unknown[0]}}}; only {MARKER} (the vector width) is filled in")


def render(sql: str, dim: int | None, source: str) -> str:
    """`sql` with every `{dim}` replaced by the checked width; `source` names the file in errors.
    SQL without markers comes back unchanged (and needs no width)."""
    check_markers(sql, source)
    if not needs_width(sql):
        return sql
    if dim is None:
        raise TemplateError(f"{source}: needs the vector width ({MARKER}) and none was given")
    return sql.replace(MARKER, str(checked(dim)))
