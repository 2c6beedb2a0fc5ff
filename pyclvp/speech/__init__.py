"""Speech out: speech tokens -> a waveform. Read in this order:

  hifigan.py  the HiFi-GAN decoder: speech latents + the voice's conditioning -> 24 kHz audio (Tortoise's fast path)
  univnet.py  the UnivNet vocoder: a (denormalized) mel -> 24 kHz audio (Tortoise's quality path, after diffusion)
  diffusion.py  DiffusionTts: the quality path's denoiser (voice mels -> conditioning; latents -> aligned
              embeddings; one denoising pass per sampler step)
  sampler.py  the respaced linear schedule and ancestral sampling with conditioning-free guidance: noise -> a mel
  tts.py      TextToSpeech: text + voice -> candidates -> latents (pyclvp/model/decoder.py speech_latents) -> waveform
"""
