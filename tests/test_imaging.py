import struct
import threading

import cv2
import numpy as np
import pytest

from attnloop import imaging
from attnloop.card import ModelCard
from attnloop.imaging import ImageError, Limits


def card(channels=3, size=(16, 16)):
    return ModelCard("abn_cifar", ("a", "b"), size, channels, (0.5,) * channels, (0.25,) * channels, (8, 8))


def png(array):
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def test_decode_gray_rgb_and_16bit():
    gray = np.full((5, 7), 9, np.uint8)
    assert imaging.decode(png(gray)).shape == (5, 7, 1)
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    rgb = imaging.decode(png(bgr))
    assert rgb[0, 0].tolist() == [200, 0, 0]
    deep = np.full((3, 3), 40000, np.uint16)
    decoded = imaging.decode(png(deep))
    assert decoded.dtype == np.uint16 and decoded[0, 0, 0] == 40000


def test_multipage_tiff_becomes_channels():
    pages = [np.full((6, 6), v, np.uint16) for v in (100, 2000, 30000)]
    ok, buf = cv2.imencodemulti(".tiff", pages)
    assert ok
    image = imaging.decode(buf.tobytes())
    assert image.shape == (6, 6, 3)
    assert image[0, 0].tolist() == [100, 2000, 30000]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"definitely not an image", "corrupt"),
        (png(np.zeros((8, 8), np.uint8))[:-20], "truncated"),
    ],
)
def test_bad_bytes_say_why(data, reason):
    with pytest.raises(ImageError) as err:
        imaging.decode(data, name="frames/l2/x.png")
    assert err.value.reason == reason
    assert "frames/l2/x.png" in str(err.value)


def test_limits():
    data = png(np.zeros((20, 20), np.uint8))
    with pytest.raises(ImageError, match="bytes") as err:
        imaging.decode(data, limits=Limits(max_bytes=10))
    assert err.value.reason == "too_large"
    with pytest.raises(ImageError, match="pixels"):
        imaging.decode(data, limits=Limits(max_pixels=100))


def test_preprocess_normalizes_resizes_and_matches_channels():
    image = np.full((32, 24, 1), 255, np.uint8)
    x = imaging.preprocess(image, card(channels=3))
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x, (1.0 - 0.5) / 0.25)
    rgba = np.zeros((8, 8, 4), np.uint8)
    assert imaging.preprocess(rgba, card(channels=3)).shape == (3, 16, 16)
    assert imaging.preprocess(np.zeros((8, 8, 3), np.uint16), card(channels=1)).shape == (1, 16, 16)


def test_channel_mismatch_is_an_image_error():
    with pytest.raises(ImageError, match="5 channels; the model expects 3") as err:
        imaging.preprocess(np.zeros((8, 8, 5), np.uint8), card(channels=3))
    assert err.value.reason == "unsupported_mode"


def test_scale_boxes():
    boxes = imaging.scale_boxes([[10, 20, 30, 40]], (100, 200), (50, 50))
    np.testing.assert_allclose(boxes, [[2.5, 10, 7.5, 20]])


def test_huge_header_and_16_bit_rgba_are_refused_before_use():
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    huge = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")
    assert imaging.header_size(huge) == (20000, 20000)
    with pytest.raises(imaging.ImageError, match="claims 20000×20000 px") as err:
        imaging.decode(huge)
    assert err.value.reason == "too_large"
    rgba16 = imaging.encode_png(np.zeros((4, 4, 4), np.uint16))
    with pytest.raises(imaging.ImageError, match="16-bit RGBA") as err:
        imaging.decode(rgba16)
    assert err.value.reason == "unsupported_mode"
    jpeg = cv2.imencode(".jpg", np.zeros((12, 20, 3), np.uint8))[1].tobytes()
    assert imaging.header_size(jpeg) == (20, 12)


def test_read_header_reports_every_page_with_depth_and_channels():
    gray16 = imaging.read_header(imaging.encode_png(np.zeros((5, 7), np.uint16)))
    assert gray16.format == "png" and gray16.pages == (imaging.Page(7, 5, 16, "gray", 1),)
    assert gray16.decoded_bytes == 7 * 5 * 2
    ok, buf = cv2.imencodemulti(".tiff", [np.zeros((6, 6), np.uint16), np.zeros((9, 4), np.uint16), np.zeros((6, 6), np.uint16)])
    stack = imaging.read_header(buf.tobytes())
    assert [(p.width, p.height, p.bits, p.channels) for p in stack.pages] == [(6, 6, 16, 1), (4, 9, 16, 1), (6, 6, 16, 1)]
    assert imaging.read_header(buf.tobytes(), max_pages=1).pages == stack.pages[:2]  # one more than the limit
    jpeg = imaging.read_header(cv2.imencode(".jpg", np.zeros((12, 20, 3), np.uint8))[1].tobytes())
    assert jpeg.pages == (imaging.Page(20, 12, 8, "RGB", 3),)
    rgba = imaging.read_header(cv2.imencode(".webp", np.zeros((3, 5, 4), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes())
    assert rgba.pages[0].channels == 4
    bigtiff = b"II+\x00\x08\x00\x00\x00" + struct.pack("<QQ", 16, 2)
    bigtiff += struct.pack("<HHQQ", 256, 4, 1, 7) + struct.pack("<HHQQ", 257, 4, 1, 5) + struct.pack("<Q", 0)
    assert imaging.read_header(bigtiff).pages == (imaging.Page(7, 5, 1, "gray", 1),)
    assert imaging.read_header(b"GIF89a....") is None


def test_limits_follow_the_model_input_above_a_floor():
    floor = Limits.for_card(card(size=(64, 64)))
    assert floor == Limits() and floor.max_pixels == imaging.MIN_PIXELS == 4096 * 4096
    assert floor.max_decoded_bytes == 4096 * 4096 * 6
    wide = Limits.for_card(card(size=(1024, 1024)))
    assert wide.max_pixels == 64 * 1024 * 1024 and wide.max_decoded_bytes == 6 * wide.max_pixels
    assert Limits.for_card(card(), max_pages=4).max_pages == 4
    stacks = Limits.for_card(card(channels=8))  # eight 16-bit pages of 4096² per frame
    assert stacks.max_pixels == floor.max_pixels and stacks.max_decoded_bytes == 4096 * 4096 * 2 * 8
    with pytest.raises(ValueError, match="must be positive"):
        Limits(max_pixels=0)


def test_gate_runs_an_oversized_piece_alone():
    gate = imaging.DecodeGate(budget_bytes=100, large_bytes=10)
    with gate.hold(1000):  # bigger than the whole budget: runs, since nothing else does
        assert gate.running == 1 and gate.in_use == 100
        def small_but_large() -> None:
            with gate.hold(20):
                pass

        other = threading.Thread(target=small_but_large)
        other.start()
        other.join(0.2)
        assert other.is_alive()  # waits until the oversized piece is done
    other.join(5)
    assert not other.is_alive() and gate.peak == 1 and gate.waited == 1 and gate.running == 0
