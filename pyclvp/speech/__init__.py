"""Speech out: speech tokens -> a waveform. Read in this order:

  hifigan.py  the HiFi-GAN decoder: speech latents + the voice's conditioning -> 24 kHz audio (Tortoise's fast path)
  univnet.py  the UnivNet vocoder: a (denormalized) mel -> 24 kHz audio (Tortoise's quality path, after diffusion)
  tts.py      TextToSpeech: text + voice -> candidates -> latents (pyclvp/model/decoder.py speech_latents) -> waveform
"""
