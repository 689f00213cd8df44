"""The torch-free query encoder (ONNX Runtime on the checked export) gives torch's vectors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from newsindex.embedding import load_encoder, model_info, query_encoder

TEXTS = [
    "who warned Russia about the attack",
    "x",
    "Crocus City Hall attack in Krasnogorsk killed more than 130 people and the roof collapsed",
    "Ünïcödé ✓ مرحبا بالعالم 👋🏽 " * 40,  # longer than max_seq_length: truncated the same way
]


def test_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    fast = query_encoder().encode(TEXTS)
    plain = SentenceTransformer(model_info().path, device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert fast.shape == (len(TEXTS), 384) and fast.dtype == np.float32
    assert query_encoder().runtime == "onnx-fp32"
    assert (fast * plain).sum(axis=1).min() >= 0.9999
    assert (fast * load_encoder("torch-fp32").encode(TEXTS)).sum(axis=1).min() >= 0.9999


def test_query_path_imports_neither_torch_nor_prefect(search_db):
    code = (
        "import sys\n"
        "from newsindex.queries.search import search\n"
        f"r = search({str(search_db)!r}, 'who warned Russia', k=3)\n"
        "assert len(r.hits) == 3\n"
        "print(sorted(m for m in ('torch', 'prefect', 'sentence_transformers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
