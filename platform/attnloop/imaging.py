"""Decode, validate and preprocess images: the one preprocessing used by training and serving.

Everything here is numpy + OpenCV, never torch, so that the ONNX serving service can import it.
Parameters (input size, channels, mean/std) always come from a :class:`~attnloop.card.ModelCard`.

A frame is sized from its header before a single pixel is decoded: every page of a TIFF, with
its bit depth and channels, so a 400 KB file cannot make OpenCV allocate gigabytes. Large
decodes also wait for room in a process-wide :class:`DecodeGate`, so that many of them at once
cannot add up to more memory than the machine has.
"""

from __future__ import annotations

import re
import struct
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import cv2
import numpy as np

if TYPE_CHECKING:
    from attnloop.card import ModelCard

MAX_BYTES = 64 * 1024 * 1024
# The smallest pixel limit any model gets: one 16-megapixel page (4096²) holds every camera and
# microscope frame attnloop is meant for (2448×2048 mill frames, 2048² and 4096² microscope
# tiles) with room to spare, whatever the model's input size.
MIN_PIXELS = 4096 * 4096
# A model whose input is larger accepts pages up to 64× its input pixels (8× per side).
PIXELS_PER_INPUT_PIXEL = 64
# Decoded bytes allowed per allowed pixel: three 16-bit samples, so a full-size 16-bit RGB
# page passes, and so does a stack of a few 16-bit pages (twelve of 2048² at the floor).
BYTES_PER_PIXEL = 6
MAX_PAGES = 64
# Decodes and float copies above this size wait for room in the gate; smaller ones never wait.
# A 2448×2048 RGB mill frame decodes below it (15 MB); four of its float copies (60 MB) fit at once.
LARGE_BYTES = 16 * 1024 * 1024
GATE_BUDGET_BYTES = 256 * 1024 * 1024

REASONS = ("empty", "corrupt", "truncated", "unsupported_mode", "too_large")
FORMATS = "PNG, JPEG, TIFF, BMP or WebP"


class ImageError(ValueError):
    """An image that cannot be used, with a machine-readable ``reason`` (one of ``REASONS``)."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; expected one of {REASONS}")
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """What one image may cost: bytes on disk, pixels per page, pages, and decoded bytes.

    Decoded bytes are width × height × channels × bytes per sample, summed over the pages, as
    read from the headers; ``max_decoded_bytes`` defaults to ``max_pixels`` × 6 (16-bit RGB).
    :meth:`for_card` derives the limits from what a model needs.
    """

    max_bytes: int = MAX_BYTES
    max_pixels: int = MIN_PIXELS
    max_decoded_bytes: int | None = None
    max_pages: int = MAX_PAGES

    def __post_init__(self) -> None:
        if self.max_decoded_bytes is None:
            object.__setattr__(self, "max_decoded_bytes", self.max_pixels * BYTES_PER_PIXEL)
        values = {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels, "max_decoded_bytes": self.max_decoded_bytes, "max_pages": self.max_pages}
        bad = {k: v for k, v in values.items() if not v or v < 1}
        if bad:
            raise ValueError(f"image limits must be positive, got {bad}")

    @classmethod
    def for_card(cls, card: "ModelCard", *, factor: int = PIXELS_PER_INPUT_PIXEL, **overrides: int) -> "Limits":
        """Limits for frames fed to ``card``'s model: pages up to ``factor`` × its input pixels,
        never below the 4096² floor that real camera and microscope frames need, and as many
        decoded bytes as that many pixels take in 16-bit samples, one per model channel (at
        least three: a gray model may be fed RGB frames)."""
        height, width = card.input_size
        pixels = overrides.pop("max_pixels", max(MIN_PIXELS, factor * height * width))
        overrides.setdefault("max_decoded_bytes", pixels * 2 * max(3, card.channels))
        return cls(max_pixels=pixels, **overrides)


# --- headers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page as its header describes it; ``channels`` is what OpenCV decodes it to (at most)."""

    width: int
    height: int
    bits: int
    mode: str
    channels: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        return self.pixels * self.channels * _sample_bytes(self.bits)

    def describe(self) -> str:
        return f"{self.width}×{self.height} px, {self.bits}-bit {self.mode}"


@dataclass(frozen=True)
class Header:
    format: str
    pages: tuple[Page, ...]

    @property
    def decoded_bytes(self) -> int:
        return sum(p.decoded_bytes for p in self.pages)

    def describe(self) -> str:
        if len(self.pages) == 1:
            return self.pages[0].describe()
        widest = max(self.pages, key=lambda p: p.pixels)
        same = all(p.describe() == widest.describe() for p in self.pages)
        return f"{len(self.pages)} pages {'of' if same else 'up to'} {widest.describe()}"


def _sample_bytes(bits: int) -> int:
    return 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8


def _format(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def read_header(data: bytes, *, max_pages: int = MAX_PAGES) -> Header | None:
    """Every page's size, bit depth and channels from a PNG, JPEG, BMP, WebP or TIFF header,
    without decoding; None if the format is unknown or its header cannot be read.

    A TIFF's pages are walked up to ``max_pages`` + 1, so a caller can tell that there are more.
    """
    kind = _format(data)
    try:
        pages = _READERS[kind](data, max_pages) if kind else None
    except (struct.error, ValueError, IndexError, KeyError):
        return None
    return Header(kind, tuple(pages)) if pages else None


def _header_ends_early(data: bytes) -> bool:
    """Does the file end before its header does (a copy cut short), rather than hold a bad one?"""
    kind = _format(data)
    try:
        _READERS[kind](data, 1)
    except struct.error:  # a field the header needs lies past the end of the data
        return True
    except Exception:
        return False
    return kind == "png" and len(data) < _PNG_HEADER_BYTES


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first page, from the header alone; None if unknown.

    OpenCV allocates the full frame before it notices the data is missing, so a 200-byte PNG
    claiming 20000×20000 px would cost 400 MB; this check answers 413 first.
    """
    header = read_header(data, max_pages=1)
    return (header.pages[0].width, header.pages[0].height) if header else None


_PNG_MODES = {0: ("gray", 1), 2: ("RGB", 3), 3: ("palette", 4), 4: ("gray+alpha", 4), 6: ("RGBA", 4)}


_PNG_HEADER_BYTES = 33  # signature, then the IHDR chunk: length, type, 13 bytes of fields, CRC


def _png_pages(data: bytes, max_pages: int) -> list[Page] | None:
    if data[12:16] != b"IHDR":
        return None
    width, height, bits, colour = struct.unpack(">IIBB", data[16:26])
    mode, channels = _PNG_MODES[colour]
    return [Page(width, height, bits, mode, channels)]


def _jpeg_pages(data: bytes, max_pages: int) -> list[Page] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):
            i += 2
            continue
        if marker == 0xD9:
            return None
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            bits, height, width, components = struct.unpack(">BHHB", data[i + 4 : i + 10])
            mode = {1: "gray", 3: "RGB", 4: "CMYK"}.get(components, f"{components}-component")
            return [Page(width, height, bits, mode, max(components, 1))]
        i += 2 + length
    return None


def _bmp_pages(data: bytes, max_pages: int) -> list[Page] | None:
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:
        width, height, _, bpp = struct.unpack("<HHHH", data[18:26])
    else:
        width, height, _, bpp = struct.unpack("<iiHH", data[18:30])
    mode = "BGRA" if bpp == 32 else "palette" if bpp <= 8 else "BGR"
    return [Page(abs(width), abs(height), 8, mode, 4 if bpp == 32 else 3)]


def _webp_pages(data: bytes, max_pages: int) -> list[Page] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        alpha = bool(data[20] & 0x10)
        width, height = 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    elif chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        width, height, alpha = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool(bits >> 28 & 1)
    elif chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        width, height, alpha = width & 0x3FFF, height & 0x3FFF, False
    else:
        return None
    return [Page(width, height, 8, "RGBA" if alpha else "RGB", 4 if alpha else 3)]


_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
_TIFF_TAGS = (256, 257, 258, 262, 277)  # width, height, bits per sample, photometric, samples per pixel


def _tiff_pages(data: bytes, max_pages: int) -> list[Page] | None:
    """Walk the chain of IFDs (classic and BigTIFF), one page each, at most ``max_pages`` + 1."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    word = "Q" if big else "I"
    count_format, entry_size, field_size = ("Q", 20, 8) if big else ("H", 12, 4)
    entry = np.dtype([("tag", order + "u2"), ("kind", order + "u2"), ("count", order + ("u8" if big else "u4")), ("field", f"V{field_size}")])
    offset = struct.unpack(order + word, data[8:16] if big else data[4:8])[0]
    pages: list[Page] = []
    seen: set[int] = set()
    while offset and len(pages) <= max_pages:
        if offset in seen:
            raise ValueError(f"the IFD at {offset} is its own successor")
        seen.add(offset)
        count_size = struct.calcsize(count_format)
        count = struct.unpack(order + count_format, data[offset : offset + count_size])[0]
        start = offset + count_size
        table = np.frombuffer(data, dtype=entry, count=count, offset=start)
        tags = {
            int(row["tag"]): _tiff_values(data, order, int(row["kind"]), int(row["count"]), row["field"].tobytes(), word)
            for row in table[np.isin(table["tag"], _TIFF_TAGS)]
        }
        pages.append(_tiff_page(tags))
        end = start + count * entry_size
        offset = struct.unpack(order + word, data[end : end + field_size])[0]
    return pages


def _tiff_values(data: bytes, order: str, kind: int, count: int, field: bytes, word: str) -> list[int]:
    code = _TIFF_TYPES.get(kind)
    if code is None or count < 1:
        raise ValueError(f"TIFF field of type {kind} × {count}")
    size = struct.calcsize(code)
    n = min(count, 8)  # the first few values say all a header check needs
    if size * count <= len(field):
        raw = field[: size * n]
    else:
        at = struct.unpack(order + word, field)[0]
        raw = data[at : at + size * n]
    return list(struct.unpack(order + code * n, raw))


def _tiff_page(tags: dict[int, list[int]]) -> Page:
    width, height = tags[256][0], tags[257][0]
    bits = max(tags.get(258, [1]))
    photometric = tags.get(262, [1])[0]
    samples = tags.get(277, [1])[0]
    if photometric == 3:  # palette: OpenCV expands it to 8-bit BGR
        return Page(width, height, 8, "palette", 3)
    names = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"} if photometric in (0, 1, 2) else {}
    mode = {5: "CMYK", 6: "YCbCr"}.get(photometric) or names.get(samples, f"{samples}-sample")
    return Page(width, height, bits, mode, 4 if samples == 2 else max(samples, 1))


_READERS = {"png": _png_pages, "jpeg": _jpeg_pages, "bmp": _bmp_pages, "webp": _webp_pages, "tiff": _tiff_pages}


# --- complete files -----------------------------------------------------------------------------

_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")  # not stuffing, a fill byte or a restart


def _png_end(data: bytes) -> int | None:
    """Where the IEND chunk ends, walking the chunks; None if the data ends first."""
    i = 8
    while i + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, i)
        i += 12 + length
        if kind == b"IEND":
            return i if i <= len(data) else None
    return None


def _jpeg_end(data: bytes) -> int | None:
    """Where the EOI marker ends, walking segments and scans; None if the data ends first."""
    i = 2
    while i + 2 <= len(data):
        if data[i] != 0xFF:  # stray bytes between segments: skipped, as libjpeg does
            i = data.find(b"\xff", i)
            if i < 0:
                return None
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
        elif marker == 0xD9:
            return i + 2
        elif marker in (0x01, *range(0xD0, 0xD9)):
            i += 2
        elif i + 4 > len(data):
            return None
        else:
            i += 2 + struct.unpack_from(">H", data, i + 2)[0]
            if marker == 0xDA:  # entropy-coded data runs up to the next marker
                found = _JPEG_MARKER.search(data, i)
                if found is None:
                    return None
                i = found.start()
    return None


_ENDS = {"png": (_png_end, "IEND chunk"), "jpeg": (_jpeg_end, "EOI marker")}


# --- how many large decodes at once -------------------------------------------------------------


class DecodeGate:
    """Bounds the memory that large decodes take at once, process-wide.

    Work of more than ``large_bytes`` waits, first come first served, until its bytes and those
    of the large work already running fit in ``budget_bytes`` (one piece bigger than the whole
    budget runs alone). Smaller work never waits. ``running``, ``peak`` (most large pieces at
    once) and ``waited`` (how many had to wait) say what happened.
    """

    def __init__(self, *, budget_bytes: int = GATE_BUDGET_BYTES, large_bytes: int = LARGE_BYTES) -> None:
        if budget_bytes < 1 or large_bytes < 0:
            raise ValueError(f"budget_bytes must be positive and large_bytes not negative, got {budget_bytes}, {large_bytes}")
        self.budget_bytes, self.large_bytes = budget_bytes, large_bytes
        self.in_use = self.running = self.peak = self.waited = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Hold room for ``nbytes`` of work while the block runs (at once if it is small)."""
        if nbytes <= self.large_bytes:
            yield
            return
        weight, ticket = min(nbytes, self.budget_bytes), object()
        with self._cond:
            self._queue.append(ticket)
            if self._blocked(ticket, weight):
                self.waited += 1
                while self._blocked(ticket, weight):
                    self._cond.wait()
            self._queue.popleft()
            self.in_use += weight
            self.running += 1
            self.peak = max(self.peak, self.running)
            self._cond.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= weight
                self.running -= 1
                self._cond.notify_all()

    def _blocked(self, ticket: object, weight: int) -> bool:
        return self._queue[0] is not ticket or (self.running > 0 and self.in_use + weight > self.budget_bytes)


GATE = DecodeGate()


# --- the service --------------------------------------------------------------------------------


def _check_header(header: Header, limits: Limits, name: str) -> None:
    """Refuse a frame whose header alone shows that decoding it would cost too much."""
    pages = header.pages
    if len(pages) > limits.max_pages:
        raise ImageError("too_large", f"{name} has more than {limits.max_pages} pages; the limit is {limits.max_pages} pages")
    for number, page in enumerate(pages, 1):
        if page.pixels > limits.max_pixels:
            where = f" page {number} of {len(pages)}" if len(pages) > 1 else ""
            raise ImageError(
                "too_large",
                f"{name}{where} claims {page.describe()} ({page.decoded_bytes / 2**20:.1f} MiB decoded); "
                f"the limit is {limits.max_pixels} pixels per page",
            )
    if header.decoded_bytes > limits.max_decoded_bytes:
        raise ImageError(
            "too_large",
            f"{name} claims {header.describe()} = {header.decoded_bytes / 2**20:.1f} MiB decoded; "
            f"the limit is {limits.max_decoded_bytes / 2**20:.1f} MiB decoded ({limits.max_pixels} pixels per page)",
        )


def _decode_pixels(buf: np.ndarray, header: Header) -> tuple[np.ndarray | None, bool]:
    """OpenCV's decode, and whether the pages of a TIFF became one channel each."""
    if header.format == "tiff" and len(header.pages) > 1:
        ok, decoded = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED)
        if ok and decoded:
            pages = list(decoded)
            del decoded
            if all(p.shape == pages[0].shape and p.ndim == 2 for p in pages):
                return _stack(pages), True
            return pages[0], False
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), False


def _stack(pages: list[np.ndarray]) -> np.ndarray:
    """Pages → one H×W×pages array, letting go of each page once copied (peak: stack + one page)."""
    out = np.empty((*pages[0].shape, len(pages)), pages[0].dtype)
    for i in range(len(pages)):
        out[..., i] = pages[i]
        pages[i] = None  # type: ignore[call-overload]
    return out


def decode(data: bytes, *, limits: Limits = Limits(), name: str = "image", gate: DecodeGate | None = None) -> np.ndarray:
    """Decode image bytes to an H×W×C array (uint8 or uint16), RGB channel order for colour.

    The headers are checked against ``limits`` before anything is decoded; a large decode then
    waits for room in ``gate`` (the process-wide :data:`GATE` by default). Bytes after a PNG's
    IEND or a JPEG's EOI are ignored. Multi-page TIFFs are read as one channel per page
    (microscopy stacks). Raises :class:`ImageError` saying what was wrong, so callers can
    quarantine the file.
    """
    if not data:
        raise ImageError("empty", f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError("too_large", f"{name} is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    kind = _format(data)
    if kind is None:
        raise ImageError("corrupt", f"{name} could not be decoded as {FORMATS}: it starts with none of their signatures")
    header = read_header(data, max_pages=limits.max_pages)
    if header is None:
        if _header_ends_early(data):
            raise ImageError("truncated", f"{name} ends inside its {kind.upper()} header ({len(data)} bytes); the file is truncated")
        raise ImageError("corrupt", f"{name} could not be decoded: it starts like a {kind.upper()} file, but its header cannot be read")
    _check_header(header, limits, name)
    if kind in _ENDS and _ENDS[kind][0](data) is None:
        raise ImageError("truncated", f"{name} ends before its {_ENDS[kind][1]}; the file is truncated")
    with (gate or GATE).hold(header.decoded_bytes):
        image, stacked = _decode_pixels(np.frombuffer(data, dtype=np.uint8), header)
        if image is None:
            raise ImageError("corrupt", f"{name} could not be decoded as {FORMATS}")
        if image.ndim == 2:
            image = image[:, :, None]
        height, width, channels = image.shape
        if height * width > limits.max_pixels or image.nbytes > limits.max_decoded_bytes:
            raise ImageError("too_large", f"{name} is {width}×{height} px, {image.nbytes} bytes decoded; the limit is {limits.max_pixels} pixels and {limits.max_decoded_bytes} bytes")
        if image.dtype not in (np.uint8, np.uint16):
            raise ImageError("unsupported_mode", f"{name} has {image.dtype} pixels; expected 8- or 16-bit")
        if channels == 4 and image.dtype == np.uint16 and not stacked:
            raise ImageError("unsupported_mode", f"{name} is 16-bit RGBA; expected 8-bit gray/RGB(A), or 16-bit gray, RGB or multi-page TIFF")
        if channels in (3, 4) and not stacked:
            image = np.ascontiguousarray(image)
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA, dst=image)  # in place
    return np.ascontiguousarray(image)


def to_float(image: np.ndarray) -> np.ndarray:
    """Scale uint8/uint16 pixels to float32 in [0, 1]; float input is taken as already scaled."""
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype)
    out = image.astype(np.float32)
    if scale is not None:
        out /= scale  # in place: one float copy of a large frame, not two
    return out


def match_channels(image: np.ndarray, channels: int, *, name: str = "image") -> np.ndarray:
    """Bring an H×W×C float image to the model's channel count, or say why it cannot be done."""
    have = image.shape[2]
    if have == channels:
        return image
    if have == 1:
        return np.repeat(image, channels, axis=2)
    if have in (3, 4) and channels == 1:
        return (image[:, :, :3] @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
    if have == 4 and channels == 3:
        return image[:, :, :3]
    raise ImageError(
        "unsupported_mode",
        f"{name} has {have} channels; the model expects {channels} (or gray to replicate)",
    )


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize H×W×C float to (height, width): area averaging when shrinking, bilinear when growing."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] > height or image.shape[1] > width
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out if out.ndim == 3 else out[:, :, None]


def preprocess(image: np.ndarray, card: "ModelCard", *, name: str = "image", gate: DecodeGate | None = None) -> np.ndarray:
    """Decoded H×W×C image → normalized C×H×W float32 model input, as the card prescribes.

    A large frame's float copy waits for room in ``gate`` (the process-wide :data:`GATE`), as
    its decode did: it is the largest array the frame ever becomes.
    """
    height, width, channels = image.shape
    with (gate or GATE).hold(height * width * max(channels, card.channels) * 4):
        x = match_channels(to_float(image), card.channels, name=name)
        x = resize(x, card.input_size)
    mean = np.asarray(card.mean, np.float32)
    std = np.asarray(card.std, np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def preprocess_bytes(data: bytes, card: "ModelCard", *, limits: Limits | None = None, name: str = "image") -> np.ndarray:
    """Bytes → model input, under ``limits`` (by default :meth:`Limits.for_card` of ``card``)."""
    return preprocess(decode(data, limits=limits or Limits.for_card(card), name=name), card, name=name)


def preprocess_batch(images: Sequence[np.ndarray], card: "ModelCard") -> np.ndarray:
    return np.stack([preprocess(im, card) for im in images]) if images else np.zeros(
        (0, card.channels, *card.input_size), np.float32
    )


def scale_boxes(boxes: Sequence[Sequence[float]], from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Scale pixel boxes [x0, y0, x1, y1] (x1/y1 exclusive) from one image size to another."""
    arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    return arr * np.array([sx, sy, sx, sy], np.float32)


def encode_png(image: np.ndarray) -> bytes:
    """Encode an H×W×C (RGB) or H×W uint8/uint16 array as PNG bytes."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} {image.dtype} array as PNG")
    return buf.tobytes()


def overlay(image: np.ndarray, attention: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """An 8-bit RGB picture of ``image`` with the attention map (any size) as a heat map on top.

    Gray and multi-channel images show their first channel, contrast-stretched (16-bit
    microscopy rarely spans its full range).
    """
    picture = to_float(image)
    picture = picture[..., None] if picture.ndim == 2 else picture
    if picture.shape[2] != 3:
        first = picture[..., 0]
        low, high = float(first.min()), float(first.max())
        picture = np.repeat(((first - low) / (high - low if high > low else 1.0))[..., None], 3, axis=2)
    attention = np.asarray(attention, np.float32)
    span = float(attention.max() - attention.min())
    scaled = (attention - attention.min()) / span if span > 0 else np.zeros_like(attention)
    heat = cv2.resize(scaled, (picture.shape[1], picture.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1] / 255.0
    return (((1 - alpha) * picture + alpha * colored).clip(0, 1) * 255).round().astype(np.uint8)
