"""Write a full-size CLVP checkpoint with seeded random weights, for the benchmarks.

    python bench/make_checkpoint.py [--dtype float32|bfloat16|float16] [--seed 0] [--out DIR]

The architecture is transformers' `ClvpConfig()` defaults (decoder 30 x 1024, 16 heads, n_inner 4096,
vocab 8194; text and speech encoders 20 x 768), except the speech encoder's vocab_size, set to 8194
so that every id the decoder generates embeds. Every tensor of pyclvp/model/weights.py's spec is
drawn as transformers initializes it (ClvpPreTrainedModel._init_weights, initializer_range 0.02):
matrices, embeddings and the mel conv ~ N(0, 0.02^2), norm weights 1, biases 0, logit_scale 2.6592,
the rotary inv_freq buffers computed. Half dtypes store the matrices (ndim >= 2) in that dtype
(bfloat16 rounded to nearest even) and keep vectors float32, as a converted real checkpoint would.

Written with pyclvp's own safetensors writer into bench/checkpoints/clvp-default-<dtype>/ (gitignored):
config.json + model.safetensors, about 2.7 GB in float32 and 1.4 GB in half precision.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyclvp.config import ClvpConfig  # noqa: E402
from pyclvp.model.weights import checkpoint_spec  # noqa: E402
from pyclvp.io.safetensors import save_file  # noqa: E402

STORED = {"float32": None, "bfloat16": "BF16", "float16": "F16"}


def bench_config() -> ClvpConfig:
    """transformers' ClvpConfig() defaults, the speech encoder's vocabulary widened to the decoder's 8194 ids."""
    return ClvpConfig(speech_config=dict(vocab_size=8194))


def init_tensor(name: str, shape: tuple, rng: np.random.Generator, cfg: ClvpConfig) -> np.ndarray:
    # ref: transformers ClvpPreTrainedModel._init_weights (normal(0, initializer_range) for Linear,
    # Conv1D, Embedding and Conv1d weights; LayerNorm/RMSNorm/GroupNorm weight 1, biases 0)
    if name == "logit_scale":
        return np.array(cfg.logit_scale_init_value, np.float32)
    if name.endswith("rotary_pos_emb.inv_freq"):
        R = 2 * shape[0]
        return (1.0 / 10000 ** (np.arange(0, R, 2, dtype=np.float64) / R)).astype(np.float32)
    if len(shape) == 1:
        is_norm = name.endswith(".weight") and "norm" in name
        return np.ones(shape, np.float32) if is_norm else np.zeros(shape, np.float32)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(cfg.decoder_config.initializer_range)


def make(out: Path, dtype: str, seed: int) -> Path:
    cfg = bench_config()
    rng = np.random.default_rng(seed)
    spec = checkpoint_spec(cfg)
    tensors = {name: init_tensor(name, spec[name], rng, cfg) for name in sorted(spec)}
    dtypes = None
    if dtype == "float16":
        tensors.update({n: t.astype(np.float16) for n, t in tensors.items() if t.ndim >= 2})
    elif dtype == "bfloat16":
        dtypes = {n: "BF16" for n, t in tensors.items() if t.ndim >= 2}  # the writer rounds float32 to nearest even
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(out)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"}, dtypes=dtypes)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=list(STORED), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/checkpoints/clvp-default-<dtype>")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "bench" / "checkpoints" / f"clvp-default-{args.dtype}"
    t0 = time.perf_counter()
    make(out, args.dtype, args.seed)
    size = (out / "model.safetensors").stat().st_size
    print(f"wrote {out} ({size / 1e9:.2f} GB, {args.dtype}) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
