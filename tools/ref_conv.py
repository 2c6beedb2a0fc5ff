"""Convolution fixtures: torch.nn.functional's conv1d, conv_transpose1d, leaky_relu and linear
interpolate on a few small seeded cases (odd sizes, every argument exercised).

  tests/data/conv/<op>.npz   for case i: c{i}_x, c{i}_w, c{i}_b (when used), c{i}_y (torch's output),
                             c{i}_args (the integer / float arguments, see ARGS), and `version`

The tests (tests/test_ops.py::test_conv_fixtures) read these with no torch installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION

# the argument order of c{i}_args per op
ARGS = {
    "conv1d": ("stride", "padding", "dilation"),
    "conv_transpose1d": ("stride", "padding", "output_padding", "dilation"),
    "leaky_relu": ("slope",),
    "interpolate_linear": ("scale_factor",),
}

# (B, Cin, Cout, T, K, bias, args)
CONV1D_CASES = [
    (1, 1, 1, 5, 1, False, (1, 0, 1)),
    (2, 3, 5, 17, 3, True, (1, 1, 1)),
    (1, 4, 7, 40, 7, True, (1, 9, 3)),      # HiFi-GAN's resblock shape: padding = dilation * (K - 1) / 2
    (2, 5, 3, 33, 4, True, (3, 2, 2)),      # strided, dilated
    (1, 9, 10, 29, 11, False, (2, 0, 1)),
    (1, 6, 2, 8, 5, True, (4, 6, 1)),       # padding wider than the input
]
# (B, Cin, Cout, T, K, bias, args)
CONV_T_CASES = [
    (1, 1, 1, 4, 1, False, (1, 0, 0, 1)),
    (2, 3, 5, 9, 16, True, (8, 4, 0, 1)),   # HiFi-GAN's upsampling: K = 2 stride, padding = (K - stride) / 2
    (1, 6, 4, 11, 4, True, (2, 1, 1, 1)),
    (1, 4, 3, 7, 3, True, (3, 0, 2, 2)),    # K not a multiple of the stride: a phase with fewer taps
    (2, 5, 6, 6, 5, False, (2, 3, 1, 3)),   # dilated, padding crops more than one tap
    (1, 3, 2, 5, 2, True, (4, 0, 3, 1)),    # a phase with no taps (bias only)
]
SLOPES = (0.1, 0.01, 0.2)
# (shape, scale_factor)
INTERP_CASES = [((1, 2, 5), 4.0), ((2, 3, 7), 24000 / 22050), ((1, 1, 13), 4 * 24000 / 22050), ((1, 2, 9), 0.5),
                ((1, 1, 3), 2.5), ((1, 2, 94), 24000 / 22050)]


def make(data_dir: Path) -> None:
    import torch
    import torch.nn.functional as F

    out = data_dir / "conv"
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    files = {name: {"version": np.array(FIXTURE_VERSION)} for name in ARGS}
    for i, (B, Cin, Cout, T, K, bias, args) in enumerate(CONV1D_CASES):
        x, w = randn(B, Cin, T), randn(Cout, Cin, K)
        b = randn(Cout) if bias else None
        s, p, d = args
        y = F.conv1d(x, w, b, stride=s, padding=p, dilation=d)
        files["conv1d"].update({f"c{i}_x": x.numpy(), f"c{i}_w": w.numpy(), f"c{i}_y": y.numpy(),
                                f"c{i}_args": np.array(args, np.int64), **({f"c{i}_b": b.numpy()} if bias else {})})
    for i, (B, Cin, Cout, T, K, bias, args) in enumerate(CONV_T_CASES):
        x, w = randn(B, Cin, T), randn(Cin, Cout, K)
        b = randn(Cout) if bias else None
        s, p, op, d = args
        y = F.conv_transpose1d(x, w, b, stride=s, padding=p, output_padding=op, dilation=d)
        files["conv_transpose1d"].update({f"c{i}_x": x.numpy(), f"c{i}_w": w.numpy(), f"c{i}_y": y.numpy(),
                                          f"c{i}_args": np.array(args, np.int64),
                                          **({f"c{i}_b": b.numpy()} if bias else {})})
    for i, slope in enumerate(SLOPES):
        x = randn(3, 5, 7) * 3
        x[0, 0, :4] = torch.tensor([0.0, -0.0, float("inf"), float("-inf")])
        files["leaky_relu"].update({f"c{i}_x": x.numpy(), f"c{i}_y": F.leaky_relu(x, slope).numpy(),
                                    f"c{i}_args": np.array([slope])})
    for i, (shape, s) in enumerate(INTERP_CASES):
        x = randn(*shape)
        y = F.interpolate(x, scale_factor=s, mode="linear")
        files["interpolate_linear"].update({f"c{i}_x": x.numpy(), f"c{i}_y": y.numpy(), f"c{i}_args": np.array([s])})
    for name, arrays in files.items():
        np.savez(out / f"{name}.npz", **arrays)
