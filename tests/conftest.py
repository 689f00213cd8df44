"""Shared fixtures: the real model's tokenizer, a real DuckDB file per test, and one real Prefect
server for the whole session (starting one costs several seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
# Rich sizes and colours output from these when set (a CI runner may export them): the tests, and
# the `newsindex` processes they start, expect what a pipe gets, 80 columns and no colour codes.
for _name in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
    os.environ.pop(_name, None)

from newsindex import config  # noqa: E402

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SEED_FILE = SEEDS / "crocus-city-hall-warning.txt"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return config.model_path()


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from newsindex.chunking import load_tokenizer

    return load_tokenizer(str(model_dir))


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "warehouse" / "test.duckdb"


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` (via `newsindex server start`'s code) on a free port, with its
    own PREFECT_HOME, shared by the session. Subprocesses find it through PREFECT_API_URL."""
    from newsindex.flows import server

    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["NEWSINDEX_PREFECT_HOME"] = str(home)
    state = server.start(port=free_port(), home=home, timeout=240)
    os.environ["PREFECT_API_URL"] = state.api_url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings({PREFECT_API_URL: state.api_url}):
            yield state
            # Logs and events still queued would otherwise be sent at exit, to a server gone by then.
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
    finally:
        server.stop(home)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ingest(prefect_server, db):
    """Run the real ingest flow against this test's warehouse."""
    from newsindex.flows.ingest import run_ingest

    def run(*paths, **options):
        options.setdefault("db", str(db))
        return run_ingest(paths=[str(p) for p in paths], **options)

    return run


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


CORPUS = Path(__file__).parent / "data" / "corpus"
EVAL_SET = Path(__file__).parent / "data" / "eval.jsonl"


@pytest.fixture(scope="session")
def search_db(prefect_server, tmp_path_factory) -> Path:
    """One warehouse with the seed and the labelled corpus, shared by the read-only query tests."""
    from newsindex.flows.ingest import ingest as ingest_flow

    db = tmp_path_factory.mktemp("search") / "search.duckdb"
    summary = ingest_flow(paths=[str(SEEDS), str(CORPUS)], db=str(db))
    assert summary["added"] == 15 and summary["failed"] == 0
    return db


def doc_id_of(db: Path, stem: str) -> str:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT doc_id FROM documents WHERE source_path LIKE ?", [f"%/{stem}.txt"]).fetchone()[0]
    finally:
        con.close()


@pytest.fixture(scope="session")
def subprocess_env(prefect_server) -> dict[str, str]:
    """Environment for `newsindex` and flow subprocesses: this session's Prefect server, read from
    the settings (whatever fixture started it), so no subprocess starts a temporary one (6–10 s)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test server set no PREFECT_API_URL"
    # The CLI picks its own console log level, as it does for a user.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"}
    return {
        **env,
        "PREFECT_API_URL": url,
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }


def warehouse_problems(con) -> list[str]:
    """Every way the stored documents and chunks could disagree; empty when they are consistent:
    no orphan or duplicate chunks, ordinals 0..n-1, ids doc_id#ordinal, and each chunk's text is
    exactly the span of its document's text that it claims."""
    checks = {
        "chunks without a document": "SELECT count(*) FROM chunks c ANTI JOIN documents d USING (doc_id)",
        "documents without chunks": "SELECT count(*) FROM documents d ANTI JOIN chunks c USING (doc_id)",
        "duplicate chunk ids": "SELECT count(*) - count(DISTINCT chunk_id) FROM chunks",
        "duplicate ordinals": "SELECT count(*) - count(DISTINCT (doc_id, ordinal)) FROM chunks",
        "gaps in ordinals": "SELECT count(*) FROM (SELECT doc_id FROM chunks GROUP BY doc_id"
        " HAVING min(ordinal) <> 0 OR max(ordinal) <> count(*) - 1)",
        "chunk ids not doc_id#ordinal": "SELECT count(*) FROM chunks WHERE chunk_id <> doc_id || '#' || ordinal",
        "chunk text not its document's span": "SELECT count(*) FROM chunks c JOIN documents d USING (doc_id)"
        " WHERE c.text <> substring(d.text, c.char_start + 1, c.char_end - c.char_start)",
    }
    problems = []
    for name, sql in checks.items():
        count = con.execute(sql).fetchone()[0]
        if count:
            problems.append(f"{name}: {count}")
    return problems


def rows(db, sql: str, params=()) -> list[tuple]:
    """The rows of one query on a warehouse, opened read-only for it alone."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()
