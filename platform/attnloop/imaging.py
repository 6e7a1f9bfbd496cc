"""Decode, validate and preprocess images: the one preprocessing used by training and serving.

Everything here is numpy + OpenCV, never torch, so that the ONNX serving service can import it.
Parameters (input size, channels, mean/std) always come from a :class:`~attnloop.card.ModelCard`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

if TYPE_CHECKING:
    from attnloop.card import ModelCard

MAX_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 64 * 1024 * 1024

REASONS = ("empty", "corrupt", "truncated", "unsupported_mode", "too_large")


class ImageError(ValueError):
    """An image that cannot be used, with a machine-readable ``reason`` (one of ``REASONS``)."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; expected one of {REASONS}")
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS


def _looks_truncated(data: bytes) -> bool:
    """PNG must end with an IEND chunk and JPEG with an EOI marker; OpenCV happily decodes half a file."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" not in data[-16:]
    if data.startswith(b"\xff\xd8"):
        return not data.rstrip(b"\x00").endswith(b"\xff\xd9")
    return False


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP, WebP or TIFF header, without decoding; None if unknown.

    OpenCV allocates the full frame before it notices the data is missing, so a 200-byte PNG
    claiming 20000×20000 px would cost 400 MB; this check answers 413 first.
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if data.startswith(b"BM") and len(data) >= 26:
            header = struct.unpack("<I", data[14:18])[0]
            if header == 12:
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xDA)):
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[offset : offset + 2])[0]
    found: dict[int, int] = {}
    for n in range(count):
        entry = data[offset + 2 + 12 * n : offset + 14 + 12 * n]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
    return (found[256], found[257]) if len(found) == 2 else None


# --- the service --------------------------------------------------------------------------------


def decode(data: bytes, *, limits: Limits = Limits(), name: str = "image") -> np.ndarray:
    """Decode image bytes to an H×W×C array (uint8 or uint16), RGB channel order for colour.

    Multi-page TIFFs are read as one channel per page (microscopy stacks). Raises
    :class:`ImageError` saying what was wrong, so callers can quarantine the file.
    """
    if not data:
        raise ImageError("empty", f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError("too_large", f"{name} is {len(data)} bytes; the limit is {limits.max_bytes}")
    claimed = header_size(data)
    if claimed is not None and claimed[0] * claimed[1] > limits.max_pixels:
        raise ImageError("too_large", f"{name} claims {claimed[0]}×{claimed[1]} px; the limit is {limits.max_pixels} pixels")
    if _looks_truncated(data):
        raise ImageError("truncated", f"{name} ends before its end marker; the file is truncated")
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    stacked = False
    if image is not None and data[:4] in (b"II*\x00", b"MM\x00*"):
        ok, pages = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED)
        if ok and len(pages) > 1 and all(p.shape == pages[0].shape and p.ndim == 2 for p in pages):
            image, stacked = np.stack(pages, axis=-1), True
    if image is None:
        raise ImageError("corrupt", f"{name} could not be decoded as PNG, JPEG, TIFF, BMP or WebP")
    if image.ndim == 2:
        image = image[:, :, None]
    height, width, channels = image.shape
    if height * width > limits.max_pixels:
        raise ImageError("too_large", f"{name} is {width}×{height} px; the limit is {limits.max_pixels} pixels")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError("unsupported_mode", f"{name} has {image.dtype} pixels; expected 8- or 16-bit")
    if channels == 4 and image.dtype == np.uint16 and not stacked:
        raise ImageError("unsupported_mode", f"{name} is 16-bit RGBA; expected 8-bit gray/RGB(A), or 16-bit gray, RGB or multi-page TIFF")
    if channels in (3, 4) and not stacked:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA)
    return np.ascontiguousarray(image)


def to_float(image: np.ndarray) -> np.ndarray:
    """Scale uint8/uint16 pixels to float32 in [0, 1]; float input is taken as already scaled."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    return image.astype(np.float32)


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


def preprocess(image: np.ndarray, card: "ModelCard", *, name: str = "image") -> np.ndarray:
    """Decoded H×W×C image → normalized C×H×W float32 model input, as the card prescribes."""
    x = match_channels(to_float(image), card.channels, name=name)
    x = resize(x, card.input_size)
    mean = np.asarray(card.mean, np.float32)
    std = np.asarray(card.std, np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def preprocess_bytes(data: bytes, card: "ModelCard", *, limits: Limits = Limits(), name: str = "image") -> np.ndarray:
    return preprocess(decode(data, limits=limits, name=name), card, name=name)


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
