"""Named queries: the `.sql` files in this folder, each with a header that names it, says what it
does and declares its parameters. Parameters are bound by DuckDB ($name), never pasted into SQL.

Header format, one line each, before the SQL:

    -- name: latest_articles
    -- description: The most recently published articles, newest first.
    -- param: limit integer = 10  How many articles

`-- internal: true` marks a helper that search code runs for itself (its parameters are filled in
by newsindex, such as a query vector); `newsindex queries` lists those only with --all.

A parameter without `= default` is required; `= null` makes it optional with no value.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

# One class for every query that cannot run, whether its parameters or its SQL are wrong.
from newsindex.warehouse.connection import QueryError
from newsindex.warehouse import width

_PARAM = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\s+(?P<type>text|integer|float|date|boolean)(?:\s*=\s*(?P<default>\S+))?\s*(?P<help>.*)$")


# Parameters that newsindex fills in itself (the query's embedding, computed from `query`).
FILLED_IN = frozenset({"vector"})


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool
    default: object
    help: str


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    params: tuple[Param, ...]
    sql: str
    file: str
    internal: bool = False

    @property
    def needs_width(self) -> bool:
        """Whether the SQL names the warehouse's vector type (`FLOAT[{dim}]`): run `sql_for(dim)`."""
        return width.needs_width(self.sql)

    def sql_for(self, dim: int | None) -> str:
        """The statement for a warehouse of `dim`-wide vectors. A type cannot be a bound parameter,
        so the width is the one value written into the SQL, as a checked integer (warehouse/width.py)."""
        return width.render(self.sql, dim, self.file)

    def bind(self, values: dict[str, object]) -> dict[str, object]:
        """Convert and check values (strings from the command line, or Python values) for DuckDB."""
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise QueryError(f"{self.name}: unknown parameter {', '.join(unknown)}; it takes {', '.join(sorted(known)) or 'none'}")
        bound = {}
        for param in self.params:
            if param.name in values and values[param.name] is not None:
                bound[param.name] = convert(self.name, param, values[param.name])
            elif param.required:
                raise QueryError(f"{self.name}: missing parameter {param.name} ({param.type}): {param.help}")
            else:
                bound[param.name] = param.default
        return bound


def convert(query: str, param: Param, value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        if param.type == "integer":
            number = int(value)
            # DuckDB's BIGINT; a larger value would fail later, in the query, less clearly.
            if not -(2**63) <= number < 2**63:
                raise ValueError
            return number
        if param.type == "float":
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError  # NaN and infinities poison every score they touch
            return number
        if param.type == "date":
            return dt.date.fromisoformat(value)
        if param.type == "boolean":
            lowered = value.lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError
            return lowered in {"true", "1", "yes"}
    except ValueError:
        article = "an" if param.type[0] in "aeiou" else "a"
        raise QueryError(f"{query}: parameter {param.name} must be {article} {param.type}, got {value!r}") from None
    return value


def parse(text: str, file: str) -> NamedQuery:
    fields: dict[str, str] = {}
    params: list[Param] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        key, _, rest = line[2:].strip().partition(":")
        rest = rest.strip()
        if key == "param":
            match = _PARAM.match(rest)
            if not match:
                raise QueryError(f"{file}: cannot read parameter line {line!r}")
            default = match["default"]
            params.append(
                Param(
                    name=match["name"],
                    type=match["type"],
                    required=default is None,
                    default=None if default in (None, "null") else convert(file, Param(match["name"], match["type"], False, None, ""), default),
                    help=match["help"].strip(),
                )
            )
        elif key in {"name", "description", "internal"}:
            fields[key] = rest
    if "name" not in fields or "description" not in fields:
        raise QueryError(f"{file}: a named query starts with '-- name:' and '-- description:' lines")
    internal = fields.get("internal", "false").lower() in {"true", "yes"}
    width.check_markers(text, file)
    return NamedQuery(fields["name"], fields["description"], tuple(params), text, file, internal)


@lru_cache(maxsize=1)
def all_queries() -> dict[str, NamedQuery]:
    found = {}
    for entry in sorted(resources.files("newsindex.queries").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            query = parse(entry.read_text(encoding="utf-8"), entry.name)
            found[query.name] = query
    return found


def get(name: str) -> NamedQuery:
    queries = all_queries()
    if name not in queries:
        raise QueryError(f"no query named {name!r}; `newsindex queries` lists them")
    return queries[name]
