import contextlib
import math

import numpy as np
import pytest

from attnloop.faithfulness import (
    deletion_insertion,
    occlusion_map,
    onnx_predict,
    pointing,
    pointing_chance,
    random_order,
    rise_map,
    saliency_order,
)

GRID = (8, 8)  # 4×4-pixel cells on 32×32 inputs
REGION = [0, 1, 8, 9]  # the cells under the top-left 8×8 pixels, row-major on the 8×8 grid
trapezoid = getattr(np, "trapezoid", None) or np.trapz


def region_model(batch: np.ndarray) -> np.ndarray:
    """Class 1 is a logistic of the mean of the top-left 8×8 pixels; nothing else matters."""
    p = 1 / (1 + np.exp(-6 * (batch[:, 0, :8, :8].mean(axis=(1, 2)) - 0.5)))
    return np.stack([1 - p, p], axis=1)


def toy_images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 1.5, size=(n, 1, 32, 32)).astype(np.float32)


def far(maps: np.ndarray) -> np.ndarray:
    """The cells at least two cells away from the region (rows or columns 3…7)."""
    keep = np.ones(GRID, bool)
    keep[:3, :3] = False
    return maps[:, keep]


# --- occlusion -----------------------------------------------------------------------------------


def test_occlusion_map_peaks_on_the_region_the_model_reads():
    images = toy_images()
    ones = np.ones(len(images), np.int64)
    occlusion = occlusion_map(region_model, images, ones, grid=GRID, window=2, batch_size=50)
    assert occlusion.shape == (4, *GRID)
    # The 2×2-cell window anchored at (0, 0) covers the whole region: the largest drop.
    assert (occlusion.reshape(4, -1).argmax(axis=1) == 0).all()
    intact = region_model(images)[:, 1]
    np.testing.assert_allclose(occlusion[:, 0, 0], intact - region_model(np.zeros_like(images))[:, 1], rtol=1e-6)
    assert (occlusion[:, 0, 0] > 0.5).all()
    # Windows that miss the region change nothing.
    touching = np.zeros(GRID, bool)
    touching[:2, :2] = True  # the cells whose window overlaps the region
    assert np.abs(occlusion[:, ~touching]).max() < 1e-12
    assert (occlusion[:, touching] > 0.1).all()
    # The other class's probability moves the other way.
    zeros = np.zeros(len(images), np.int64)
    np.testing.assert_allclose(occlusion_map(region_model, images, zeros, grid=GRID), -occlusion, atol=1e-12)


def cell_detector(batch: np.ndarray) -> np.ndarray:
    """'Class' c answers 1 − the mean of cell c of a 4×4 grid on 8×8 inputs: 1 when that cell is removed."""
    cells = batch[:, 0].reshape(len(batch), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(batch), 16)
    return 1 - cells


@pytest.mark.parametrize("window", [1, 2, 3, 4])
def test_occlusion_window_is_centred_and_clipped_at_the_border(window):
    images = np.ones((16, 1, 8, 8), np.float32)
    occlusion = occlusion_map(cell_detector, images, np.arange(16), grid=(4, 4), window=window, batch_size=7)
    # occlusion[c, y, x] = −1 exactly when cell c lies under the window placed for cell (y, x).
    expected = np.zeros((16, 4, 4))
    for y in range(4):
        for x in range(4):
            y0 = min(max(y - (window - 1) // 2, 0), 4 - window)
            x0 = min(max(x - (window - 1) // 2, 0), 4 - window)
            for cy in range(y0, y0 + window):
                for cx in range(x0, x0 + window):
                    expected[cy * 4 + cx, y, x] = -1
    np.testing.assert_array_equal(occlusion, expected)


# --- deletion / insertion ------------------------------------------------------------------------


def test_deletion_and_insertion_rank_the_true_order_above_random_and_reverse():
    images = toy_images()
    ones = np.ones(len(images), np.int64)
    occlusion = occlusion_map(region_model, images, ones, grid=GRID)
    truth = saliency_order(occlusion)
    assert (np.sort(truth[:, :4], axis=1) == REGION).all()
    orders = {"truth": truth, "random": random_order(4, 64, seed=0), "reverse": truth[:, ::-1]}
    results = {name: deletion_insertion(region_model, images, ones, order, grid=GRID, steps=16) for name, order in orders.items()}
    for name in ("random", "reverse"):
        assert (results["truth"]["deletion"] < results[name]["deletion"]).all(), name
        assert (results["truth"]["insertion"] > results[name]["insertion"]).all(), name
    assert (results["random"]["deletion"] < results["reverse"]["deletion"]).all()

    intact = region_model(images)[:, 1]
    empty = region_model(np.zeros_like(images))[:, 1]
    for result in results.values():
        assert result["deletion_curve"].shape == result["insertion_curve"].shape == (4, 17)
        np.testing.assert_allclose(result["fraction"], np.linspace(0, 1, 17))
        np.testing.assert_allclose(result["deletion_curve"][:, 0], intact, rtol=1e-6)
        np.testing.assert_allclose(result["deletion_curve"][:, -1], empty, rtol=1e-6)
        np.testing.assert_allclose(result["insertion_curve"][:, 0], empty, rtol=1e-6)
        np.testing.assert_allclose(result["insertion_curve"][:, -1], intact, rtol=1e-6)
        np.testing.assert_allclose(result["deletion"], trapezoid(result["deletion_curve"], result["fraction"], axis=1))
        np.testing.assert_allclose(result["insertion"], trapezoid(result["insertion_curve"], result["fraction"], axis=1))
    # Region first: the probability falls to the empty image's after the first step (4 cells).
    np.testing.assert_allclose(results["truth"]["deletion_curve"][:, 1:], np.repeat(empty[:, None], 16, axis=1), rtol=1e-6)


class Recorder:
    """A predict that keeps every batch it is given and answers the share of baseline pixels."""

    def __init__(self, baseline: float) -> None:
        self.baseline = baseline
        self.batches: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        gone = (batch == self.baseline).mean(axis=(1, 2, 3))
        return np.stack([gone, 1 - gone], axis=1)


def test_deletion_insertion_removes_exactly_the_ordered_blocks_in_bounded_batches():
    rng = np.random.default_rng(3)
    images = rng.uniform(1, 2, size=(3, 2, 8, 12)).astype(np.float32)  # 2×3-pixel cells on a 4×4 grid
    order = random_order(3, 16, seed=5)
    steps, baseline, batch_size = 5, -1.0, 4
    recorder = Recorder(baseline)
    classes = np.zeros(3, np.int64)
    result = deletion_insertion(recorder, images, classes, order, grid=(4, 4), steps=steps, baseline=baseline, batch_size=batch_size)

    jobs = 2 * 3 * (steps + 1)
    assert len(recorder.batches) == math.ceil(jobs / batch_size)
    assert all(len(batch) <= batch_size for batch in recorder.batches)
    counts = np.arange(steps + 1) * 16 // steps
    np.testing.assert_allclose(result["fraction"], counts / 16)
    np.testing.assert_allclose(result["deletion_curve"], np.tile(counts / 16, (3, 1)), rtol=1e-6)
    np.testing.assert_allclose(result["insertion_curve"], np.tile(1 - counts / 16, (3, 1)), rtol=1e-6)

    expected = []
    for image, cells in zip(images, order):
        for count in counts:
            for removed in (cells[:count], cells[count:]):  # deletion removes the first cells, insertion the rest
                out = image.copy()
                for cell in removed:
                    y, x = divmod(int(cell), 4)
                    out[:, 2 * y : 2 * y + 2, 3 * x : 3 * x + 3] = baseline
                expected.append(out.tobytes())
    seen = [image.tobytes() for batch in recorder.batches for image in batch]
    assert sorted(seen) == sorted(expected)


def test_one_order_row_serves_every_image():
    images = toy_images(3)
    ones = np.ones(3, np.int64)
    row = np.arange(64)
    shared = deletion_insertion(region_model, images, ones, row, grid=GRID, steps=8)
    stacked = deletion_insertion(region_model, images, ones, np.tile(row, (3, 1)), grid=GRID, steps=8)
    for key in shared:
        np.testing.assert_array_equal(shared[key], stacked[key])


# --- pointing game and orders --------------------------------------------------------------------


def test_pointing_hits_misses_ties_and_empty_masks():
    maps = np.zeros((5, 4, 4))
    masks = np.zeros((5, 4, 4))
    maps[0, 1, 2] = 1.0
    masks[0, 1, 2] = 0.1  # partial coverage is a hit
    maps[1, 0, 0] = 1.0
    masks[1, 3, 3] = 1.0
    maps[2, 2, 2] = 1.0  # image 2 has no mask
    maps[3:, 0, 3] = maps[3:, 2, 1] = 0.7  # a tie: (0, 3) comes first in row-major order
    masks[3, 2, 1] = 1.0
    masks[4, 0, 3] = 1.0
    result = pointing(maps, masks)
    np.testing.assert_array_equal(result, [1.0, 0.0, np.nan, 0.0, 1.0])
    np.testing.assert_array_equal(pointing(maps[:, None], masks[:, None]), result)


def test_pointing_chance_is_the_covered_share():
    masks = np.zeros((2, 4, 4))
    masks[0, 0, :3] = 1.0
    masks[0, 3, 3] = 0.2
    np.testing.assert_array_equal(pointing_chance(masks), [0.25, np.nan])


def test_saliency_order_is_stable_and_random_order_is_seeded():
    np.testing.assert_array_equal(saliency_order(np.array([[[0.5, 1.0], [1.0, 0.0]]])), [[1, 2, 0, 3]])
    first, again, other = random_order(5, 16, seed=1), random_order(5, 16, seed=1), random_order(5, 16, seed=2)
    assert first.shape == (5, 16)
    assert (np.sort(first, axis=1) == np.arange(16)).all()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len({row.tobytes() for row in first}) == 5


# --- RISE ----------------------------------------------------------------------------------------


def test_rise_map_finds_the_region_and_is_seeded():
    images = toy_images(2)
    ones = np.ones(2, np.int64)
    rise = rise_map(region_model, images, ones, grid=GRID, samples=400, mask_grid=(4, 4), seed=0, batch_size=128)
    assert rise.shape == (2, *GRID)
    flat = rise.reshape(2, -1)
    assert np.isin(flat.argmax(axis=1), REGION).all()
    assert (flat[:, REGION].mean(axis=1) > far(rise).mean(axis=1) + 0.1).all()
    # The same seed gives the same masks whatever the batch size; another seed gives other masks.
    rebatched = rise_map(region_model, images, ones, grid=GRID, samples=400, mask_grid=(4, 4), seed=0, batch_size=300)
    np.testing.assert_allclose(rebatched, rise, atol=1e-12)
    assert np.abs(rise_map(region_model, images, ones, grid=GRID, samples=400, mask_grid=(4, 4), seed=1) - rise).max() > 1e-3


def test_rise_map_with_nothing_masked_is_the_intact_probability():
    images = toy_images(2)
    rise = rise_map(region_model, images, np.ones(2, np.int64), grid=GRID, samples=10, keep=1.0)
    np.testing.assert_allclose(rise, np.broadcast_to(region_model(images)[:, 1, None, None], rise.shape), rtol=1e-5)


# --- bad input -----------------------------------------------------------------------------------


ONES = np.ones(2, np.int64)
IMAGES = np.zeros((2, 1, 32, 32), np.float32)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pointing(np.zeros((2, 4, 4)), np.zeros((2, 4, 5))), "build the masks at the attention size"),
        (lambda: pointing(np.zeros((4, 4)), np.zeros((4, 4))), r"N×h×w"),
        (lambda: pointing(np.full((1, 2, 2), np.nan), np.ones((1, 2, 2))), "NaN"),
        (lambda: saliency_order(np.zeros((2, 3, 4, 4))), r"N×h×w"),
        (lambda: random_order(2, 0, seed=0), "cells >= 1"),
        (lambda: deletion_insertion(region_model, IMAGES[:, 0], ONES, np.arange(64), grid=GRID), r"N×C×H×W"),
        (lambda: deletion_insertion(region_model, IMAGES, ONES, np.arange(64), grid=(5, 8)), "does not divide the 32×32"),
        (lambda: deletion_insertion(region_model, IMAGES, ONES, np.arange(64), grid=GRID, steps=0), "steps must be between 1 and the 64"),
        (lambda: deletion_insertion(region_model, IMAGES, ONES, np.arange(64), grid=GRID, steps=65), "steps must be between"),
        (lambda: deletion_insertion(region_model, IMAGES, ONES, np.arange(63), grid=GRID), r"order must be 2×64"),
        (lambda: deletion_insertion(region_model, IMAGES, ONES, np.zeros(64, np.int64), grid=GRID), "row 0 is not a permutation"),
        (lambda: deletion_insertion(region_model, IMAGES, ONES[:1], np.arange(64), grid=GRID), "classes must be 2 integer"),
        (lambda: deletion_insertion(region_model, IMAGES, ONES * 2, np.arange(64), grid=GRID), "class 2 asked for"),
        (lambda: deletion_insertion(region_model, IMAGES, ONES, np.arange(64), grid=GRID, batch_size=0), "batch_size"),
        (lambda: deletion_insertion(lambda b: b[:, 0, 0, 0], IMAGES, ONES, np.arange(64), grid=GRID), "predict must return N×K"),
        (lambda: occlusion_map(region_model, IMAGES, ONES, grid=GRID, window=9), "window must be between 1 and 8"),
        (lambda: occlusion_map(region_model, IMAGES, ONES, grid=(8, 0)), "two positive cell counts"),
        (lambda: rise_map(region_model, IMAGES, ONES, grid=GRID, keep=0.0), "0 < keep <= 1"),
    ],
)
def test_bad_input_is_refused_with_a_reason(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- ONNX Runtime --------------------------------------------------------------------------------


@contextlib.contextmanager
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_occlusion_through_onnx_runtime_matches_torch(tmp_path):
    import torch

    from attnloop.export import export_onnx
    from attnloop.models import build_model, make_card
    from attnloop.runtime import OnnxModel

    with one_torch_thread():
        torch.manual_seed(0)
        card = make_card("abn_cifar", class_names=("a", "b"), input_size=(32, 32), channels=1)
        model = build_model(card).eval()
        runtime = OnnxModel(export_onnx(model, card, tmp_path / "m.onnx"), device="cpu", threads=1)

        @torch.no_grad()
        def torch_predict(batch: np.ndarray) -> np.ndarray:
            return torch.softmax(model(torch.from_numpy(batch)).logits, dim=1).numpy()

        images = np.random.default_rng(0).normal(size=(3, 1, 32, 32)).astype(np.float32)
        classes = np.array([0, 1, 0])
        predict = onnx_predict(runtime, batch_size=100)
        np.testing.assert_allclose(predict(images), runtime.predict(images)["probabilities"], rtol=1e-6)
        assert predict(images[:0]).shape == (0, 2)
        via_onnx = occlusion_map(predict, images, classes, grid=card.attention_size)
        via_torch = occlusion_map(torch_predict, images, classes, grid=card.attention_size)
    assert via_onnx.shape == (3, *card.attention_size)
    assert np.abs(via_torch).max() > 1e-3  # the maps are not trivially zero
    np.testing.assert_allclose(via_onnx, via_torch, atol=1e-5)  # well inside the 1e-4 that serving needs
