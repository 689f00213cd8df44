"""The ONNX export of the configured model, made once with torch and checked before it is used.

ONNX Runtime runs it at ingest (where it is the fastest exact runtime) and for every query (no
torch import). It is made from the same sentence-transformers pipeline torch runs, with dynamic
batch and sequence axes, and kept in the user's cache under the weights' fingerprint:

    ~/.cache/newsindex/onnx/<fingerprint>/model-fp32.onnx   (+ model-fp32.json, its manifest)
    ~/.cache/newsindex/onnx/<fingerprint>/model-int8.onnx   (only after `ingest --precision int8`)

A manifest is written last, after the export's vectors were compared with torch's on a probe
batch; it holds the file's SHA-256, so a damaged or replaced file is never used. Reading a checked
export needs no torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from newsindex.embedding import ModelError, ModelInfo, cache_dir, int8_info

log = logging.getLogger("newsindex.encoder")

# Exact runtimes mix in one warehouse only if their vectors agree this closely with torch fp32.
EXACT_MIN_COSINE = 0.9999
# int8 is a different model as far as vectors go; this only catches a broken quantisation.
INT8_MIN_COSINE = 0.95
_OPSET = 17
_PROBE = [
    "Crocus City Hall attack in Krasnogorsk killed more than 130 people.",
    "x",
    "The central bank cut its key rate by half a point on Thursday, its third cut this year, "
    "as inflation slowed faster than expected and unemployment rose in the northern provinces.",
    "Ünïcödé ✓ مرحبا بالعالم 👋🏽 " * 30,  # longer than the model reads: truncated, and padded against
]


def export_dir(info: ModelInfo) -> Path:
    return cache_dir() / "onnx" / info.fingerprint


def export_file(info: ModelInfo, precision: str) -> Path:
    return export_dir(info) / f"model-{precision}.onnx"


def checked_export(info: ModelInfo, precision: str = "fp32") -> Path | None:
    """The export if it exists and matches its manifest (same SHA-256), else None. The hash is
    recomputed only when the file's size or mtime differ from what the manifest saw."""
    path = export_file(info, precision)
    manifest = path.with_suffix(".json")
    try:
        record = json.loads(manifest.read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != info.fingerprint:
        return None
    if record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        return path
    if record.get("sha256") == _sha256(path):
        return path
    log.warning("%s does not match its manifest; it will be made again", path)
    return None


def ensure_export(info: ModelInfo, precision: str = "fp32") -> Path:
    """The checked export, made now (torch, a few seconds, once per model) if there is none."""
    found = checked_export(info, precision)
    if found:
        return found
    if precision == "int8":
        fp32 = ensure_export(info, "fp32")
        return _quantize(info, fp32)
    return _export_fp32(info)


def _export_fp32(info: ModelInfo) -> Path:
    try:
        import torch
    except ImportError:
        raise ModelError(
            f"no ONNX export of {info.name} (weights {info.fingerprint}) in {export_dir(info)}, and torch is not "
            "installed to make one: run `newsindex ingest` once where torch is"
        ) from None
    from newsindex.embedding import load_sentence_transformer

    log.warning("making the ONNX export of %s once (%s)", info.name, export_dir(info))
    model = load_sentence_transformer(info)

    class Pipeline(torch.nn.Module):
        """The sentence-transformers modules as one graph: ids and mask in, pooled vector out."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

    path = export_file(info, "fp32")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    sample = torch.ones((2, 8), dtype=torch.long)
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The tracer's notes about shapes it treats as constants concern paths BERT never takes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline().eval(),
            (sample, sample),
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "embedding": {0: "batch"}},  # fmt: skip
            opset_version=_OPSET,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency, and dynamic axes as declared
        )
    reference = _torch_vectors(info, model)
    return _accept(info, "fp32", tmp, path, reference, EXACT_MIN_COSINE)


def _quantize(info: ModelInfo, fp32: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = export_file(info, "int8")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process is for convolutional models
    try:
        # Per-channel signed weights: per-tensor scales lose noticeably more on MiniLM's projections.
        quantize_dynamic(str(fp32), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    reference = _onnx_vectors(info, fp32)
    return _accept(int8_info(info), "int8", tmp, path, reference, INT8_MIN_COSINE, weights=info)


def _accept(vectors: ModelInfo, precision: str, tmp: Path, path: Path, reference: np.ndarray, minimum: float,
            weights: ModelInfo | None = None) -> Path:
    """Compare the new file's vectors with the reference, then move it in place and write its manifest."""
    weights = weights or vectors
    got = _onnx_vectors(weights, tmp)
    worst = float((got * reference).sum(axis=1).min())
    if not worst >= minimum:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"ONNX {precision} export of {weights.name}: cosine {worst:.6f} to the reference, expected >= {minimum}")
    os.replace(tmp, path)
    stat = path.stat()
    import onnxruntime

    record = {
        "fingerprint": weights.fingerprint,
        "vectors_fingerprint": vectors.fingerprint,
        "precision": precision,
        "sha256": _sha256(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "probe_min_cosine": round(worst, 7),
        "onnxruntime": onnxruntime.__version__,
    }
    manifest = path.with_suffix(".json")
    tmp_manifest = manifest.with_suffix(f".{os.getpid()}.tmp")
    tmp_manifest.write_text(json.dumps(record, indent=1))
    os.replace(tmp_manifest, manifest)
    return path


def _torch_vectors(info: ModelInfo, model) -> np.ndarray:
    from newsindex.embedding import TorchEncoder

    return TorchEncoder(info, "torch-fp32", model).encode(_PROBE, batch_size=len(_PROBE))


def _onnx_vectors(info: ModelInfo, path: Path) -> np.ndarray:
    from newsindex.query_encoder import OnnxEncoder

    return OnnxEncoder(info, path, "probe").encode(_PROBE, batch_size=len(_PROBE))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
