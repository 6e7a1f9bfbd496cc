"""The terms that make the map the model's reason: where their gradients go, what the gate lets through."""

import pytest
import torch

from attnloop.card import ModelCard
from attnloop.mining import area_prior, erase, gate_floor, mining_loss
from attnloop.models import build_model, load_checkpoint, make_card, save_checkpoint
from attnloop.models.abn import LEGACY_ATTENTION, check_attention

MULTIPLY = {"gate": "multiply", "area_target": 0.15}


def _model(attention: dict, arch: str = "abn_cifar"):
    torch.manual_seed(0)
    card = make_card(arch, class_names=["a", "b", "c"], input_size=(32, 32), channels=1, attention=attention)
    return build_model(card).train(), card


def _grads(model, names) -> dict[str, float]:
    out = {}
    for name in names:
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        out[name] = sum(float(g.abs().sum()) for g in grads if g is not None)
    return out


@pytest.mark.parametrize("attention", [MULTIPLY, {**MULTIPLY, "branch": "local"}, LEGACY_ATTENTION])
def test_mining_trains_the_map_and_nothing_that_judges_the_erased_image(attention):
    model, _ = _model(attention)
    x = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(x)
    running = [b.clone() for b in model.buffers()]
    mining_loss(model, x, out.attention, labels).backward()
    grads = _grads(model, ["map_head", "attention_stage", "class_maps", "perception_stage", "fc", "attention_classifier"])
    assert grads["map_head"] > 0 and grads["attention_stage"] > 0 and grads["class_maps"] > 0, grads
    # the perception branch and the attention-branch classifier take no part in making the map
    assert grads["perception_stage"] == 0 and grads["fc"] == 0 and grads["attention_classifier"] == 0, grads
    # and the erased batch leaves the BatchNorm statistics as they were
    assert all(torch.equal(a, b) for a, b in zip(running, model.buffers()))


def test_the_area_prior_reaches_the_map_head_and_moves_the_maps_mean_to_its_target():
    model, _ = _model(MULTIPLY)
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    area_prior(model(x).attention, 0.4).backward()
    assert float(model.map_head.conv.bias.grad.abs()) > 0
    assert model.fc.weight.grad is None  # the prior reaches the map, not the classifier
    optimizer = torch.optim.Adam(model.map_head.parameters(), lr=0.05)
    before = float(model(x).attention.mean())
    for _ in range(60):
        optimizer.zero_grad()
        area_prior(model(x).attention, 0.4).backward()
        optimizer.step()
    after = float(model(x).attention.mean())
    assert abs(before - 0.15) < 0.08  # the head starts at the target it was built for
    assert abs(after - 0.4) < 0.03 < abs(before - 0.4)


def test_the_multiply_gate_lets_through_only_what_the_map_opens():
    model, _ = _model(MULTIPLY)
    model.eval()
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    features = model.features(model.stem(x))
    shut = model.perceive(features, torch.zeros_like(features[:, :1]))[0]
    other = model.perceive(features.flip(0), torch.zeros_like(features[:, :1]))[0]
    torch.testing.assert_close(shut, other)  # a closed map: every image looks the same to perception
    model.floor = 1.0  # the start of the anneal: the original ABN's (1 + M) · g
    opened = model.perceive(features, torch.zeros_like(features[:, :1]))[0]
    assert not torch.allclose(opened, model.perceive(features.flip(0), torch.zeros_like(features[:, :1]))[0])


def test_erasing_follows_the_map_and_the_floor_anneals_to_zero():
    images = torch.ones(1, 1, 8, 8)
    attention = torch.zeros(1, 1, 4, 4)
    attention[..., 0, 0] = 1.0
    erased = erase(images, attention)
    assert float(erased[0, 0, 0, 0]) < 0.05 and float(erased[0, 0, 7, 7]) > 0.95
    assert gate_floor(0, 100, anneal=0.3) == 1.0
    assert gate_floor(15, 100, anneal=0.3) == pytest.approx(0.5)
    assert gate_floor(30, 100, anneal=0.3) == 0.0 == gate_floor(99, 100, anneal=0.3)
    assert gate_floor(0, 100, anneal=0.0) == 0.0


def test_cards_record_the_gate_and_old_cards_build_the_original_abn(tmp_path):
    model, card = _model(MULTIPLY)
    assert card.extra["attention"] == {"gate": "multiply", "branch": "last", "area_target": 0.15}
    save_checkpoint(tmp_path / "model.pt", model, card)
    loaded, loaded_card, _ = load_checkpoint(tmp_path)
    assert loaded.gate == "multiply" and loaded.floor == 0.0 and loaded_card == card
    old = ModelCard.from_dict({**card.to_dict(), "extra": {}})  # a card written before the gate was a choice
    legacy = build_model(old)
    assert legacy.gate == "residual" and legacy.floor == 1.0 and isinstance(legacy.map_head.bn, torch.nn.BatchNorm2d)


def test_bad_attention_options_name_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: residual, multiply"):
        check_attention({"gate": "add"})
    with pytest.raises(ValueError, match="valid names: last, local"):
        check_attention({"branch": "early"})
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        check_attention({"gate": "multiply", "area_target": 1.5})
    with pytest.raises(ValueError, match="valid: gate, branch, area_target"):
        check_attention({"gates": "multiply"})
    with pytest.raises(ValueError, match="MS-ABN"):
        make_card("msabn_cifar", class_names=["a", "b"], input_size=(32, 32), channels=1, attention={"branch": "local"})


def test_new_models_take_the_faithful_form_and_the_original_abn_stays_available(tiny_data):
    from attnloop.training import ORIGINAL_ABN, TrainConfig, train

    for arch, branch in (("abn_cifar", "local"), ("msabn_cifar", "last")):
        card = make_card(arch, class_names=["a", "b"], input_size=(32, 32), channels=1)
        assert card.extra["attention"] == {"gate": "multiply", "branch": branch, "area_target": 0.15}
    faithful = train(tiny_data, TrainConfig(epochs=1), progress=False)
    assert faithful.card.extra["attention"]["branch"] == "local" and faithful.model.gate == "multiply"
    assert faithful.history[-1]["mining"] > 0  # attention mining is on by default
    original = train(tiny_data, TrainConfig(epochs=1, **ORIGINAL_ABN), progress=False)
    assert original.card.extra["attention"] == check_attention(LEGACY_ATTENTION) and original.history[-1]["mining"] == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_an_unguided_faithful_map_points_at_the_shortcut_the_model_uses(tmp_path, seed):
    """A small `mill`: the signature bar gives the class on every training image and is random in test.

    The model takes the shortcut (blanking the bar changes most test predictions); the map must then
    put clearly more of its energy on the bar than the bar's area — a flat map, which is what the original
    ABN shows here (docs/benchmarks/datasets.md), scores 1×.
    """
    from attnloop.datasets import make_dataset
    from attnloop.training import TrainConfig, train

    make_dataset("mill", tmp_path / "mill", seed=seed, size=120)
    result = train(tmp_path / "mill", TrainConfig(epochs=20, seed=seed, guidance="none", threads=1), progress=False)
    test, masks = result.metrics["splits"]["test"], result.sets["test"].confounder_masks
    flat = masks.reshape(len(masks), -1)
    area = float(flat[flat.any(axis=1)].mean())
    assert test["confounder_reliance"] >= 0.6  # the shortcut decides most predictions
    assert test["wrong_reason"] >= 2.5 * area, (test["wrong_reason"], area)
