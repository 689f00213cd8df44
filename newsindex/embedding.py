"""Embedding chunks with sentence-transformers, and identifying the model that made a vector.

`model_info` reads only files, so the query path can check that stored vectors came from the same
weights without importing torch. `Embedder` loads the model (torch) and is used by ingestion.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from newsindex.errors import NewsindexError
from newsindex import config

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    dim: int
    fingerprint: str


class ModelError(NewsindexError):
    """The configured model cannot be used (missing files, wrong shape)."""


@lru_cache(maxsize=4)
def model_info(model_dir: str | None = None, name: str | None = None) -> ModelInfo:
    path = Path(model_dir) if model_dir else config.model_path()
    if not (path / "modules.json").exists():
        raise ModelError(f"{path}: not a sentence-transformers model directory (no modules.json)")
    return ModelInfo(
        name=name or config.model_name(),
        path=str(path),
        dim=_embedding_dim(path),
        fingerprint=_fingerprint(path),
    )


def _embedding_dim(path: Path) -> int:
    dim = None
    for module in json.loads((path / "modules.json").read_text()):
        module_config = path / module.get("path", "") / "config.json"
        if not module_config.exists():
            continue
        values = json.loads(module_config.read_text())
        # The last module that states a width decides it: pooling keeps the encoder's, Dense changes it.
        dim = values.get("out_features") or values.get("word_embedding_dimension") or dim
    if dim is None:
        dim = json.loads((path / "config.json").read_text())["hidden_size"]
    return int(dim)


def _fingerprint(path: Path) -> str:
    """SHA-256 of the weights (first 16 hex digits): two copies of the same model agree, any
    retrained or quantised variant differs, whatever its directory is called. Hashing 90 MB costs
    ~0.2 s, a third of a cold query, so the result is cached by path, size and mtime."""
    for name in _WEIGHT_FILES:
        weights = path / name
        if weights.exists():
            stat = weights.stat()
            key = f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
            cache = _fingerprint_cache()
            try:
                known = json.loads(cache.read_text())
            except (OSError, ValueError):
                known = {}
            if key in known:
                return known[key]
            digest = hashlib.sha256()
            with weights.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
            value = digest.hexdigest()[:16]
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({**known, key: value}))
                tmp.replace(cache)
            except OSError:
                pass  # a read-only home only costs the hash next time
            return value
    raise ModelError(f"{path}: no weights file ({' or '.join(_WEIGHT_FILES)})")


def _fingerprint_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "newsindex" / "fingerprints.json"


PRECISIONS = ("fp32", "bf16")
# CPU flags that mean bf16 matrix multiplies run natively; without them torch emulates bf16, slower than fp32.
_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU advertises AVX512-BF16 or AMX (Linux /proc/cpuinfo; elsewhere: no)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and _BF16_FLAGS & set(line.split(":", 1)[-1].split()):
            return True
    return False


def choose_precision() -> str:
    """NEWSINDEX_PRECISION (fp32 or bf16) if set, else bf16 where the CPU has it natively, else fp32."""
    forced = os.environ.get("NEWSINDEX_PRECISION", "").strip().lower()
    if forced:
        if forced not in PRECISIONS:
            raise ModelError(f"NEWSINDEX_PRECISION={forced!r}: expected one of {', '.join(PRECISIONS)}")
        return forced
    return "bf16" if cpu_has_native_bf16() else "fp32"


class Embedder:
    """sentence-transformers on the CPU, returning L2-normalised float32 vectors.

    In bf16 the weights and activations are bfloat16 (about 3x the fp32 rate on AVX512-BF16); the
    vectors stay within cosine 0.999 of fp32 ones (tested), so both kinds live in one warehouse and
    the weights' fingerprint, not the precision, says which model made a vector.
    """

    def __init__(self, info: ModelInfo | None = None, precision: str = "fp32"):
        config.offline_env()
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # Its per-load weight progress bar would break through the CLI's own progress display.
        transformers_logging.disable_progress_bar()
        self.info = info or model_info()
        self.model = SentenceTransformer(self.info.path, device="cpu")
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        actual = dimension()
        if actual != self.info.dim:
            raise ModelError(f"{self.info.path}: model produces {actual}-dim vectors, config says {self.info.dim}")
        self.precision = precision
        if self.precision not in PRECISIONS:
            raise ModelError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.precision == "bf16":
            self.model.to(torch.bfloat16)
        self.model.eval()

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        import torch

        # One call for many articles: sentence-transformers sorts by length inside it, so padding is small.
        with torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=False,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        # Normalised in float32: a bf16 vector rounded again after normalising would lose more.
        matrix = vectors.float().numpy()
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(matrix, dtype=np.float32)


@lru_cache(maxsize=4)
def shared_embedder(model_dir: str, name: str, precision: str = "fp32") -> Embedder:
    """One loaded model per process, model and precision: flows call this from every batch task.
    fp32 unless asked: it is the reference other encoders are checked against."""
    return Embedder(model_info(model_dir, name), precision)
