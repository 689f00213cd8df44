"""The vector width comes from the model, SQL included: a warehouse made by a 32-dim model (a tiny
random BERT, saved here as sentence-transformers saves any model) stores FLOAT[32] vectors, ingests,
answers every search mode and SQL's embed(), and never mixes with 384-dim vectors either way: the
refused writer or reader gets one line naming the file and both widths, and nothing is written."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import CORPUS, rows
from newsindex.embedding import model_info
from newsindex.errors import NewsindexError
from newsindex.queries import named, readonly
from newsindex.queries.search import search
from newsindex.queries.session import ModelMismatch
from newsindex.warehouse import documents, schema, width

TINY_DIM = 32
ARTICLES = ("flood-bangladesh-monsoon.txt", "rate-cut-chile.txt", "volcano-eruption-indonesia.txt")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 32-dim sentence-transformers model (transformer, mean pooling, normalise) with random
    weights and the real model's tokenizer, so that chunking counts the same tokens."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_models
    from transformers import BertConfig, BertModel

    real = model_info().path
    root = tmp_path_factory.mktemp("tiny-model")
    bert = root / "bert"
    bert.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(Path(real) / name, bert / name)
    vocab = sum(1 for _ in (bert / "vocab.txt").open(encoding="utf-8"))
    # Seeded: the same weights (and so the same fingerprint and ONNX export) on every run.
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=TINY_DIM, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    BertModel(config).save_pretrained(bert)
    transformer = st_models.Transformer(str(bert), max_seq_length=256)
    pooling = st_models.Pooling(TINY_DIM, "mean")
    out = root / "tiny-bert-32"
    SentenceTransformer(modules=[transformer, pooling, st_models.Normalize()], device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module")
def articles(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("width-articles")
    for name in ARTICLES:
        shutil.copy(CORPUS / name, folder / name)
    return folder


def _ingest(paths: list[Path], db: Path) -> dict:
    from newsindex.flows.ingest import ingest

    return ingest(paths=[str(p) for p in paths], db=str(db))


@pytest.fixture(scope="module")
def tiny_db(prefect_server, tiny_model, articles, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("tiny-warehouse") / "tiny.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEWSINDEX_MODEL", str(tiny_model))
        summary = _ingest([articles], db)
    assert summary["added"] == len(ARTICLES) and summary["failed"] == 0 and summary["chunks_embedded"] > 0
    return db


@pytest.fixture(scope="module")
def wide_db(prefect_server, articles, tmp_path_factory) -> Path:
    """A warehouse of the default 384-dim model."""
    db = tmp_path_factory.mktemp("wide-warehouse") / "wide.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("NEWSINDEX_MODEL", raising=False)
        summary = _ingest([articles / ARTICLES[0]], db)
    assert summary["added"] == 1 and summary["failed"] == 0
    return db


def _vector_types(db: Path) -> dict[str, str]:
    found = rows(db, "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                     " WHERE column_name IN ('embedding', 'doc_embedding') AND table_name IN ('chunks', 'documents')")  # fmt: skip
    return dict(found)


def _contents(db: Path) -> dict[str, list[tuple]]:
    """Every row a refused ingest could have touched."""
    return {table: rows(db, f"SELECT * FROM {table} ORDER BY ALL") for table in ("models", "documents", "chunks", "ingest_runs", "ingest_errors")}


def test_a_32_dim_model_makes_a_32_dim_warehouse(tiny_db, tiny_model, monkeypatch):
    assert _vector_types(tiny_db) == {"chunks.embedding": "FLOAT[32]", "documents.doc_embedding": "FLOAT[32]"}
    info = model_info(str(tiny_model))
    assert info.dim == TINY_DIM
    assert rows(tiny_db, "SELECT fingerprint, dim FROM models") == [(info.fingerprint, TINY_DIM)]
    assert rows(tiny_db, "SELECT count(*), count(DISTINCT model) FROM chunks")[0][1] == 1

    monkeypatch.setenv("NEWSINDEX_MODEL", str(tiny_model))
    for mode in ("semantic", "keyword", "hybrid"):
        result = search(tiny_db, "monsoon flood in Bangladesh", k=2, mode=mode)
        assert len(result.hits) == 2 and all(math.isfinite(h.score) for h in result.hits), mode
    # The keyword side is the model's business only through the chunks: BM25 still finds the article.
    assert search(tiny_db, "Bangladesh monsoon", k=1, mode="keyword").hits[0].source_path.endswith(ARTICLES[0])

    [result] = readonly.run(tiny_db, "SELECT typeof(embed('flood')) AS t, len(embed('flood')) AS n,"
                                     " max(array_cosine_similarity(embedding, embed('flood'))) AS best FROM chunks")  # fmt: skip
    t, n, best = result.rows[0]
    assert (t, n) == ("FLOAT[32]", TINY_DIM) and best is not None

    # The named query by hand (`newsindex query semantic_search`): the vector cast to the warehouse's type.
    emitted = []
    readonly.run_named(tiny_db, named.get("semantic_search"), named.get("semantic_search").bind({"query": "volcano", "k": "2"}),
                       lambda columns, batches: emitted.extend(row for batch in batches for row in batch))  # fmt: skip
    assert len(emitted) == 2


def test_a_384_dim_model_is_refused_by_the_32_dim_warehouse(tiny_db, articles, subprocess_env, monkeypatch):
    before = _contents(tiny_db)
    monkeypatch.delenv("NEWSINDEX_MODEL", raising=False)
    expected = (f"{tiny_db}: stores 32-dim vectors, but model sentence-transformers/all-MiniLM-L6-v2 makes 384-dim ones;"
                " ingest with a 32-dim model (NEWSINDEX_MODEL) or into a new warehouse (--db)")  # fmt: skip
    with pytest.raises(documents.WidthMismatch) as refused:
        _ingest([articles], tiny_db)
    assert str(refused.value) == expected
    assert _contents(tiny_db) == before

    with pytest.raises(ModelMismatch, match=rf"^{re.escape(str(tiny_db))}: stores 32-dim vectors \(made by tiny-bert-32\), but the configured model \S+ makes 384-dim ones; "):
        search(tiny_db, "flood", mode="semantic")

    # What a user sees: one line, no traceback, the file as it was.
    env = {k: v for k, v in subprocess_env.items() if k != "NEWSINDEX_MODEL"}
    newsindex = str(Path(sys.executable).with_name("newsindex"))
    for command, line in ((["ingest", str(articles)], expected), (["search", "flood"], None)):
        done = subprocess.run([newsindex, *command, "--db", str(tiny_db)], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 1, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert "Traceback" not in done.stderr
        if line:
            assert last == f"Error: {line}"
        else:
            assert last.startswith(f"Error: {tiny_db}: stores 32-dim vectors") and "384-dim" in last
    assert _contents(tiny_db) == before


def test_the_32_dim_model_is_refused_by_a_384_dim_warehouse(wide_db, tiny_model, articles, monkeypatch):
    assert _vector_types(wide_db) == {"chunks.embedding": "FLOAT[384]", "documents.doc_embedding": "FLOAT[384]"}
    before = _contents(wide_db)
    monkeypatch.setenv("NEWSINDEX_MODEL", str(tiny_model))
    with pytest.raises(documents.WidthMismatch, match=rf"^{re.escape(str(wide_db))}: stores 384-dim vectors, but model tiny-bert-32 makes 32-dim ones; "):
        _ingest([articles], wide_db)
    assert _contents(wide_db) == before
    with pytest.raises(ModelMismatch, match=rf"^{re.escape(str(wide_db))}: stores 384-dim vectors .*, but the configured model tiny-bert-32 makes 32-dim ones"):
        search(wide_db, "flood", mode="hybrid")
    # `newsindex serve` answers from a private copy of the file: the line still names the warehouse.
    from newsindex.api import Index

    with Index(wide_db) as index:
        for mode in ("semantic", "hybrid"):
            with pytest.raises(ModelMismatch, match=rf"^{re.escape(str(wide_db))}: stores 384-dim vectors .* makes 32-dim ones"):
                index.search("flood", mode=mode)
        assert index.search("flood", mode="keyword")  # BM25 needs no query vector
    # SQL without embed() still runs; embed() says why it cannot (through DuckDB, which runs it).
    assert readonly.run(wide_db, "SELECT count(*) FROM chunks")[0].rows[0][0] > 0
    with pytest.raises(NewsindexError, match=rf"ModelMismatch: {re.escape(str(wide_db))}: stores 384-dim vectors .* makes 32-dim ones"):
        readonly.run(wide_db, "SELECT embed('flood')")


def test_an_empty_warehouse_takes_the_width_of_the_model_that_creates_it(db):
    db.parent.mkdir(parents=True)
    con = duckdb.connect(str(db))
    try:
        schema.migrate(con, dim=TINY_DIM)
        assert documents.chunk_dimension(con) == TINY_DIM
        with pytest.raises(documents.WidthMismatch, match="stores 32-dim vectors, but model m makes 384-dim ones"):
            documents.register_model(con, "fp", "m", 384)
        assert con.execute("SELECT count(*) FROM models").fetchone()[0] == 0
    finally:
        con.close()


@pytest.mark.parametrize("dim", [0, -1, 65_536, True, "384", 3.0, None])
def test_only_a_whole_width_in_range_reaches_sql(dim):
    with pytest.raises(width.TemplateError, match="q.sql: needs the vector width|vector width must be a whole number"):
        width.render("SELECT CAST($v AS FLOAT[{dim}])", dim, "q.sql")


def test_no_other_marker_is_filled_in():
    assert width.render("SELECT CAST($v AS FLOAT[{dim}])", 32, "q.sql") == "SELECT CAST($v AS FLOAT[32])"
    # DuckDB's own braces are not markers.
    assert width.render(r"SELECT regexp_matches(s, '[\p{L}]{2}'), {'a': 1}", None, "q.sql").startswith("SELECT")
    with pytest.raises(width.TemplateError, match=r"^q.sql: unknown template marker \{table\}"):
        width.render("SELECT * FROM {table} WHERE v = FLOAT[{dim}]", 32, "q.sql")
    with pytest.raises(width.TemplateError, match="unknown template marker"):
        named.parse("-- name: x\n-- description: y\nSELECT {name}", "x.sql")
