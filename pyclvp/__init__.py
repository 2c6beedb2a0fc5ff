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
