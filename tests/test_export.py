import numpy as np
import onnx
import pytest
import torch

from attnloop.card import ModelCard
from attnloop.export import PARITY_LIMIT, export_onnx, parity
from attnloop.imaging import encode_png
from attnloop.models import OUTPUT_NAMES, build_model, list_models, make_card
from attnloop.models.checkpoint import default_attention
from attnloop.runtime import OnnxModel, cuda_usable

LIMIT = PARITY_LIMIT


def raw_images(card: ModelCard, count: int = 3) -> list[bytes]:
    """PNG bytes of another size than the model's input, so the shared resize is exercised too."""
    rng = np.random.default_rng(0)
    channels = 3 if card.channels == 3 else 1
    return [encode_png(rng.integers(0, 256, size=(card.input_size[0] + 7, card.input_size[1] - 5, channels), dtype=np.uint8)) for _ in range(count)]


@pytest.mark.parametrize("form", ["original", "faithful"])
@pytest.mark.parametrize("arch", list_models())
def test_onnx_parity_on_raw_bytes(arch, form, tmp_path):
    """Every architecture, in the original ABN form and in the faithful one (``M · g``, local branch for ABNs)."""
    torch.manual_seed(0)
    size = (32, 32) if "cifar" in arch else (64, 64)
    attention = default_attention(arch) if form == "faithful" else {"gate": "residual", "branch": "last"}
    card = make_card(arch, class_names=["ok", "hole", "spot"], input_size=size, channels=3 if "resnet" in arch else 1, attention=attention)
    model = build_model(card).eval()
    path = export_onnx(model, card, tmp_path / "model.onnx")
    diff = parity(model, card, path, raw_images(card))
    assert set(diff) == set(OUTPUT_NAMES)
    assert diff["logits"] <= LIMIT and diff["attention"] <= LIMIT, diff


def test_onnx_graph_names_metadata_and_dynamic_batch(tmp_path):
    card = make_card("msabn_cifar", class_names=["a", "b"], input_size=(32, 32), channels=2)
    model = build_model(card).eval()
    path = export_onnx(model, card, tmp_path / "m.onnx", extra_metadata={"attnloop.version": "7"})
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    runtime = OnnxModel(path)
    assert runtime.card == card and runtime.metadata["attnloop.version"] == "7"
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, 2, 32, 32)).astype(np.float32)
        out = runtime.predict(x)
        assert out["logits"].shape == (batch, 2)
        assert out["attention"].shape == (batch, 1, *card.attention_size)
        np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(out["embedding"]), model(torch.from_numpy(x)).embedding, rtol=1e-3, atol=1e-4)


def test_runtime_reports_its_provider(tmp_path):
    card = make_card("abn_cifar", class_names=["a", "b"], input_size=(32, 32), channels=1)
    path = export_onnx(build_model(card), card, tmp_path / "m.onnx")
    runtime = OnnxModel(path, device="auto")
    assert runtime.device == ("cuda" if cuda_usable() else "cpu")
    assert OnnxModel(path, device="cpu").provider == "CPUExecutionProvider"
    if not cuda_usable():
        with pytest.raises(RuntimeError, match="no CUDA driver"):
            OnnxModel(path, device="cuda")
    with pytest.raises(ValueError, match="valid names: auto, cpu, cuda"):
        OnnxModel(path, device="tpu")


def test_a_model_without_a_card_is_refused(tmp_path):
    card = make_card("abn_cifar", class_names=["a", "b"], input_size=(32, 32), channels=1)
    path = export_onnx(build_model(card), card, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="no attnloop model card"):
        OnnxModel(tmp_path / "bare.onnx")
