"""Pictures without matplotlib: a spectrogram coloured with viridis, written as a PNG with zlib and struct.

Shapes: M mel bins, H, W picture height and width in pixels.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["spectrogram_rgb", "write_png"]

# viridis (matplotlib's CC0 colour map) sampled at 0, 1/8, ..., 1: dark blue for quiet, yellow for loud
_VIRIDIS = [(68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140),
            (40, 174, 128), (94, 201, 98), (173, 220, 48), (253, 231, 37)]


def spectrogram_rgb(log_mel, min_height: int = 240):  # (M, frames) -> (H, frames, 3) uint8
    """Colour each log-mel value by its place between the minimum and the maximum; low bins at the bottom."""
    lo, hi = float(log_mel.min()), float(log_mel.max())
    level = (log_mel[::-1] - lo) / (hi - lo if hi > lo else 1.0)                    # (M, frames) in [0, 1]
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    rgb = np.stack([np.interp(level, anchors, channel) for channel in zip(*_VIRIDIS)], axis=-1)  # (M, frames, 3)
    rows = max(1, min_height // log_mel.shape[0])
    return np.repeat(np.round(rgb).astype(np.uint8), rows, axis=0)                  # (M * rows, frames, 3)


def write_png(path, rgb) -> None:
    """An 8-bit RGB PNG from (H, W, 3) uint8, with zlib and struct only (ref: the PNG spec, ISO/IEC 15948)."""
    height, width, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, colour type 2 (RGB), no interlace
    scanlines = b"".join(b"\x00" + row.tobytes() for row in rgb)    # filter type 0 (None) before each row
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9))
                + chunk(b"IEND", b""))
