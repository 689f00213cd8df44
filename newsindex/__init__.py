"""newsindex: news articles into a searchable DuckDB index. `from newsindex import Index` is the
Python API (newsindex/api.py)."""


def __getattr__(name: str):
    # Lazy: core modules import this package, and must not pull in the query layer with it.
    if name == "Index":
        from newsindex.api import Index

        return Index
    raise AttributeError(f"module 'newsindex' has no attribute {name!r}")
