"""Decompression bombs crafted byte by byte: real, decodable images of zeros, compressed, that
cost far more to decode than to store. The bomb benchmark (``bombs.py``) and the imaging fault
tests (``tests/faults/test_faults_imaging.py``) build their files with these."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zlib_repeat(block: bytes, times: int) -> bytes:
    """A zlib stream of ``block * times``, compressed once: a full flush makes each copy independent."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(times):
        adler = zlib.adler32(block, adler)
    return b"\x78\xda" + body * times + b"\x03\x00" + struct.pack(">I", adler)


def zero_png(width: int, height: int, *, depth: int = 8, colour: int = 0) -> bytes:
    """A complete PNG of zeros (colour type 0 gray, 2 RGB, 6 RGBA), without building the frame."""
    row = bytes(1 + width * {0: 1, 2: 3, 6: 4}[colour] * depth // 8)
    rows = next(n for n in (100, 16, 10, 1) if height % n == 0)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", _zlib_repeat(row * rows, height // rows)) + _chunk(b"IEND", b"")


def zero_tiff(pages: list[tuple[int, int]], *, bits: int = 8, rows_per_strip: int = 256) -> bytes:
    """A little-endian TIFF with one deflate-compressed gray page of zeros per (width, height)."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    link = 4
    blobs: dict[tuple[int, int], bytes] = {}
    for width, height in pages:
        strips = [min(rows_per_strip, height - top) for top in range(0, height, rows_per_strip)]
        offsets, counts = [], []
        for n in strips:
            blob = blobs.get((width, n)) or blobs.setdefault((width, n), zlib.compress(bytes(width * bits // 8 * n), 9))
            offsets.append(len(out))
            counts.append(len(blob))
            out += blob
        out += b"\0" * (len(out) % 2)
        offsets_at = len(out)
        out += struct.pack(f"<{len(strips)}I", *offsets)
        counts_at = len(out)
        out += struct.pack(f"<{len(strips)}I", *counts)
        single = len(strips) == 1
        entries = [
            (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, 8), (262, 3, 1, 1),
            (273, 4, len(strips), offsets[0] if single else offsets_at), (277, 3, 1, 1),
            (278, 4, 1, rows_per_strip), (279, 4, len(strips), counts[0] if single else counts_at),
        ]
        struct.pack_into("<I", out, link, len(out))
        out += struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            out += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        link = len(out)
        out += b"\0\0\0\0"
    return bytes(out)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG header (SOI, baseline SOF for 3 components) claiming a size, and nothing more."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", 2 + len(sof)) + sof + b"\xff\xd9"


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming an 8-bit RGB size, and no pixel data."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + _chunk(b"IEND", b"")
