import numpy as np
import pytest
import torch

from attnloop.guidance import box_mask, counterexamples, guidance_loss, map_target, outside_box_loss, shortcut_penalty
from attnloop.models import make_card, build_model


def test_box_mask_is_exact_cell_coverage():
    mask = box_mask([[0, 0, 6, 4]], image_size=(8, 8), out_size=(2, 2))
    # the box covers all of cell (0, 0), half of cell (0, 1) and nothing of row 1
    np.testing.assert_allclose(mask, [[1.0, 0.5], [0.0, 0.0]])


def test_several_boxes_margin_and_blur():
    mask = box_mask([[0, 0, 4, 4], [12, 12, 16, 16]], image_size=(16, 16), out_size=(4, 4))
    assert mask[0, 0] == 1 and mask[3, 3] == 1 and mask.sum() == 2
    wide = box_mask([[4, 4, 8, 8]], image_size=(16, 16), out_size=(4, 4), margin=0.5)
    assert wide[0, 0] == pytest.approx(0.25) and wide[1, 1] == 1
    soft = box_mask([[4, 4, 8, 8]], image_size=(16, 16), out_size=(4, 4), blur=1.0)
    assert soft[1, 1] == 1 and 0 < soft[0, 0] < soft[1, 2] < 1


def test_map_target_resizes_and_scales():
    edited = np.zeros((8, 8), np.uint8)
    edited[:4, :4] = 255
    np.testing.assert_allclose(map_target(edited, (2, 2)), [[1, 0], [0, 0]])


def test_losses_apply_only_to_guided_samples():
    attention = torch.full((2, 1, 4, 4), 0.8)
    target = torch.zeros(2, 4, 4)
    target[:, :2, :2] = 1
    assert float(outside_box_loss(attention, target, torch.tensor([True, False]))) == pytest.approx(0.8)
    assert float(outside_box_loss(attention, target, torch.tensor([False, False]))) == 0.0
    assert float(guidance_loss("match", attention, target, torch.tensor([True, True]))) == pytest.approx(
        (4 * 0.2**2 + 12 * 0.8**2) / 16
    )
    with pytest.raises(ValueError, match="valid names: outside, match"):
        guidance_loss("inside", attention, target, torch.tensor([True, True]))


@pytest.mark.parametrize("arch", ["abn_cifar", "msabn_cifar"])
@pytest.mark.parametrize("kind", ["outside", "match"])
def test_guidance_gradient_reaches_the_attention_branch(arch, kind):
    torch.manual_seed(0)
    card = make_card(arch, class_names=["a", "b"], input_size=(32, 32), channels=1)
    model = build_model(card).train()
    out = model(torch.randn(4, 1, 32, 32))
    target = torch.zeros(4, *card.attention_size)
    target[:, :4, :4] = 1
    guidance_loss(kind, out.attention, target, torch.tensor([True, True, False, False])).backward()
    for part in (model.attention_stage, model.class_maps, model.map_head):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), type(part).__name__
    # the guidance loss alone does not touch the perception classifier
    assert model.fc.weight.grad is None or float(model.fc.weight.grad.abs().sum()) == 0


def test_counterexamples_keep_the_box_and_swap_the_rest():
    images = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(3)])
    inside = torch.zeros(3, 4, 4)
    inside[:, :2, :2] = 1
    made, source = counterexamples(images, inside, torch.tensor([True, False, True]), generator=torch.Generator().manual_seed(0))
    assert source.tolist() == [0, 2]
    for ce, i in zip(made, source.tolist()):
        assert torch.all(ce[0, :2, :2] == i)
        outside = ce[0][inside[i] == 0]
        assert torch.all(outside == outside[0]) and float(outside[0]) != i


def test_shortcut_counterexamples_swap_the_mark_and_keep_the_rest():
    images = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(3)])
    marks = torch.zeros(3, 4, 4)
    marks[:, 3:, 3:] = 1
    made, source = counterexamples(images, marks, torch.tensor([False, True, False]), generator=torch.Generator().manual_seed(0), keep="outside")
    assert source.tolist() == [1]
    assert float(made[0, 0, 3, 3]) != 1 and torch.all(made[0, 0][marks[1] == 0] == 1)
    with pytest.raises(ValueError, match="inside' or 'outside"):
        counterexamples(images, marks, torch.tensor([True, True, True]), generator=torch.Generator(), keep="both")


def test_the_shortcut_penalty_pulls_input_gradient_and_attention_out_of_the_marks():
    """Its gradient reaches the parameters; it is zero for a model that ignores the marked pixels, and
    only the marked samples count."""
    torch.manual_seed(0)
    card = make_card("abn_cifar", class_names=["a", "b"], input_size=(32, 32), channels=1)
    model = build_model(card)
    images = torch.randn(4, 1, 32, 32, requires_grad=True)
    marks = torch.zeros(4, 32, 32)
    marks[:, :8, :8] = 1
    marked = torch.tensor([True, True, False, False])
    out = model(images)
    reliant, looked = shortcut_penalty(images, out.logits, out.attention, marks, marked)
    assert float(reliant) > 0 and 0 < float(looked) <= 1
    (reliant + looked).backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)
    none = shortcut_penalty(images, out.logits, out.attention, marks, torch.zeros(4, dtype=torch.bool))
    assert float(none[0]) == 0 and float(none[1]) == 0
    # a "model" whose logits read only the unmarked pixels: no reliance on the marks
    x = torch.randn(4, 1, 32, 32, requires_grad=True)
    logits = torch.stack([x[:, 0, 16:, 16:].mean(dim=(1, 2)), -x[:, 0, 16:, 16:].mean(dim=(1, 2))], dim=1)
    reliant, _ = shortcut_penalty(x, logits, torch.zeros(4, 1, 4, 4), marks, marked)
    assert float(reliant) == 0
