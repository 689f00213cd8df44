"""The torch-free query encoder gives sentence-transformers' vectors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from newsindex.embedding import model_info, shared_embedder
from newsindex.query_encoder import NumpyEncoder

TEXTS = [
    "who warned Russia about the attack",
    "x",
    "Crocus City Hall attack in Krasnogorsk killed more than 130 people and the roof collapsed",
    "Ünïcödé ✓ مرحبا بالعالم 👋🏽 " * 40,  # longer than max_seq_length: truncated the same way
]


def test_matches_sentence_transformers(model_dir):
    fast = NumpyEncoder(model_dir).encode(TEXTS)
    info = model_info()
    reference = shared_embedder(info.path, info.name).encode(TEXTS)
    cosines = (fast * reference).sum(axis=1)
    assert fast.shape == (len(TEXTS), 384) and fast.dtype == np.float32
    assert cosines.min() >= 0.9999, cosines


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
