import numpy as np
import pytest

from attnloop.proposals import attention_box


def test_two_blobs_give_the_larger_one():
    m = np.zeros((16, 16), np.float32)
    m[2:4, 2:4] = 1.0  # 4 cells, the strongest values
    m[8:13, 6:10] = 0.8  # 20 cells
    assert attention_box(m, (16, 16)) == (6.0, 8.0, 10.0, 13.0)


def test_box_is_scaled_from_map_cells_to_image_pixels():
    m = np.zeros((8, 8), np.float32)
    m[1:3, 4:7] = 1.0
    # 8×8 map over a 64 px high, 32 px wide image: 8 px per row, 4 px per column
    assert attention_box(m, (64, 32)) == (16.0, 8.0, 28.0, 24.0)
    assert attention_box(m[None], (8, 8)) == (4.0, 1.0, 7.0, 3.0)  # 1×h×w is accepted


def test_threshold_is_relative_to_the_maps_range():
    m = np.full((10, 10), 0.5, np.float32)
    m[3:7, 3:7] = 0.6  # a halo: under 0.5 + 0.5 · 0.4 = 0.7, over 0.5 + 0.1 · 0.4 = 0.54
    m[4:6, 4:6] = 0.9
    assert attention_box(m, (10, 10)) == (4.0, 4.0, 6.0, 6.0)
    assert attention_box(m, (10, 10), threshold=0.1) == (3.0, 3.0, 7.0, 7.0)


def test_diagonal_neighbours_join_one_region():
    m = np.zeros((6, 6), np.float32)
    m[1, 1] = m[2, 2] = m[3, 3] = 1.0
    m[0, 5] = 1.0
    assert attention_box(m, (6, 6)) == (1.0, 1.0, 4.0, 4.0)


def test_flat_map_proposes_nothing():
    assert attention_box(np.full((7, 7), 0.3, np.float32), (70, 70)) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"attention": np.zeros((2, 3, 3)), "image_size": (3, 3)}, "h×w"),
        ({"attention": np.eye(3), "image_size": (3, 3), "threshold": 1.0}, "threshold"),
        ({"attention": np.eye(3), "image_size": (0, 3)}, "image_size"),
        ({"attention": np.full((3, 3), np.nan), "image_size": (3, 3)}, "NaN"),
    ],
)
def test_bad_input_says_what_was_expected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention_box(**kwargs)


def test_a_region_covering_most_of_the_frame_gives_way_to_the_maps_top():
    m = np.full((10, 10), 0.6, np.float32)  # attention nearly everywhere: over 0.5 · range on every cell but the corner
    m[0, 0] = 0.0
    m[6:8, 2:5] = 1.0
    assert attention_box(m, (10, 10)) == (2.0, 6.0, 5.0, 8.0)  # the top region (threshold 0.75), not the whole frame
    assert attention_box(m, (10, 10), max_share=1.0) == (0.0, 0.0, 10.0, 10.0)


def test_attention_everywhere_proposes_nothing():
    m = np.ones((6, 6), np.float32)
    m[0, 0] = 0.0  # every cell but one at the top: even the top region is the whole frame
    assert attention_box(m, (60, 60)) is None
