"""pyclvp: torch-free CLVP (the Tortoise-TTS speech-token generator and ranker) and Tortoise's speech out.

Map of the package, in pipeline order (imports run downwards only):
  cli.py, png.py    the `pyclvp` command, and its pictures           demo.py  a random model + a voice clip
  rank.py           text + voice -> candidates ranked by CLVP (Tortoise's pipeline)
  speech/           speech out: hifigan.py (fast path: latents -> audio); diffusion.py + sampler.py (quality path: latents
                    -> mel), univnet.py (mel -> audio); tts.py (TextToSpeech)
  model/            the CLVP model written once against ops: conditioning, decoder, encoders, ClvpModel...
                    (model/clvp.py: forward, generate; model/weights.py: the checkpoint spec)
  decoding.py       generation options, logits processors, sampling, the KV-cached decode loop
  ops/              the backend seam: numpy (the reference), cpu (C++ core), cuda; state.py: the KV cache
  text/             normalizer.py (transformers) or cleaners.py (Tortoise) + tokenizer.py: text -> ids (ClvpTokenizer)
  audio/            resample.py, voice.py (load_audio, load_voice), stft.py, features.py (ClvpFeatureExtractor), processor.py,
                    univnet_mel.py (the diffusion decoder's 24 kHz voice mels)
  io/               safetensors.py, torch_pickle.py (.bin/.pth without torch), checkpoints.py, wav.py, half.py,
                    files.py (atomic writes, bounded reads)
  config.py         ClvpConfig and friends                           convert.py  .bin and Tortoise .pth -> safetensors
  checks.py         the shared input checks
Nothing heavy is imported here; the submodules are imported on first use.
"""
__version__ = "0.1.0"

# Public names, imported lazily (PEP 562) so that `import pyclvp` stays instant.
_PUBLIC = {
    "ClvpConfig": "config", "ClvpEncoderConfig": "config", "ClvpDecoderConfig": "config",
    "ClvpTokenizer": "text.tokenizer", "ClvpFeatureExtractor": "audio.features", "ClvpProcessor": "audio.processor",
    "load_audio": "audio.voice", "load_voice": "audio.voice", "ClvpModelForConditionalGeneration": "model", "ClvpOutput": "model",
    "rank": "rank", "Candidate": "rank", "get_ops": "ops",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'pyclvp' has no attribute {name!r}")
