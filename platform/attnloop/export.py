"""Export an attention model to ONNX, with its card in the metadata, and check parity.

The ONNX graph has one input ``image`` (N×C×H×W, dynamic batch) and the outputs ``logits``,
``attention``, ``attention_logits``, ``embedding``. Parity is measured on raw image bytes sent
through the shared preprocessing into both PyTorch and ONNX Runtime.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch
from torch import nn

from attnloop import imaging
from attnloop.card import CARD_METADATA_KEY, ModelCard
from attnloop.models import OUTPUT_NAMES
from attnloop.runtime import OnnxModel

OPSET = 18
INPUT_NAME = "image"

PARITY_LIMIT = 1e-4  # the most an export may differ from PyTorch on logits and attention (CLI export, registration)


def export_onnx(model: nn.Module, card: ModelCard, out: str | Path, *, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``out`` (a single self-contained .onnx file) and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(2, card.channels, *card.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (dummy,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    metadata = {CARD_METADATA_KEY: card.to_json(), **(extra_metadata or {})}
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


@torch.no_grad()
def parity(model: nn.Module, card: ModelCard, onnx_path: str | Path, samples: Sequence[bytes]) -> dict[str, float]:
    """Max absolute difference per output between PyTorch and ONNX Runtime on the same image bytes."""
    batch = np.stack([imaging.preprocess_bytes(data, card) for data in samples])
    reference = model.eval()(torch.from_numpy(batch))
    result = OnnxModel(onnx_path, device="cpu").run(batch)
    return {name: float(np.abs(result[name] - ref.numpy()).max()) for name, ref in zip(OUTPUT_NAMES, reference)}
