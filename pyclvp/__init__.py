"""pyclvp: torch-free CLVP (the Tortoise-TTS speech-token generator and ranker).

Map of the package:
  safetensors.py  pure-Python safetensors reader/writer       config.py    ClvpConfig and friends
  torch_pickle.py safe torch.save (.bin/.pth) reader, no torch  convert.py   .bin and Tortoise .pth -> safetensors
  tokenizer.py    byte-level BPE ClvpTokenizer (text.py: the English normalizer)
  audio.py        WAV reader + resampler                      features.py  torch.stft-exact STFT, mel, ClvpFeatureExtractor
  processor.py    ClvpProcessor: ClvpTokenizer + ClvpFeatureExtractor behind one call
  ops/            the backend seam: numpy (reference), cpu (C++ core), cuda
  model/          the CLVP model written once against ops     generate.py  decoding, sampling and ranking
  cli.py          the `pyclvp` command
Nothing heavy is imported here; the submodules are imported on first use.
"""
__version__ = "0.1.0"

# Public names, imported lazily (PEP 562) so that `import pyclvp` stays instant.
_PUBLIC = {
    "ClvpConfig": "config", "ClvpEncoderConfig": "config", "ClvpDecoderConfig": "config",
    "ClvpTokenizer": "tokenizer", "ClvpFeatureExtractor": "features", "ClvpProcessor": "processor",
    "load_audio": "audio", "ClvpModelForConditionalGeneration": "model", "ClvpOutput": "model",
    "get_ops": "ops",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'pyclvp' has no attribute {name!r}")
