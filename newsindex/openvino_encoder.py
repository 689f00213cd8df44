"""OpenVINO on the model's ONNX export (newsindex/onnx_export.py): an ingest runtime.

OpenVINO's CPU plugin compiles the graph for the machine it runs on (fused attention, oneDNN
kernels), which is why it is a candidate beside torch and ONNX Runtime on the same weights
(bench/RESULTS.md has the measured rates). Its precision is pinned: left to itself the plugin runs
bf16 wherever the CPU has it, and a runtime must never change the vectors without saying so. The
fp32 variant is exact; the bf16 one is offered only where the CPU runs bf16 natively and is held
to the same bound as torch bf16 (tests/test_precision.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from newsindex.embedding import BatchedEncoder, ModelInfo

PRECISION_HINTS = {"openvino-fp32": "f32", "openvino-bf16": "bf16"}


class OpenVinoEncoder(BatchedEncoder):
    def __init__(self, info: ModelInfo, path: Path, runtime: str):
        import openvino as ov

        super().__init__(info, runtime)
        core = ov.Core()
        # LATENCY: one stream over all cores, which is what one batch at a time needs.
        settings = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[runtime], "PERFORMANCE_HINT": "LATENCY"}
        self.path = Path(path)
        self._request = core.compile_model(core.read_model(str(path)), "CPU", settings).create_infer_request()

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self._request.infer({"input_ids": input_ids, "attention_mask": attention_mask})
        # A copy: the output tensor's memory is reused by the next call.
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)
