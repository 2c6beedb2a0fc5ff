"""Audio to features. Read in this order:

  resample.py   band-limited polyphase resampling (Kaiser-windowed sinc)
  voice.py      load_audio: a WAV file as mono float32 at the model's rate; load_voice: as Tortoise reads a voice
  stft.py       torch.stft-exact STFT and iSTFT
  features.py   mel filters and ClvpFeatureExtractor (log-mel features, Tortoise's mel norms)
  processor.py  ClvpProcessor: ClvpTokenizer + ClvpFeatureExtractor behind one call
  univnet_mel.py  Tortoise's 24 kHz, 100-band univnet mel and the diffusion decoder's voice mels (the quality path)
"""
from .features import ClvpFeatureExtractor
from .processor import ClvpProcessor
from .voice import load_audio, load_voice

__all__ = ["ClvpFeatureExtractor", "ClvpProcessor", "load_audio", "load_voice"]
