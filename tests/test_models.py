import pytest
import torch
import torchvision

from attnloop.card import ModelCard
from attnloop.models import ABN, build_model, get_model, list_models, load_checkpoint, load_init_weights, make_card, register_model, save_checkpoint
from attnloop.models.checkpoint import default_attention

SIZES = {"cifar": [(32, 32), (64, 64), (128, 96)], "resnet": [(64, 64), (96, 128)]}


def cases():
    for name in list_models():
        for size in SIZES["cifar" if "cifar" in name else "resnet"]:
            for channels in (1, 3, 5):
                yield name, size, channels


@pytest.mark.parametrize(("name", "size", "channels"), list(cases()))
def test_forward_shapes_and_attention_range(name, size, channels):
    torch.manual_seed(0)
    card = make_card(name, class_names=["a", "b", "c"], input_size=size, channels=channels)
    model = build_model(card).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, *size) * 3)
    assert out.logits.shape == (2, 3)
    assert out.attention_logits.shape == (2, 3)
    assert out.attention.shape == (2, 1, *card.attention_size)
    assert out.embedding.shape[0] == 2 and out.embedding.ndim == 2
    assert float(out.attention.min()) >= 0.0 and float(out.attention.max()) <= 1.0
    assert torch.isfinite(out.logits).all()


def test_msabn_attention_has_twice_the_resolution_of_abn_and_the_local_branch_that_of_the_first_stage():
    abn = make_card("abn_resnet18", class_names=["a", "b"], input_size=(224, 224), channels=3, attention={"branch": "last"})
    msabn = make_card("msabn_resnet18", class_names=["a", "b"], input_size=(224, 224), channels=3)
    local = make_card("abn_resnet18", class_names=["a", "b"], input_size=(224, 224), channels=3, attention=default_attention("abn_resnet18"))
    assert abn.attention_size == (14, 14) and msabn.attention_size == (28, 28) and local.attention_size == (56, 56)
    assert make_card("msabn_cifar", class_names=["a", "b"], input_size=(64, 64), channels=1).attention_size == (32, 32)


def test_registry_refuses_duplicates_and_names_valid_models():
    def abn_cifar(**config):
        return None

    with pytest.raises(ValueError, match="'abn_cifar' is already registered"):
        register_model(abn_cifar)
    with pytest.raises(ValueError, match="valid names: abn_cifar"):
        get_model("vit_tiny", num_classes=2)


def test_input_size_limits():
    with pytest.raises(ValueError, match="32–128 px"):
        get_model("abn_cifar", num_classes=2, input_size=(16, 16))
    with pytest.raises(ValueError, match="at least 64 px"):
        get_model("abn_resnet18", num_classes=2, input_size=(32, 32))


def test_card_validation_and_roundtrip(tmp_path):
    card = make_card("abn_cifar", class_names=["ok", "hole"], input_size=(64, 64), channels=2, mean=[0.1, 0.2], std=[0.3, 0.4])
    card.save(tmp_path / "card.json")
    assert ModelCard.load(tmp_path / "card.json") == card
    with pytest.raises(ValueError, match="one value per channel"):
        ModelCard("abn_cifar", ("a", "b"), (32, 32), 3, (0.5,), (0.5,), (16, 16))
    with pytest.raises(ValueError, match="unique"):
        ModelCard("abn_cifar", ("a", "a"), (32, 32), 1, (0.5,), (0.5,), (16, 16))


def test_checkpoint_roundtrip(tmp_path):
    card = make_card("msabn_cifar", class_names=["a", "b"], input_size=(32, 32), channels=1)
    model = build_model(card).eval()
    save_checkpoint(tmp_path / "model.pt", model, card, {"note": "x"})
    loaded, loaded_card, info = load_checkpoint(tmp_path)
    assert loaded_card == card and info == {"note": "x"}
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_checkpoint(tmp_path / "missing")


def test_init_weights_from_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None, num_classes=1000)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    card = make_card("abn_resnet18", class_names=["a", "b"], input_size=(64, 64), channels=1, attention={"branch": "last"})
    model: ABN = build_model(card)
    report = load_init_weights(model, tmp_path / "resnet18.pth")
    assert "fc.weight" in report.skipped  # 1000 classes do not fit 2
    # gray input: the first conv is the RGB kernel summed over channels
    torch.testing.assert_close(model.stem[0].weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    # layer4 initializes both the perception stage and the attention stage
    torch.testing.assert_close(model.perception_stage[0].conv1.weight, reference.layer4[0].conv1.weight)
    torch.testing.assert_close(model.attention_stage[0].conv1.weight, reference.layer4[0].conv1.weight)
    torch.testing.assert_close(model.features[2][1].conv2.weight, reference.layer3[1].conv2.weight)
    assert model.attention_stage[0].conv1.stride == (1, 1) and model.perception_stage[0].conv1.stride == (2, 2)
    # the local branch splits after layer1: layer2–layer4 are its perception stages
    local = build_model(make_card("abn_resnet18", class_names=["a", "b"], input_size=(64, 64), channels=1, attention=default_attention("abn_resnet18")))
    assert local.branch == "local"
    report = load_init_weights(local, tmp_path / "resnet18.pth")
    torch.testing.assert_close(local.features[0][1].conv2.weight, reference.layer1[1].conv2.weight)
    torch.testing.assert_close(local.perception_stage[0][0].conv1.weight, reference.layer2[0].conv1.weight)
    torch.testing.assert_close(local.perception_stage[2][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert report.skipped == ["fc.weight", "fc.bias"] or set(report.skipped) == {"fc.weight", "fc.bias"}


def test_init_weights_that_fit_nothing_are_refused(tmp_path):
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pth")
    model = get_model("abn_cifar", num_classes=2, in_channels=1, input_size=(32, 32))
    with pytest.raises(ValueError, match="no tensor that fits"):
        load_init_weights(model, tmp_path / "other.pth")
