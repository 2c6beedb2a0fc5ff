"""univnet fixtures: Tortoise 3.0.0's UnivNet vocoder (tortoise/models/vocoder.py, the quality path's mel -> waveform).

  tests/data/univnet/univnet_small/   vocoder.pth ({"model_g": state_dict with weight_g/weight_v}, as the released
                                      vocoder.pth), config.json (the constructor's arguments), expected.npz
                                      (UnivNetGenerator.inference on two cases, the noise it drew, and stages)
  bench/checkpoints/univnet_full/     (opt-in, gitignored: `python tools/ref_univnet.py --full`) the same at
                                      Tortoise's full size (UnivNetGenerator(), 14.8M parameters, ~60 MB), and
                                      the same draw through a float64 copy (wav_float64)

Runs Tortoise's own code, under the reference environment (torch 2.13 CPU; vocoder.py imports only torch).
What this tool changes around it, and nothing else:
  - UnivNetGenerator does not pass kpnet_hidden_channels to its LVCBlocks (LVCBlock's default, 64, is used); the
    small case lowers that default to 8 while the generator is built (LVCBlock.__init__.__defaults__), since the
    kernel predictors' 64-channel residual convolutions alone would be ~0.9 MB. Everything else is a constructor
    argument: noise_dim, channel_size, dilations, strides, lReLU_slope, kpnet_conv_size, hop_length, n_mel_channels;
  - torch.randn is wrapped while `inference` runs, to record the noise z it draws (seeded, so replayable).
Weights: every parameter redrawn from a seeded generator; weight_g in [0.5, 1.5) (times 0.1 for the kernel
predictors' input convolutions, whose input is a log-mel around -5, so that the predicted kernels stay O(1) and the
gates do not all saturate); weight_v and biases N(0, 0.1^2) (a weight_v's scale cancels in g v / |v|).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import shutil
import sys
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, write_json

TORTOISE_SDIST = Path("/work/tortoise_sdist/tortoise-tts-3.0.0")
ROOT = Path(__file__).resolve().parent.parent

# UnivNetGenerator's arguments, shrunk; strides include an odd one (convt_pre's output_padding = stride % 2).
UNIVNET_SMALL = dict(noise_dim=8, channel_size=4, dilations=[1, 3, 9, 27], strides=[2, 3, 2], lReLU_slope=0.2,
                     kpnet_conv_size=3, hop_length=12, n_mel_channels=16)
KPNET_HIDDEN_SMALL = 8
UNIVNET_FULL = dict(noise_dim=64, channel_size=32, dilations=[1, 3, 9, 27], strides=[8, 8, 4], lReLU_slope=0.2,
                    kpnet_conv_size=3, hop_length=256, n_mel_channels=100)  # UnivNetGenerator()'s defaults, as api.py
TACOTRON_MEL_MAX, TACOTRON_MEL_MIN = 2.3143386840820312, -11.512925148010254  # tortoise/utils/audio.py


def _import_vocoder():
    if str(TORTOISE_SDIST) not in sys.path:
        sys.path.insert(0, str(TORTOISE_SDIST))
    from tortoise.models import vocoder

    return vocoder


@contextlib.contextmanager
def _kpnet_hidden(vocoder, channels: int):
    """LVCBlock's kpnet_hidden_channels default set to `channels` (the generator never passes it)."""
    init = vocoder.LVCBlock.__init__
    saved = init.__defaults__
    names = init.__code__.co_varnames[init.__code__.co_argcount - len(saved):init.__code__.co_argcount]
    init.__defaults__ = tuple(channels if n == "kpnet_hidden_channels" else d for n, d in zip(names, saved))
    try:
        yield
    finally:
        init.__defaults__ = saved


@contextlib.contextmanager
def _recording_randn(log: list):
    import torch

    randn = torch.randn

    def wrapper(*args, **kwargs):
        out = randn(*args, **kwargs)
        log.append(out.clone())
        return out

    torch.randn = wrapper
    try:
        yield
    finally:
        torch.randn = randn


def _generator(vocoder, constructor: dict, kpnet_hidden: int | None, seed: int):
    import torch

    with contextlib.ExitStack() as stack:
        if kpnet_hidden is not None:
            stack.enter_context(_kpnet_hidden(vocoder, kpnet_hidden))
        gen = vocoder.UnivNetGenerator(**constructor)
    gen.eval()  # not eval(inference=True): the weight norm stays, as in the released file
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in gen.named_parameters():
            if key.endswith("weight_g"):
                scale = 0.1 if "input_conv" in key else 1.0
                p.copy_(scale * (0.5 + torch.rand(p.shape, generator=g)))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return gen


def _np(t):
    return t.detach().cpu().numpy()


def _stages(gen, mel, z) -> dict:
    """forward's first block step by step, on inference's padded mel and its noise."""
    import torch

    out = {}
    c = torch.cat((mel, torch.full((mel.shape[0], gen.mel_channel, 10), -11.5129)), dim=2)  # (B, M, T + 10)
    x = gen.conv_pre(z)  # (B, C, T + 10)
    out["conv_pre"] = x
    block = gen.res_stack[0]
    kernels, bias = block.kernel_predictor(c)  # (B, layers, C, 2C, K, T + 10), (B, layers, 2C, T + 10)
    out["block0.kernels"], out["block0.bias"] = kernels, bias
    x = block(x, c)  # (B, C, (T + 10) * strides[0])
    out["block0.out"] = x
    # One location-variable convolution by Tortoise's own function: block 1, layer 1 (hop = strides[0] * strides[1])
    block = gen.res_stack[1]
    kernels, bias = block.kernel_predictor(c)
    y = block.convt_pre(x)
    y = y + torch.randn(y.shape, generator=torch.Generator().manual_seed(5))  # any input will do
    lvc_x = block.conv_blocks[1](y)  # (B, C, (T + 10) * hop)
    out["lvc.x"], out["lvc.kernel"], out["lvc.bias"] = lvc_x, kernels[:, 1], bias[:, 1]
    out["lvc.hop"] = torch.tensor(block.cond_hop_length)
    out["lvc.out"] = block.location_variable_convolution(lvc_x, kernels[:, 1], bias[:, 1],
                                                         hop_size=block.cond_hop_length)  # (B, 2C, (T + 10) * hop)
    return {k: _np(v) for k, v in out.items()}


def _write_case(folder: Path, gen, constructor: dict, kpnet_hidden: int, cases: dict, seed: int,
                stages: bool = True, float64: bool = False) -> None:
    import torch

    from ref_speech import _savez

    folder.mkdir(parents=True)
    torch.save({"model_g": gen.state_dict()}, folder / "vocoder.pth")  # as the released vocoder.pth
    write_json(folder / "config.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__,
                                            constructor=constructor, kpnet_hidden_channels=kpnet_hidden))
    g = torch.Generator().manual_seed(seed)
    arrays = {}
    for case, (b, t) in cases.items():
        norm_mel = torch.rand(b, constructor["n_mel_channels"], t, generator=g) * 2 - 1  # (B, M, T) in [-1, 1)
        mel = ((norm_mel + 1) / 2) * (TACOTRON_MEL_MAX - TACOTRON_MEL_MIN) + TACOTRON_MEL_MIN  # api: denormalize
        torch.manual_seed(seed + 1)
        drawn = []
        with torch.no_grad(), _recording_randn(drawn):
            wav = gen.inference(mel)  # (B, 1, T * hop_length)
        assert len(drawn) == 1
        arrays.update({f"{case}.norm_mel": _np(norm_mel), f"{case}.mel": _np(mel), f"{case}.noise": _np(drawn[0]),
                       f"{case}.wav": _np(wav)})
        if float64:  # the same draw through a float64 copy: how far float32 itself is from the exact answer
            with torch.no_grad():
                exact = copy.deepcopy(gen).double().inference(mel.double(), drawn[0].double())
            arrays[f"{case}.wav_float64"] = _np(exact)
        if stages and case == "b2":
            with torch.no_grad():
                arrays.update({f"{case}.{k}": v for k, v in _stages(gen, mel, drawn[0]).items()})
        print(f"  {case}: mel {tuple(mel.shape)} -> wav {tuple(wav.shape)}, |wav| max {wav.abs().max():.3f} "
              f"std {wav.std():.3f}")
    _savez(folder / "expected.npz", **arrays)


def make(data_dir: Path) -> None:
    import torch

    torch.use_deterministic_algorithms(True)
    vocoder = _import_vocoder()
    out = data_dir / "univnet"
    shutil.rmtree(out, ignore_errors=True)
    gen = _generator(vocoder, UNIVNET_SMALL, KPNET_HIDDEN_SMALL, seed=30)
    _write_case(out / "univnet_small", gen, UNIVNET_SMALL, KPNET_HIDDEN_SMALL, {"b1": (1, 5), "b2": (2, 7)}, seed=31)


def make_full(folder: Path) -> None:
    """Tortoise's full-size UnivNetGenerator() with seeded weights: an opt-in case, never committed."""
    import torch

    torch.use_deterministic_algorithms(True)
    vocoder = _import_vocoder()
    shutil.rmtree(folder, ignore_errors=True)
    gen = _generator(vocoder, UNIVNET_FULL, None, seed=40)
    _write_case(folder, gen, UNIVNET_FULL, 64, {"b1": (1, 24)}, seed=41, stages=False, float64=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", nargs="?", const=str(ROOT / "bench" / "checkpoints" / "univnet_full"),
                        metavar="DIR", help="write the full-size case (default: bench/checkpoints/univnet_full)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.full:
        make_full(Path(args.full))
    else:
        make(ROOT / "tests" / "data")
