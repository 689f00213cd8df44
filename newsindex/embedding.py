"""The encoder seam: what an encoder is, which runtime runs it, and which model made a vector.

`model_info` reads only files, so the query path can check that stored vectors came from the same
weights without importing torch. `load_encoder` is the one place that picks an implementation:
torch (fp32, or bf16 where the CPU has it natively) or ONNX Runtime on an export of the same
weights (newsindex/onnx_export.py). Every exact runtime gives the same vectors to cosine 0.9999
(bf16: 0.999), so they mix in one warehouse; int8 is opt-in and has its own fingerprint.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from newsindex.errors import NewsindexError
from newsindex import config
from newsindex.chunking import Tokenizer, load_tokenizer

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    dim: int
    fingerprint: str


class ModelError(NewsindexError):
    """The configured model cannot be used (missing files, wrong shape)."""


def model_info(model_dir: str | None = None, name: str | None = None) -> ModelInfo:
    """The configured model (NEWSINDEX_MODEL) unless `model_dir` names one. Resolved before the
    cache, so a changed NEWSINDEX_MODEL is never answered with the model read before it."""
    return _model_info(str(model_dir) if model_dir else str(config.model_path()), name or config.model_name())


@lru_cache(maxsize=4)
def _model_info(model_dir: str, name: str) -> ModelInfo:
    path = Path(model_dir)
    if not (path / "modules.json").exists():
        raise ModelError(f"{path}: not a sentence-transformers model directory (no modules.json)")
    return ModelInfo(
        name=name,
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
        # sentence-transformers 6 names the pooling width `embedding_dimension`, earlier ones `word_embedding_dimension`.
        dim = values.get("out_features") or values.get("embedding_dimension") or values.get("word_embedding_dimension") or dim
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


def cache_dir() -> Path:
    """Per-user cache of things derived from the model: fingerprints, ONNX exports, calibrations."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "newsindex"


def _fingerprint_cache() -> Path:
    return cache_dir() / "fingerprints.json"


# --- the seam ---------------------------------------------------------------------------------


class Encoder(Protocol):
    """Turns text, or content token ids the chunker already computed, into L2-normalised float32
    vectors. `info` names the vectors it makes: model name, width and the fingerprint stored
    beside every vector (int8 has its own, so its vectors never pass for exact ones)."""

    info: ModelInfo
    runtime: str
    tokenizer: Tokenizer

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...

    def encode_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 32) -> np.ndarray: ...


class BatchedEncoder:
    """What every runtime shares: special tokens, length-sorted padded batches and normalising.
    A runtime only implements `_forward(input_ids, attention_mask)` -> pooled rows."""

    info: ModelInfo
    runtime: str

    def __init__(self, info: ModelInfo, runtime: str):
        self.info = info
        self.runtime = runtime
        self.tokenizer = load_tokenizer(info.path)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self.encode_ids(self.tokenizer.ids(list(texts)), batch_size)

    def encode_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(ids), self.info.dim), dtype=np.float32)
        # Sorted by length, so a batch pads to nearly its own length.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for first in range(0, len(order), batch_size):
            rows = order[first : first + batch_size]
            inputs = [self.tokenizer.model_input(list(ids[i])) for i in rows]
            width = max(map(len, inputs))
            input_ids = np.full((len(rows), width), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, row in enumerate(inputs):
                input_ids[r, : len(row)] = row
                mask[r, : len(row)] = 1
            out[rows] = self._forward(input_ids, mask)
        # Normalised in float32: a bf16 vector rounded again after normalising would lose more.
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError


PRECISIONS = ("exact", "int8")
EXACT_RUNTIMES = ("torch-fp32", "torch-bf16", "onnx-fp32", "openvino-fp32", "openvino-bf16")
# Runtimes that run bf16: offered only where the CPU does that natively.
_BF16_RUNTIMES = ("torch-bf16", "openvino-bf16")
INT8_RUNTIME = "onnx-int8"
# CPU flags that mean bf16 matrix multiplies run natively; without them torch emulates bf16, slower than fp32.
_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
# Flags worth naming in a benchmark or calibration: what decides which runtime is fastest.
_SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def int8_info(info: ModelInfo) -> ModelInfo:
    """The same weights quantised to int8: a fingerprint of its own (derived, so it does not depend
    on how a given ONNX Runtime version lays out the quantised file)."""
    digest = hashlib.sha256(f"{info.fingerprint}:onnx-dynamic-qint8-per-channel".encode()).hexdigest()[:16]
    return replace(info, name=f"{info.name} (int8)", fingerprint=digest)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; elsewhere: none known)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[-1].split())
    return set()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU advertises AVX512-BF16 or AMX."""
    return bool(_BF16_FLAGS & cpu_flags(cpuinfo))


def cpu_description() -> str:
    """Model name, cores and the flags that matter here, e.g. for a benchmark's header."""
    model = platform.processor() or platform.machine()
    try:
        model = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
            model,
        )
    except OSError:
        pass
    flags = cpu_flags()
    shown = [f for f in _SHOWN_FLAGS if f in flags]
    return f"{model}, {_threads()} cores, flags: {' '.join(shown) or 'none of ' + ' '.join(_SHOWN_FLAGS)}"


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def candidate_runtimes() -> list[str]:
    """Exact runtimes worth trying here: those installed, bf16 ones only where the CPU runs bf16 natively."""
    native_bf16 = cpu_has_native_bf16()
    candidates = []
    for runtime in EXACT_RUNTIMES:
        module = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}[runtime.split("-")[0]]
        if runtime in _BF16_RUNTIMES and not native_bf16:
            continue
        if importlib.util.find_spec(module) is not None:
            candidates.append(runtime)
    return candidates


def choose_runtime(precision: str = "exact") -> str:
    """int8 when asked; else NEWSINDEX_RUNTIME if set; else the fastest exact runtime installed
    (bf16 ones only where the CPU runs bf16 natively), from a short calibration made once per CPU
    model, thread count and library versions."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        return INT8_RUNTIME
    forced = os.environ.get("NEWSINDEX_RUNTIME", "").strip().lower()
    if forced:
        if forced not in EXACT_RUNTIMES:
            raise ModelError(
                f"NEWSINDEX_RUNTIME={forced!r}: expected one of {', '.join(EXACT_RUNTIMES)} (int8 is --precision int8)"
            )
        return forced
    candidates = candidate_runtimes()
    if len(candidates) == 1:
        return candidates[0]
    return calibrated_runtime(model_info(), candidates)


def _calibration_key(info: ModelInfo, candidates: list[str]) -> str:
    # From the installed packages' metadata: importing them for their versions (torch takes
    # seconds) would cost every ingest that runs on another runtime.
    versions = []
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            versions.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return "|".join([cpu_description(), info.fingerprint, *versions, *candidates])


def calibrated_runtime(info: ModelInfo, candidates: list[str]) -> str:
    """The candidate with the most tokens/s on a probe batch (best of three, interleaved so a
    burst of load elsewhere hurts all alike), cached in the user's cache by CPU and versions."""
    cache = cache_dir() / "runtimes.json"
    key = _calibration_key(info, candidates)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known and known[key].get("runtime") in candidates:
        return known[key]["runtime"]
    rates = calibrate(info, candidates)
    best = max(rates, key=rates.get)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: {"runtime": best, "tokens_per_s": rates, "measured": time.time()}}, indent=1))
        tmp.replace(cache)
    except OSError:
        pass  # a read-only home calibrates again next time
    return best


def calibrate(info: ModelInfo, candidates: list[str], rounds: int = 3, rows: int = 16, length: int = 126) -> dict[str, float]:
    """Tokens/s of each runtime on the same batch of `rows` sequences of `length` content tokens
    (random ids cost the same arithmetic as real ones: the model has no data-dependent paths)."""
    ids = np.random.default_rng(0).integers(1000, 20000, size=(rows, length)).tolist()
    # Loaded outside the per-process cache, so the runtimes not chosen are freed afterwards.
    encoders = {name: _load.__wrapped__(name, info.path, info.name) for name in candidates}
    best = {name: 0.0 for name in candidates}
    for enc in encoders.values():
        enc.encode_ids(ids[:4])  # first calls allocate and pick kernels
    for _ in range(rounds):
        for name, enc in encoders.items():
            started = time.perf_counter()
            enc.encode_ids(ids, batch_size=rows)
            best[name] = max(best[name], rows * length / (time.perf_counter() - started))
    return {name: round(rate) for name, rate in best.items()}


@lru_cache(maxsize=8)
def _load(runtime: str, model_dir: str, name: str) -> Encoder:
    info = model_info(model_dir, name)
    if runtime in ("torch-fp32", "torch-bf16"):
        return TorchEncoder(info, runtime)
    if runtime in ("onnx-fp32", INT8_RUNTIME):
        from newsindex.onnx_export import ensure_export
        from newsindex.query_encoder import OnnxEncoder

        precision = "int8" if runtime == INT8_RUNTIME else "fp32"
        vectors = int8_info(info) if precision == "int8" else info
        return OnnxEncoder(vectors, ensure_export(info, precision), runtime)
    if runtime in ("openvino-fp32", "openvino-bf16"):
        from newsindex.onnx_export import ensure_export
        from newsindex.openvino_encoder import OpenVinoEncoder

        return OpenVinoEncoder(info, ensure_export(info, "fp32"), runtime)
    raise ModelError(f"runtime {runtime!r}: expected one of {', '.join((*EXACT_RUNTIMES, INT8_RUNTIME))}")


def load_encoder(runtime: str | None = None, info: ModelInfo | None = None, precision: str = "exact") -> Encoder:
    """The one function that picks an encoder: `runtime` if given, else `choose_runtime(precision)`.
    Loaded once per process, model and runtime (flows call this from every task)."""
    info = info or model_info()
    return _load(runtime or choose_runtime(precision), info.path, info.name)


class TorchEncoder(BatchedEncoder):
    """The sentence-transformers pipeline (transformer, pooling, any Dense or Normalize modules) run
    by torch on token ids. In bf16 the weights and activations are bfloat16 (about 3x the fp32 rate
    where the CPU has AVX512-BF16 or AMX)."""

    def __init__(self, info: ModelInfo, runtime: str = "torch-fp32", model=None):
        super().__init__(info, runtime)
        self.model = model if model is not None else load_sentence_transformer(info)
        if runtime == "torch-bf16":
            import torch

            self.model.to(torch.bfloat16)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
            return self.model(features)["sentence_embedding"].float().numpy()


def load_sentence_transformer(info: ModelInfo):
    """The model as sentence-transformers loads it, on the CPU, in eval mode, width checked."""
    config.offline_env()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # Its per-load weight progress bar would break through the CLI's own progress display.
    transformers_logging.disable_progress_bar()
    model = SentenceTransformer(info.path, device="cpu")
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    actual = dimension()
    if actual != info.dim:
        raise ModelError(f"{info.path}: model produces {actual}-dim vectors, config says {info.dim}")
    model.eval()
    return model


def prefetch_query_encoder(info: ModelInfo | None = None) -> None:
    """Start loading query_encoder() in a background thread where its export is already made and
    checked (else the search makes it, after its model check)."""
    from newsindex.query_encoder import prefetch

    prefetch(info or model_info())


def query_encoder(info: ModelInfo | None = None) -> Encoder:
    """The encoder for queries (search, SQL's embed()): ONNX Runtime on the exact export, one
    thread, no torch import. Queries of an int8 warehouse are embedded exactly too: only the
    stored vectors are quantised."""
    from newsindex.query_encoder import shared_query_encoder

    info = info or model_info()
    return shared_query_encoder(info.path, info.name)
