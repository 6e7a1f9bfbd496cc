"""Decompression bombs and odd but valid image files: what ``imaging.decode`` does with each.

Every file here is crafted byte by byte and is a real, decodable image (zeros, compressed), so
a check that let it through would really pay for the decode. Nothing holds a decoded bomb.
"""

import json
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from attnloop import imaging
from attnloop.card import ModelCard
from attnloop.imaging import DecodeGate, ImageError, Limits
from benchmarks.bombfiles import jpeg_claiming, png_claiming, zero_png, zero_tiff

SMALL = ModelCard("abn_cifar", ("a", "b"), (64, 64), 3, (0.5,) * 3, (0.25,) * 3, (8, 8))


def noise_png(size: int, seed: int) -> bytes:
    """A gray PNG of seeded noise: it does not compress, so decoding it takes a while."""
    image = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    return cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


@pytest.fixture(scope="module")
def bomb16() -> bytes:
    return zero_png(8000, 8000, depth=16, colour=2)  # 366 KiB on disk, 366 MiB decoded


def test_16_bit_8000px_png_is_refused_from_its_header_for_a_small_model(bomb16):
    assert len(bomb16) < 400_000
    for limits in (Limits.for_card(SMALL), Limits()):
        started = time.perf_counter()
        with pytest.raises(ImageError) as err:
            imaging.decode(bomb16, limits=limits, name="frames/l2/bomb.png")
        assert time.perf_counter() - started < 0.5  # decoding it takes seconds
        assert err.value.reason == "too_large"
        message = str(err.value)
        assert "frames/l2/bomb.png" in message and "8000×8000" in message and "16-bit RGB" in message
        assert str(limits.max_pixels) in message


def test_tiff_whose_second_page_is_huge_is_refused():
    data = zero_tiff([(8, 8), (20000, 20000)])
    assert len(data) < 600_000
    with pytest.raises(ImageError, match=r"page 2 of 2 claims 20000×20000 px, 8-bit gray") as err:
        imaging.decode(data, limits=Limits.for_card(SMALL), name="stack.tif")
    assert err.value.reason == "too_large"


def test_tiff_with_too_many_pages_is_refused_without_decoding_them():
    data = zero_tiff([(4, 4)] * 70)
    with pytest.raises(ImageError, match="more than 64 pages") as err:
        imaging.decode(data, limits=Limits.for_card(SMALL), name="stack.tif")
    assert err.value.reason == "too_large"


def test_decoded_bytes_count_depth_and_pages():
    # 4 pages of 2048² 16-bit pass (32 MiB); 13 pages (104 MiB) do not, although every page is small
    assert imaging.decode(zero_tiff([(2048, 2048)] * 4, bits=16), limits=Limits.for_card(SMALL)).shape == (2048, 2048, 4)
    with pytest.raises(ImageError, match=r"13 pages .* 16-bit gray .* 104\.0 MiB decoded; the limit is 96\.0 MiB") as err:
        imaging.decode(zero_tiff([(2048, 2048)] * 13, bits=16), limits=Limits.for_card(SMALL))
    assert err.value.reason == "too_large"


def test_real_camera_and_microscope_frames_still_pass_for_a_small_model():
    limits = Limits.for_card(SMALL)
    mill = imaging.decode(zero_png(2448, 2048, colour=2), limits=limits)
    assert mill.shape == (2048, 2448, 3) and mill.dtype == np.uint8
    microscope = imaging.decode(zero_png(2048, 2048, depth=16), limits=limits)
    assert microscope.shape == (2048, 2048, 1) and microscope.dtype == np.uint16
    assert imaging.preprocess(mill, SMALL).shape == (3, 64, 64)


def test_png_with_trailing_bytes_decodes_to_its_pixels():
    image = np.random.default_rng(1).integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    data = cv2.imencode(".png", image)[1].tobytes()
    decoded = imaging.decode(data + b"\0" * 64 + b"appended by the camera's uploader", name="x.png")
    np.testing.assert_array_equal(decoded, image[..., ::-1])


def test_jpeg_with_trailing_bytes_decodes_like_the_clean_file():
    image = np.random.default_rng(2).integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    clean = imaging.decode(data)
    np.testing.assert_array_equal(imaging.decode(data + b"EXIF trailer\x00\x01\xff\x00"), clean)


def test_truly_truncated_files_are_still_caught():
    image = np.random.default_rng(3).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    png = cv2.imencode(".png", image)[1].tobytes()
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    cut = {
        "png without IEND": png[:-12],
        "png cut inside its pixel data": png[: len(png) // 2],
        "png cut inside its data, ending in the bytes IEND": png[: len(png) // 2] + b"IEND\xaeB`\x82",
        "jpeg without EOI": jpeg[:-2],
        "jpeg cut inside its scan": jpeg[: len(jpeg) // 2],
    }
    for what, data in cut.items():
        with pytest.raises(ImageError) as err:
            imaging.decode(data, name="x")
        assert err.value.reason == "truncated", what


def _decode_together(images: list[bytes], gate: DecodeGate) -> list[np.ndarray]:
    start = threading.Barrier(len(images))
    results: list = [None] * len(images)

    def work(i: int) -> None:
        start.wait()
        results[i] = imaging.decode(images[i], gate=gate)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_large_decodes_wait_for_a_slot():
    images = [noise_png(3000, 0)] * 4  # 9 MB each once decoded
    one_at_a_time = DecodeGate(budget_bytes=12_000_000, large_bytes=4_000_000)
    results = _decode_together(images, one_at_a_time)
    expected = cv2.imdecode(np.frombuffer(images[0], np.uint8), cv2.IMREAD_UNCHANGED)
    for result in results:
        np.testing.assert_array_equal(result[..., 0], expected)
    assert one_at_a_time.peak == 1 and one_at_a_time.waited >= 1
    assert one_at_a_time.running == 0 and one_at_a_time.in_use == 0
    roomy = DecodeGate(budget_bytes=100_000_000, large_bytes=4_000_000)
    _decode_together(images, roomy)
    assert roomy.peak >= 2  # the counter does see decodes that overlap


def test_small_decodes_never_wait_while_large_ones_do():
    gate = DecodeGate(budget_bytes=12_000_000, large_bytes=4_000_000)
    large = noise_png(3000, 7)
    done: list = []
    with gate.hold(12_000_000):  # the whole budget is taken
        assert imaging.decode(noise_png(500, 8), gate=gate).shape == (500, 500, 1)
        waiting = threading.Thread(target=lambda: done.append(imaging.decode(large, gate=gate)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not done
    waiting.join(10)
    assert len(done) == 1 and done[0].shape == (3000, 3000, 1)


CHILD = """
import json, sys
from attnloop import imaging
from attnloop.card import ModelCard
card = ModelCard("abn_cifar", ("a", "b"), (64, 64), 3, (0.5,) * 3, (0.25,) * 3, (8, 8))
files = [open(p, "rb").read() for p in sys.argv[1:]]
peak = lambda: int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))  # ru_maxrss would keep pytest's own peak across the exec
before = peak()
reasons = []
for data in files:
    for limits in (imaging.Limits.for_card(card), imaging.Limits()):
        try:
            imaging.preprocess(imaging.decode(data, limits=limits), card)
            reasons.append(None)
        except imaging.ImageError as err:
            reasons.append(err.reason)
print(json.dumps({"before_kb": before, "peak_kb": peak(), "reasons": reasons}))
"""


def test_peak_memory_of_a_process_refusing_the_bomb_set(tmp_path, bomb16):
    bombs = {
        "png16.png": bomb16,
        "two-pages.tif": zero_tiff([(8, 8), (20000, 20000)]),
        "claim.png": png_claiming(60000, 60000),
        "claim.jpg": jpeg_claiming(65000, 65000),
        "many-pages.tif": zero_tiff([(64, 64)] * 100),
    }
    paths = []
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    out = subprocess.run([sys.executable, "-c", CHILD, *paths], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["reasons"] == ["too_large"] * 2 * len(bombs)
    grew_mb = (report["peak_kb"] - report["before_kb"]) / 1024
    assert grew_mb < 32, f"refusing the bomb set grew the process by {grew_mb:.0f} MB"
    assert report["peak_kb"] / 1024 < 300


def test_tiff_whose_pages_loop_is_refused_and_the_walk_ends():
    data = bytearray(zero_tiff([(8, 8), (8, 8)]))
    data[-4:] = data[4:8]  # the last page's successor is the first page
    started = time.perf_counter()
    with pytest.raises(ImageError, match="header cannot be read") as err:
        imaging.decode(bytes(data), name="loop.tif")
    assert err.value.reason == "corrupt" and time.perf_counter() - started < 0.5


def test_a_file_cut_inside_its_header_is_truncated_and_a_bad_header_corrupt():
    png = zero_png(8, 8)
    tiff = zero_tiff([(8, 8)])
    for cut in (png[:14], png[:30], tiff[:12]):
        with pytest.raises(ImageError) as err:
            imaging.decode(cut)
        assert err.value.reason == "truncated", (cut, str(err.value))
    bad = bytearray(png)
    bad[12:16] = b"XXXX"  # as long as a header, but no IHDR where it must be
    with pytest.raises(ImageError) as err:
        imaging.decode(bytes(bad))
    assert err.value.reason == "corrupt"
