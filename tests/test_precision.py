"""Encoder runtimes: the choice per CPU and its override, the ONNX export's checks, and vectors from
every exact runtime that mix with torch fp32 ones on real text (int8 only under its own fingerprint)."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import CORPUS, SEEDS

from newsindex.chunking import chunk_text
from newsindex.embedding import (
    EXACT_RUNTIMES,
    ModelError,
    candidate_runtimes,
    choose_runtime,
    cpu_has_native_bf16,
    int8_info,
    load_encoder,
    model_info,
)

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 vaes\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE = "flags\t\t: avx512f amx_tile amx_bf16 amx_int8\n"


def test_detects_native_bf16_from_cpu_flags():
    assert cpu_has_native_bf16(ZEN4) and cpu_has_native_bf16(SAPPHIRE)
    assert not cpu_has_native_bf16(SKYLAKE) and not cpu_has_native_bf16("")
    # avx512bw alone lets torch emulate bf16, which is slower than fp32: not enough.
    assert not cpu_has_native_bf16("flags : avx512bw avx512_bf16x\n")


def test_environment_overrides_the_choice(monkeypatch):
    for runtime in EXACT_RUNTIMES:
        monkeypatch.setenv("NEWSINDEX_RUNTIME", runtime.upper())
        assert choose_runtime() == runtime
    # int8 changes the vectors, so only the explicit --precision asks for it.
    assert choose_runtime("int8") == "onnx-int8"
    monkeypatch.setenv("NEWSINDEX_RUNTIME", "onnx-int8")
    with pytest.raises(ModelError, match=r"NEWSINDEX_RUNTIME='onnx-int8': expected one of torch-fp32, torch-bf16, onnx-fp32"):
        choose_runtime()
    with pytest.raises(ModelError, match="precision 'fp16': expected one of exact, int8"):
        choose_runtime("fp16")


def test_calibration_picks_a_candidate_once_per_cpu(monkeypatch, tmp_path, model_dir):
    from newsindex.embedding import calibrated_runtime

    monkeypatch.delenv("NEWSINDEX_RUNTIME", raising=False)
    candidates = candidate_runtimes()
    assert {"torch-fp32", "onnx-fp32", "openvino-fp32"} <= set(candidates)
    # bf16 runtimes are offered only where the CPU runs bf16 natively.
    assert ({"torch-bf16", "openvino-bf16"} <= set(candidates)) == cpu_has_native_bf16()
    assert (set(candidates) & {"torch-bf16", "openvino-bf16"} == set()) == (not cpu_has_native_bf16())
    # The export is made once per user; the calibration cache starts empty.
    cache = tmp_path / "cache" / "newsindex"
    from newsindex.onnx_export import ensure_export, export_dir

    ensure_export(model_info())
    shutil.copytree(export_dir(model_info()), cache / "onnx" / model_info().fingerprint)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # Every candidate is measured, the fastest is chosen and kept.
    chosen = choose_runtime()
    [(_, every)] = json.loads((cache / "runtimes.json").read_text()).items()
    assert set(every["tokens_per_s"]) == set(candidates) and chosen == every["runtime"]
    assert every["tokens_per_s"][chosen] == max(every["tokens_per_s"].values())
    (cache / "runtimes.json").unlink()
    fp32 = ["torch-fp32", "onnx-fp32"]
    chosen = calibrated_runtime(model_info(), fp32)
    assert chosen in fp32
    [(key, record)] = json.loads((cache / "runtimes.json").read_text()).items()
    assert record["runtime"] == chosen and set(record["tokens_per_s"]) == set(fp32)
    assert all(rate > 0 for rate in record["tokens_per_s"].values())
    # Read back, not measured again: another answer written there is what the next run uses.
    other = next(c for c in fp32 if c != chosen)
    (cache / "runtimes.json").write_text(json.dumps({key: {**record, "runtime": other}}))
    assert calibrated_runtime(model_info(), fp32) == other


def test_a_damaged_export_is_never_used(monkeypatch, tmp_path):
    from newsindex.onnx_export import checked_export, ensure_export, export_dir, export_file

    info = model_info()
    ensure_export(info)
    shutil.copytree(export_dir(info), tmp_path / "newsindex" / "onnx" / info.fingerprint)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = export_file(info, "fp32")
    assert checked_export(info) == path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert checked_export(info) is None


def test_no_export_and_no_torch_says_so(monkeypatch, tmp_path):
    from newsindex.onnx_export import ensure_export

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine with only the query dependencies
    with pytest.raises(ModelError, match=r"no ONNX export of .* torch is not installed .* run `newsindex ingest` once"):
        ensure_export(model_info())


@pytest.fixture(scope="module")
def real_chunks(tokenizer):
    from newsindex.articles import read_articles

    chunks = []
    for path in sorted([*SEEDS.glob("*.txt"), *CORPUS.glob("*.txt")]):
        for article in read_articles(path):
            chunks.extend(chunk_text(article.text, tokenizer))
    return chunks


@pytest.fixture(scope="module")
def fp32_vectors(real_chunks):
    return load_encoder("torch-fp32").encode([c.text for c in real_chunks])


def _neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Every chunk as a query: the share of its ten nearest chunks that both sets of vectors agree on."""
    near_a = np.argsort(-(a @ a.T), axis=1)[:, 1 : k + 1]
    near_b = np.argsort(-(b @ b.T), axis=1)[:, 1 : k + 1]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(near_a, near_b)]))


@pytest.mark.parametrize("runtime, min_cosine, min_overlap", [
    ("onnx-fp32", 0.9999, 0.99), ("openvino-fp32", 0.9999, 0.99), ("torch-bf16", 0.999, 0.95), ("openvino-bf16", 0.999, 0.95),
])  # fmt: skip
def test_exact_runtimes_mix_with_fp32_on_real_text(real_chunks, fp32_vectors, runtime, min_cosine, min_overlap):
    if runtime.endswith("bf16") and not cpu_has_native_bf16():
        pytest.skip("bf16 runtimes are offered only where the CPU runs bf16 natively")
    encoder = load_encoder(runtime)
    # Fed the chunker's own token ids, as ingest does.
    vectors = encoder.encode_ids([c.token_ids for c in real_chunks])
    assert len(real_chunks) >= 50 and vectors.shape == fp32_vectors.shape and vectors.dtype == np.float32
    assert encoder.info.fingerprint == model_info().fingerprint
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * fp32_vectors).sum(axis=1)
    assert cosines.min() >= min_cosine, cosines.min()
    assert _neighbour_overlap(vectors, fp32_vectors) >= min_overlap


def test_token_ids_give_the_same_vectors_as_text(real_chunks, fp32_vectors):
    assert all(c.token_ids is not None for c in real_chunks)
    from_ids = load_encoder("torch-fp32").encode_ids([c.token_ids for c in real_chunks])
    assert np.allclose(from_ids, fp32_vectors, atol=1e-6)


def test_int8_has_its_own_fingerprint_and_stays_close(real_chunks, fp32_vectors):
    encoder = load_encoder(precision="int8")
    assert encoder.runtime == "onnx-int8"
    assert encoder.info == int8_info(model_info()) and encoder.info.fingerprint != model_info().fingerprint
    vectors = encoder.encode([c.text for c in real_chunks])
    cosines = (vectors * fp32_vectors).sum(axis=1)
    # Close, but not exact: why it has a fingerprint of its own.
    assert 0.95 <= cosines.min() < 0.9999 and cosines.mean() >= 0.98


class _IdsOnlyEncoder:
    """A fake for a pure unit test of the pipeline: vectors from the ids alone, and no text."""

    runtime = "fake"

    def __init__(self, tokenizer):
        from dataclasses import replace

        self.info = replace(model_info(), name="fake", fingerprint="fake-weights")
        self.tokenizer = tokenizer
        self.seen: list[list[int]] = []

    def encode(self, texts, batch_size=32):
        raise AssertionError("the pipeline must hand over the chunker's token ids, not text")

    def encode_ids(self, ids, batch_size=32):
        self.seen.extend(list(i) for i in ids)
        out = np.zeros((len(ids), self.info.dim), dtype=np.float32)
        out[np.arange(len(ids)), [len(i) % self.info.dim for i in ids]] = 1.0
        return out


def test_pipeline_hands_the_chunkers_ids_to_the_encoder(tmp_path, tokenizer):
    from newsindex.articles import path_doc_id
    from newsindex.config import ChunkSettings
    from newsindex.flows import pipeline
    from newsindex.warehouse import connection, documents

    items = [(str(p), [path_doc_id(p)]) for p in sorted(CORPUS.glob("*.txt"))[:4]]
    encoder = _IdsOnlyEncoder(tokenizer)
    db = tmp_path / "w.duckdb"
    with connection.opened(db) as con:
        documents.register_model(con, "fake-weights", "fake", encoder.info.dim)
    outcome = pipeline.run(items, str(db), ChunkSettings(), encoder, "key", batch_chars=3000)
    with connection.opened(db, read_only=True) as con:
        stored = con.execute("SELECT text, token_count, model FROM chunks ORDER BY doc_id, ordinal").fetchall()
    assert outcome.chunks_embedded == len(stored) == len(encoder.seen) and outcome.batches > 1
    assert {model for _, _, model in stored} == {"fake-weights"}
    # Exactly the ids the model's tokenizer gives each stored chunk text, once each.
    assert sorted(encoder.seen) == sorted(tokenizer.ids([text for text, _, _ in stored]))
    assert sum(map(len, encoder.seen)) == sum(n for _, n, _ in stored) == outcome.tokens_embedded


def test_int8_ingest_is_kept_apart_from_exact_vectors(ingest, db):
    from newsindex.queries.search import search
    from newsindex.queries.session import ModelMismatch

    def models() -> set[str]:
        import duckdb

        con = duckdb.connect(str(db), read_only=True)
        try:
            return {m for (m,) in con.execute("SELECT DISTINCT model FROM chunks").fetchall()}
        finally:
            con.close()

    exact, int8 = model_info(), int8_info(model_info())
    summary = ingest(CORPUS, precision="int8")
    assert (summary["precision"], summary["runtime"], summary["model"]) == ("int8", "onnx-int8", int8.name)
    assert models() == {int8.fingerprint}
    hits = search(db, "levee failure strands rural families during the South Asian rainy season", k=3, mode="semantic").hits
    assert hits[0].doc_id.endswith("flood-bangladesh-monsoon.txt") or "flood-bangladesh-monsoon" in hits[0].source_path

    # One file ingested exactly again: its chunks change fingerprint, and search refuses the mix.
    again = ingest(CORPUS / "metro-line-opening.txt")
    assert (again["updated"], again["runtime"]) == (1, choose_runtime())
    assert models() == {int8.fingerprint, exact.fingerprint}
    with pytest.raises(ModelMismatch, match="both exact and int8 vectors"):
        search(db, "new metro line", k=3, mode="semantic")
    # Everything exact again: nothing of the int8 run is left, and search answers.
    ingest(CORPUS)
    assert models() == {exact.fingerprint}
    assert search(db, "new metro line", k=3, mode="semantic").hits
