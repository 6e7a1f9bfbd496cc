"""Inference on ONNX Runtime alone (no torch): the engine of scoring and serving.

:class:`OnnxModel` reads the model card from the ONNX metadata, takes the CUDA provider when a
GPU is really usable (else the CPU) and says which, and preprocesses raw bytes with the same
function training used.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from attnloop import imaging
from attnloop.card import CARD_METADATA_KEY, ModelCard
from attnloop.threads import onnx_options

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@functools.cache
def cuda_usable() -> bool:
    """The GPU build lists the CUDA provider even where no driver exists; check for the driver itself."""
    if CUDA not in ort.get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class OnnxModel:
    def __init__(self, model: str | Path | bytes, *, device: str = "auto", threads: int | None = None, name: str | None = None) -> None:
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; valid names: {', '.join(DEVICES)}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        onnx_options(options, threads)  # the CPUs this process may use, idle threads sleeping (attnloop.threads)
        if device == "cuda" and not cuda_usable():
            raise RuntimeError("device 'cuda' was asked for but no CUDA driver is usable here; use device='auto' or 'cpu'")
        wanted = [CUDA, CPU] if device != "cpu" and cuda_usable() else [CPU]
        source = model if isinstance(model, bytes) else str(model)
        name = name or ("the model" if isinstance(model, bytes) else str(model))  # for messages
        try:
            self.session = ort.InferenceSession(source, options, providers=wanted)
        except Exception as err:  # ONNX Runtime's own errors (InvalidProtobuf, Fail, …) subclass nothing more specific
            reason = " ".join(str(err).split())[:200]
            raise ValueError(
                f"{name} is not a model ONNX Runtime can load ({type(err).__name__}: {reason}); "
                "give the .onnx file `attnloop export RUN --out model.onnx` wrote, or a registry model (models:/NAME@champion)"
            ) from None
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise RuntimeError(f"device 'cuda' was asked for but ONNX Runtime runs on {self.provider}: no usable GPU")
        log.info("ONNX Runtime provider: %s", self.provider)
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CARD_METADATA_KEY not in metadata:
            raise ValueError(f"{name} carries no attnloop model card in its metadata; export it with `attnloop export RUN --out model.onnx`")
        self.card = ModelCard.from_json(metadata[CARD_METADATA_KEY])
        self.metadata = dict(metadata)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def device(self) -> str:
        return "cuda" if self.provider == CUDA else "cpu"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a preprocessed N×C×H×W float32 batch."""
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return dict(zip(self.output_names, outputs))

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs plus ``probabilities`` and ``attention_probabilities`` (softmax of both branches)."""
        out = self.run(batch)
        out["probabilities"] = _softmax(out["logits"])
        out["attention_probabilities"] = _softmax(out["attention_logits"])
        return out

    def predict_bytes(self, items: Sequence[bytes]) -> dict[str, np.ndarray]:
        return self.predict(np.stack([imaging.preprocess_bytes(data, self.card) for data in items]))
