"""Pictures without matplotlib: figures with axes, tick labels, a colour bar and a title, drawn into a NumPy
(H, W, 3) uint8 image with a hand-written 5x7 bitmap font, and written as a PNG with zlib and struct.

    mel_figure(log_mel, seconds_per_frame, title)   `pyclvp mel --png`: the spectrogram, time in seconds
                                                    across, mel bands up, a colour bar with its values
    scores_figure(tokens, scores)                   `pyclvp rank --plot`: score against length, best marked
    write_png(path, rgb)                            atomically (pyclvp/io/files.py)

Shapes: M mel bins, H, W picture height and width in pixels. Pixel rows run top to bottom.
"""
from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from .io.files import write_atomic

__all__ = ["spectrogram_rgb", "mel_figure", "scores_figure", "write_png", "draw_text"]

# viridis (matplotlib's CC0 colour map) sampled at 0, 1/8, ..., 1: dark blue for quiet, yellow for loud
_VIRIDIS = [(68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140),
            (40, 174, 128), (94, 201, 98), (173, 220, 48), (253, 231, 37)]
WHITE, BLACK, BLUE, RED = (255, 255, 255), (0, 0, 0), (31, 119, 180), (214, 39, 40)

# ----------------------------------------------------------------------------------------------
# The font: 5x7 glyphs, one string per glyph: 7 rows of 5 columns, '#' ink; lower case is drawn as upper case,
# anything else as "?"
_GLYPHS = {
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.", "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####", "3": "####.|....#|....#|.###.|....#|....#|####.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.", "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.", "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.", "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#", "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.", "D": "####.|#...#|#...#|#...#|#...#|#...#|####.",
    "E": "#####|#....|#....|####.|#....|#....|#####", "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####", "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.", "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#", "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#", "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.", "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#", "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.", "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.", "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.", "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..", "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    ".": ".....|.....|.....|.....|.....|.##..|.##..", "-": ".....|.....|.....|#####|.....|.....|.....",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.", ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    ":": ".....|.##..|.##..|.....|.##..|.##..|.....", "/": ".....|....#|...#.|..#..|.#...|#....|.....",
    "_": ".....|.....|.....|.....|.....|.....|#####", ",": ".....|.....|.....|.....|.##..|..#..|.#...",
    "+": ".....|..#..|..#..|#####|..#..|..#..|.....", "=": ".....|.....|#####|.....|#####|.....|.....",
    "?": ".###.|#...#|....#|...#.|..#..|.....|..#..", " ": ".....|.....|.....|.....|.....|.....|.....",
}
GLYPH_H, GLYPH_W, ADVANCE = 7, 5, 6  # pixels at scale 1; ADVANCE: glyph plus one column of space


def _glyph(ch: str) -> np.ndarray:  # -> (GLYPH_H, GLYPH_W) bool
    rows = _GLYPHS.get(ch.upper(), _GLYPHS["?"]).split("|")
    return np.array([[c == "#" for c in row] for row in rows])


def text_mask(text: str, scale: int = 1) -> np.ndarray:  # -> (GLYPH_H * scale, (ADVANCE * len - 1) * scale) bool
    mask = np.zeros((GLYPH_H, max(ADVANCE * len(text) - 1, 1)), bool)
    for i, ch in enumerate(text):
        mask[:, i * ADVANCE:i * ADVANCE + GLYPH_W] = _glyph(ch)
    return np.kron(mask, np.ones((scale, scale), bool)).astype(bool)


def _paste(img, mask, y, x, color) -> None:
    """Ink `mask`'s true pixels at (y, x) (its top left), clipped to the image."""
    h, w = mask.shape
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, img.shape[0]), min(x + w, img.shape[1])
    if y1 > y0 and x1 > x0:
        img[y0:y1, x0:x1][mask[y0 - y:y1 - y, x0 - x:x1 - x]] = color


def draw_text(img, y, x, text, color=BLACK, scale=1, align="left", valign="top", rotate=False) -> None:
    """Text at (y, x): align left / center / right of x, valign top / center of y; rotate: reads bottom to top."""
    mask = text_mask(text, scale)
    if rotate:
        mask = np.rot90(mask)
    h, w = mask.shape
    x = x - {"left": 0, "center": w // 2, "right": w}[align]
    y = y - {"top": 0, "center": h // 2}[valign]
    _paste(img, mask, y, x, color)


# ----------------------------------------------------------------------------------------------
# Axes


def nice_ticks(lo: float, hi: float, count: int = 5) -> list:
    """Round values (1, 2 or 5 times a power of ten apart) between lo and hi, about `count` of them."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float, ticks) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    text = f"{value:.{decimals}f}"
    return "0" if text.strip("-0.") == "" else text


def _axes(img, box, xlim, ylim, xlabel, ylabel, title) -> None:
    """A frame around box = (top, left, bottom, right) (pixels; the data fills rows top..bottom-1, columns
    left..right-1), ticks and their values on the left and bottom, axis labels and a title."""
    top, left, bottom, right = box
    img[top - 1:bottom + 1, left - 1] = BLACK     # y axis, one pixel left of the data
    img[top - 1:bottom + 1, right] = BLACK
    img[bottom, left - 1:right + 1] = BLACK       # x axis, one pixel below the data
    img[top - 1, left - 1:right + 1] = BLACK
    xticks, yticks = nice_ticks(*xlim, count=6), nice_ticks(*ylim, count=5)
    for v in xticks:
        x = left + int(round((v - xlim[0]) / (xlim[1] - xlim[0]) * (right - left - 1)))
        img[bottom + 1:bottom + 4, x] = BLACK
        draw_text(img, bottom + 6, x, _label(v, xticks), align="center")
    for v in yticks:
        y = bottom - 1 - int(round((v - ylim[0]) / (ylim[1] - ylim[0]) * (bottom - top - 1)))
        img[y, left - 4:left - 1] = BLACK
        draw_text(img, y, left - 6, _label(v, yticks), align="right", valign="center")
    draw_text(img, bottom + 18, (left + right) // 2, xlabel, align="center")
    draw_text(img, (top + bottom) // 2, 4, ylabel, valign="center", rotate=True)
    draw_text(img, 6, (left + right) // 2, title, align="center")


# ----------------------------------------------------------------------------------------------
# Figures


def _viridis(level):  # (...) in [0, 1] -> (..., 3) uint8
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    rgb = np.stack([np.interp(level, anchors, channel) for channel in zip(*_VIRIDIS)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def spectrogram_rgb(log_mel, min_height: int = 240):  # (M, frames) -> (H, frames, 3) uint8
    """Colour each log-mel value by its place between the minimum and the maximum; low bins at the bottom."""
    lo, hi = float(log_mel.min()), float(log_mel.max())
    level = (log_mel[::-1] - lo) / (hi - lo if hi > lo else 1.0)                    # (M, frames) in [0, 1]
    rows = max(1, min_height // log_mel.shape[0])
    return np.repeat(_viridis(level), rows, axis=0)                                 # (M * rows, frames, 3)


# mel_figure's layout, in pixels (tests/test_features.py reads the axes and the colour bar from these)
MEL_TOP, MEL_LEFT, MEL_BOTTOM = 24, 48, 36   # margins around the spectrogram: title; y ticks + label; x ticks + label
BAR_GAP, BAR_WIDTH, BAR_RIGHT = 12, 14, 56   # the colour bar, right of the spectrogram, and room for its values


def mel_figure(log_mel, seconds_per_frame: float, title: str = "log-mel spectrogram"):  # (M, frames) -> (H, W, 3)
    """The spectrogram with a time axis in seconds, a mel-band axis, a colour bar of the log-mel values, a title.
    The spectrogram's pixels start at (MEL_TOP, MEL_LEFT); the bar starts BAR_GAP pixels right of its end."""
    M, frames = log_mel.shape
    spec = spectrogram_rgb(log_mel)                                                  # (Hs, frames, 3)
    cols = max(1, -(-300 // frames))                                                 # at least ~300 px wide
    spec = np.repeat(spec, cols, axis=1)                                             # (Hs, Ws, 3)
    hs, ws = spec.shape[:2]
    img = np.full((MEL_TOP + hs + MEL_BOTTOM, MEL_LEFT + ws + BAR_GAP + BAR_WIDTH + BAR_RIGHT, 3), 255, np.uint8)
    box = (MEL_TOP, MEL_LEFT, MEL_TOP + hs, MEL_LEFT + ws)
    img[box[0]:box[2], box[1]:box[3]] = spec
    _axes(img, box, (0.0, frames * seconds_per_frame), (0.0, float(M)), "time (s)", "mel band", title)
    # the colour bar: the top row is the maximum, the bottom row the minimum, with tick values on its right
    lo, hi = float(log_mel.min()), float(log_mel.max())
    x0 = box[3] + BAR_GAP
    img[box[0]:box[2], x0:x0 + BAR_WIDTH] = _viridis(np.linspace(1.0, 0.0, hs))[:, None, :]
    img[box[0] - 1, x0 - 1:x0 + BAR_WIDTH + 1] = BLACK
    img[box[2], x0 - 1:x0 + BAR_WIDTH + 1] = BLACK
    img[box[0] - 1:box[2] + 1, x0 - 1] = BLACK
    img[box[0] - 1:box[2] + 1, x0 + BAR_WIDTH] = BLACK
    ticks = nice_ticks(lo, hi, count=5)
    for v in ticks:
        y = box[2] - 1 - int(round((v - lo) / (hi - lo if hi > lo else 1.0) * (hs - 1)))
        img[y, x0 + BAR_WIDTH + 1:x0 + BAR_WIDTH + 4] = BLACK
        draw_text(img, y, x0 + BAR_WIDTH + 6, _label(v, ticks), valign="center")
    draw_text(img, box[2] + 18, x0 + BAR_WIDTH // 2, "log", align="center")
    return img


# scores_figure's layout, in pixels
SCORES_SIZE = (320, 480)                     # (H, W)
SCORES_BOX = (28, 60, 276, 464)              # (top, left, bottom, right) of the data area


def _span(values, pad: float):
    lo, hi = float(min(values)), float(max(values))
    margin = (hi - lo) * pad if hi > lo else max(abs(hi) * 0.1, 1.0)
    return lo - margin, hi + margin


def scores_figure(tokens, scores):  # (N,), (N,) -> (H, W, 3) uint8
    """Each candidate's CLVP score (up) against its length in speech tokens (across): a blue dot each, the best
    a red ring labelled "best"."""
    img = np.full((*SCORES_SIZE, 3), 255, np.uint8)
    top, left, bottom, right = SCORES_BOX
    xlim = (0.0, max(float(max(tokens)), 1.0) * 1.08)
    ylim = _span(scores, 0.1)
    _axes(img, SCORES_BOX, xlim, ylim, "speech tokens (about 20 a second)", "score",
          f"clvp score against length, {len(scores)} candidates")

    def at(t, s):
        x = left + int(round((t - xlim[0]) / (xlim[1] - xlim[0]) * (right - left - 1)))
        y = bottom - 1 - int(round((s - ylim[0]) / (ylim[1] - ylim[0]) * (bottom - top - 1)))
        return y, x

    best = int(np.argmax(scores))
    for i, (t, s) in enumerate(zip(tokens, scores)):
        y, x = at(t, s)
        img[y - 2:y + 3, x - 2:x + 3] = RED if i == best else BLUE
    y, x = at(tokens[best], scores[best])
    ring = np.zeros((11, 11), bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    _paste(img, ring, y - 5, x - 5, RED)
    draw_text(img, y, x + 9 if x < right - 40 else x - 9, "best", color=RED, valign="center",
              align="left" if x < right - 40 else "right")
    return img


def write_png(path, rgb) -> None:
    """An 8-bit RGB PNG from (H, W, 3) uint8, with zlib and struct only (ref: the PNG spec, ISO/IEC 15948),
    written atomically."""
    height, width, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, colour type 2 (RGB), no interlace
    scanlines = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, np.uint8))  # filter 0 (None)
    write_atomic(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9))
                 + chunk(b"IEND", b""))
