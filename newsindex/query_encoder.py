"""Embedding short query texts without torch: the BERT forward pass in NumPy.

Importing sentence-transformers costs 4-5 s, which is most of a one-shot `newsindex search`. A
query is a few dozen tokens, so a plain NumPy implementation of the same encoder (weights read
from the same safetensors file, same tokenizer, mean pooling, L2 normalisation) answers in
milliseconds and matches sentence-transformers to cosine > 0.9999 (tests/test_query_encoder.py).
It supports the architecture newsindex ships (BERT encoders with mean pooling); other models fall
back to sentence-transformers.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from newsindex.errors import NewsindexError


class UnsupportedModel(NewsindexError):
    pass


class NumpyEncoder:
    def __init__(self, model_dir: str | Path):
        path = Path(model_dir)
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedModel(f"{path}: only BERT encoders have a NumPy path")
        if cfg.get("hidden_act") != "gelu":
            raise UnsupportedModel(f"{path}: activation {cfg.get('hidden_act')!r} not implemented")
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())]
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text()) if (path / "1_Pooling").exists() else {}
        if modules[:2] != ["Transformer", "Pooling"] or set(modules[2:]) - {"Normalize"} or not pooling.get("pooling_mode_mean_tokens"):
            raise UnsupportedModel(f"{path}: only Transformer + mean Pooling (+ Normalize) pipelines have a NumPy path")
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights_file = path / "model.safetensors"
        if not weights_file.exists():
            raise UnsupportedModel(f"{path}: no model.safetensors")
        w = load_file(str(weights_file))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
        self._w = {k[len(prefix):]: v for k, v in w.items()}
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        st_cfg = path / "sentence_bert_config.json"
        max_len = json.loads(st_cfg.read_text()).get("max_seq_length", 512) if st_cfg.exists() else 512
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(max_len))
        self.tokenizer.no_padding()
        # Pre-transpose once so each layer is a plain x @ W.
        self._layers = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            g = self._w.get
            self._layers.append(
                {
                    "qkv": np.ascontiguousarray(
                        np.concatenate([g(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")]).T
                    ),
                    "qkv_b": np.concatenate([g(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")]),
                    "o": np.ascontiguousarray(g(p + "attention.output.dense.weight").T),
                    "o_b": g(p + "attention.output.dense.bias"),
                    "ln1": (g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias")),
                    "i": np.ascontiguousarray(g(p + "intermediate.dense.weight").T),
                    "i_b": g(p + "intermediate.dense.bias"),
                    "out": np.ascontiguousarray(g(p + "output.dense.weight").T),
                    "out_b": g(p + "output.dense.bias"),
                    "ln2": (g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias")),
                }
            )
        self.dim = int(cfg["hidden_size"])

    def _layer_norm(self, x: np.ndarray, params) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * params[0] + params[1]

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text (texts are encoded one by one:
        queries are short, and no padding keeps the arithmetic identical to the unpadded model)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # One BLAS thread: the matrices are a few dozen rows, and BLAS's threads spin-wait for each
        # other; on 2 busy cores that made a 14 ms query take 100-300 ms.
        with _blas_controller().limit(limits=1, user_api="blas"):
            for row, enc in enumerate(self.tokenizer.encode_batch(list(texts))):
                out[row] = self._encode_ids(np.asarray(enc.ids), np.asarray(enc.type_ids))
        return out

    def _encode_ids(self, ids: np.ndarray, type_ids: np.ndarray) -> np.ndarray:
        w = self._w
        n = len(ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
        x = x + w["embeddings.token_type_embeddings.weight"][type_ids]
        x = self._layer_norm(x, (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]))
        head_dim = self.dim // self.heads
        scale = 1.0 / np.sqrt(head_dim)
        for layer in self._layers:
            qkv = x @ layer["qkv"] + layer["qkv_b"]
            q, k, v = (qkv[:, i * self.dim : (i + 1) * self.dim].reshape(n, self.heads, head_dim).transpose(1, 0, 2) for i in range(3))
            scores = (q @ k.transpose(0, 2, 1)) * scale
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            context = (probs @ v).transpose(1, 0, 2).reshape(n, self.dim)
            x = self._layer_norm(x + context @ layer["o"] + layer["o_b"], layer["ln1"])
            hidden = _gelu(x @ layer["i"] + layer["i_b"])
            x = self._layer_norm(x + hidden @ layer["out"] + layer["out_b"], layer["ln2"])
        pooled = x.mean(0)
        return (pooled / max(np.linalg.norm(pooled), 1e-12)).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT's "gelu"; erf by Abramowitz-Stegun 7.1.26 (error < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return 0.5 * x * (1.0 + erf)


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@lru_cache(maxsize=2)
def query_encoder(model_dir: str):
    """The fastest encoder that gives the stored vectors' numbers for this model."""
    try:
        return NumpyEncoder(model_dir)
    except UnsupportedModel:
        from newsindex.embedding import Embedder, model_info

        return Embedder(model_info(model_dir))
