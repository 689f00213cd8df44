"""bf16 encoding where the CPU has it: detection, the override, and vectors that match fp32 on real text."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CORPUS, SEEDS

from newsindex.chunking import chunk_text
from newsindex.embedding import ModelError, choose_precision, cpu_has_native_bf16, model_info, shared_embedder

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 vaes\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE = "flags\t\t: avx512f amx_tile amx_bf16 amx_int8\n"


def test_detects_native_bf16_from_cpu_flags():
    assert cpu_has_native_bf16(ZEN4) and cpu_has_native_bf16(SAPPHIRE)
    assert not cpu_has_native_bf16(SKYLAKE) and not cpu_has_native_bf16("")
    # avx512bw alone lets torch emulate bf16, which is slower than fp32: not enough.
    assert not cpu_has_native_bf16("flags : avx512bw avx512_bf16x\n")


def test_environment_overrides_the_choice(monkeypatch):
    monkeypatch.setenv("NEWSINDEX_PRECISION", "FP32")
    assert choose_precision() == "fp32"
    monkeypatch.setenv("NEWSINDEX_PRECISION", "bf16")
    assert choose_precision() == "bf16"
    monkeypatch.setenv("NEWSINDEX_PRECISION", "int8")
    with pytest.raises(ModelError, match="NEWSINDEX_PRECISION='int8': expected one of fp32, bf16"):
        choose_precision()
    monkeypatch.delenv("NEWSINDEX_PRECISION")
    assert choose_precision() == ("bf16" if cpu_has_native_bf16() else "fp32")


@pytest.fixture(scope="module")
def real_chunks(tokenizer) -> list[str]:
    from newsindex.articles import read_articles

    texts = []
    for path in sorted([*SEEDS.glob("*.txt"), *CORPUS.glob("*.txt")]):
        for article in read_articles(path):
            texts.extend(c.text for c in chunk_text(article.text, tokenizer))
    return texts


def test_bf16_vectors_match_fp32_on_real_text(real_chunks):
    info = model_info()
    fp32 = shared_embedder(info.path, info.name, "fp32").encode(real_chunks)
    bf16 = shared_embedder(info.path, info.name, "bf16").encode(real_chunks)
    assert len(real_chunks) >= 50 and bf16.shape == fp32.shape and bf16.dtype == np.float32
    assert np.allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    cosines = (bf16 * fp32).sum(axis=1)
    assert cosines.min() >= 0.999, cosines.min()

    # Every chunk as a query: its ten nearest chunks are (nearly) the same in both precisions.
    k = 10
    near_fp32 = np.argsort(-(fp32 @ fp32.T), axis=1)[:, 1 : k + 1]
    near_bf16 = np.argsort(-(bf16 @ bf16.T), axis=1)[:, 1 : k + 1]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(near_fp32, near_bf16)])
    assert overlap >= 0.95, overlap
