"""One base for every failure newsindex reports to its user. The CLI (and any other front end)
catches `NewsindexError` alone and shows its message as one line; driver errors are turned into
these where they arise, so no front end has to read DuckDB's or Prefect's message text."""

from __future__ import annotations


class NewsindexError(Exception):
    """A failure with a message fit to show as one line: what went wrong, and where."""

    # The status a command exits with when this stops it.
    exit_code = 1
