"""ONNX Runtime on the model's export: the ingest runtime where it is fastest, and every query's.

Importing torch and sentence-transformers costs 4-5 s, which would be most of a one-shot `newsindex
search`. ONNX Runtime loads the checked export of the same weights (newsindex/onnx_export.py) in a
fraction of that and gives torch's vectors to cosine 0.9999 (tests/test_query_encoder.py).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from newsindex.embedding import BatchedEncoder, ModelInfo, model_info


class OnnxEncoder(BatchedEncoder):
    def __init__(self, info: ModelInfo, path: Path, runtime: str, threads: int | None = None):
        import onnxruntime as ort

        super().__init__(info, runtime)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initialisers are not the user's business
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if threads == 1:
            # One query is a few dozen tokens: pool threads spinning for each other on busy cores
            # cost more than they save.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


_loading = threading.Lock()
_prefetched: set[tuple[str, str]] = set()  # (model_dir, name) whose load prefetch() has started


def shared_query_encoder(model_dir: str, name: str) -> OnnxEncoder:
    """The exact export on one thread. Made here (with torch) only if no ingest on this machine
    made it first, e.g. for a warehouse copied from elsewhere. One load at a time: a search that
    asks while prefetch() loads it waits for that load."""
    with _loading:
        return _shared_query_encoder(model_dir, name)


def prefetch(info: ModelInfo) -> None:
    """Load the encoder in a thread (ONNX Runtime's session setup releases the GIL), only where the
    export is ready: making one needs torch, and the search's model check first. Not a daemon: a
    process that exits first (an error) waits for it, as ONNX Runtime aborts the process if the
    interpreter ends under a session being set up."""
    from newsindex.onnx_export import checked_export

    # The CLI starts it before its imports and search() again for library callers: once is enough.
    if (info.path, info.name) in _prefetched:
        return
    _prefetched.add((info.path, info.name))

    def load() -> None:
        try:
            if checked_export(info, "fp32") is not None:
                shared_query_encoder(info.path, info.name)
        except Exception:  # noqa: BLE001 - the search loads it again and reports what fails
            pass

    threading.Thread(target=load, name="newsindex-query-encoder").start()


@lru_cache(maxsize=2)
def _shared_query_encoder(model_dir: str, name: str) -> OnnxEncoder:
    from newsindex.onnx_export import checked_export, ensure_export

    info = model_info(model_dir, name)
    path = checked_export(info, "fp32") or ensure_export(info, "fp32")
    return OnnxEncoder(info, path, "onnx-fp32", threads=1)

