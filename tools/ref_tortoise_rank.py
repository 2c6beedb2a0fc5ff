"""tortoise_rank fixtures: what Tortoise 3.0.0's tts() (tortoise/api.py) does around sampling and ranking.

  tests/data/tortoise_rank/expected.npz
      text_tokens (1, T+1)          tts()'s text ids (with its F.pad(.., (0, 1)) zero)
      cond_mels (1, clips, 80, F)   format_conditioning's mels (given: torchaudio's mel is not installed here)
      raw_logits (steps, R, V)      the decoder's logits at the first `steps` sampling steps (kv_cache=False)
      probs (steps, R, V)           softmax of tts()'s processed scores there: repetition penalty 2.0 over
                                    input_ids (the fake prompt of 1s included), then transformers 4.31's warpers
                                    temperature 0.8, top-k 50 (its default: tts() never passes top_k), top-p 0.8
      codes (R, N)                  the sampled codes (inference_speech's output, before tts()'s padding)
      clvp_scores (R,)              clvp(text_tokens, fix_autoregressive_output(F.pad(codes, max_mel_tokens,
                                    stop))): tts()'s scores
      max_mel_tokens ()             tts()'s max_mel_tokens (= max_generate_length = the padding length)
    The decoder's mel_head bias of code 1 is raised so that code 1 has the largest raw logit at the first step
    (the token-1 probe): the fake prompt's penalty is what keeps it from winning there; the stop code's by
    STOP_BIAS, so that candidates stop at different lengths and tts()'s padding matters.
      mel_head_bias (V,)            the decoder's mel_head bias after both changes (for pyclvp's copy)
  tests/data/tortoise_rank/voice_stereo_44k.wav, voice_mono_48k.wav: two voice clips (a 1 s stereo clip at 44.1 kHz
      whose channels differ, a 0.5 s mono clip at 48 kHz), and in expected.npz:
      <name>.loaded                 Tortoise's load_audio (channel 0, torchaudio.functional.resample to 22.05 kHz,
                                    clip to [-1, 1])
      voices.auto_conds, voices.auto_conditioning   get_conditioning_latents' autoregressive half on both clips:
                                    format_conditioning (zero-padded to 132300 samples, TorchMelSpectrogram) and
                                    UnifiedVoice.get_conditioning (the tiny model, without the probe's bias changes)

Models: the tiny UnifiedVoice + CLVP of tests/data/torch_pickle/tortoise (tools/ref_torch_pickle.py), run by the
sdist's own classes under transformers 4.31 (the version tortoise-tts 3.0.0 pins; tools/ref_speech.py's venv).
torchaudio is not installable for torch 2.13 (the registry stops at 2.11.1): torchaudio.functional.resample
is reproduced below from torchaudio 2.11.1's source (functional.py: _get_sinc_resample_kernel,
_apply_sinc_resample_kernel), line for line, and installed as the stub's torchaudio.functional.resample; so is
torchaudio.transforms.MelSpectrogram for TorchMelSpectrogram's arguments (class MelSpectrogram below).
"""
from __future__ import annotations

import math
import sys
import types
import wave
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, write_json
from ref_speech import _import_api_fast, _np, _savez
from ref_torch_pickle import TINY_AR

STEPS = 4              # sampling steps whose distributions are kept
R = 6                  # candidates
MAX_MEL_TOKENS = 20    # tts()'s max_mel_tokens here
TEXT = [14, 3, 27, 41, 9, 33, 2, 58, 17]
STOP_BIAS = 2.5        # added to the stop code's mel_head bias: candidates stop at different lengths, before 20


# ----------------------------------------------------------------------------------------------
# torchaudio.functional.resample (2.11.1), copied


def _get_sinc_resample_kernel(orig_freq, new_freq, gcd, lowpass_filter_width=6, rolloff=0.99, dtype=None):
    import torch

    orig_freq, new_freq = int(orig_freq) // gcd, int(new_freq) // gcd
    base_freq = min(orig_freq, new_freq) * rolloff
    width = math.ceil(lowpass_filter_width * orig_freq / base_freq)
    idx_dtype = dtype if dtype is not None else torch.float64
    idx = torch.arange(-width, width + orig_freq, dtype=idx_dtype)[None, None] / orig_freq
    t = torch.arange(0, -new_freq, -1, dtype=dtype)[:, None, None] / new_freq + idx
    t *= base_freq
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2  # sinc_interp_hann
    t *= math.pi
    scale = base_freq / orig_freq
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * scale
    if dtype is None:
        kernels = kernels.to(dtype=torch.float32)
    return kernels, width


def torchaudio_resample(waveform, orig_freq, new_freq):
    import torch

    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    kernel, width = _get_sinc_resample_kernel(orig_freq, new_freq, gcd, dtype=waveform.dtype)
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    shape = waveform.size()
    waveform = waveform.view(-1, shape[-1])
    num_wavs, length = waveform.shape
    waveform = torch.nn.functional.pad(waveform, (width, width + orig))
    resampled = torch.nn.functional.conv1d(waveform[:, None], kernel, stride=orig)
    resampled = resampled.transpose(1, 2).reshape(num_wavs, -1)
    target_length = torch.ceil(torch.as_tensor(new * length / orig)).long()
    return resampled[..., :target_length].view(shape[:-1] + resampled[..., :target_length].shape[-1:])


class MelSpectrogram:
    """torchaudio.transforms.MelSpectrogram (2.11.1) for the arguments TorchMelSpectrogram passes: Spectrogram
    (torch.stft, Hann window, center=True, reflect padding, onesided, |.|^2) then MelScale (melscale_fbanks with
    norm="slaney", mel_scale="htk"), copied from torchaudio's _transforms.py / functional.py."""

    def __init__(self, n_fft, hop_length, win_length, power, normalized, sample_rate, f_min, f_max, n_mels, norm):
        import torch

        assert power == 2 and not normalized and norm == "slaney"
        self.n_fft, self.hop, self.win = n_fft, hop_length, win_length
        self.window = torch.hann_window(win_length)

        def hz_to_mel(f):
            return 2595.0 * math.log10(1.0 + (f / 700.0))

        def mel_to_hz(m):
            return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

        n_freqs = n_fft // 2 + 1
        all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
        m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
        f_pts = mel_to_hz(m_pts)
        f_diff = f_pts[1:] - f_pts[:-1]
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
        down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
        up_slopes = slopes[:, 2:] / f_diff[1:]
        fb = torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))
        fb *= (2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
        self.fb = fb  # (n_freqs, n_mels)

    def to(self, device):
        return self

    def __call__(self, waveform):  # (B, T) -> (B, n_mels, frames)
        import torch

        spec = torch.stft(waveform, self.n_fft, hop_length=self.hop, win_length=self.win, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True,
                          return_complex=True).abs().pow(2.0)
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


# ----------------------------------------------------------------------------------------------
# Sampling and ranking


def _models():
    import torch

    from tortoise.models.autoregressive import UnifiedVoice
    from tortoise.models.clvp import CLVP
    from ref_torch_pickle import TINY_CLVP

    folder = Path(__file__).resolve().parent.parent / "tests" / "data" / "torch_pickle" / "tortoise"
    ar = UnifiedVoice(**TINY_AR).eval()
    sd = torch.load(folder / "autoregressive.pth")
    ar.load_state_dict({k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))},
                       strict=False)
    clvp = CLVP(**TINY_CLVP).eval()
    clvp.load_state_dict(torch.load(folder / "clvp2.pth"))
    ar.post_init_gpt2_config(kv_cache=False)  # TextToSpeech()'s default
    return ar, clvp


def _sample(api, ar, clvp):
    import torch

    g = torch.Generator().manual_seed(40)
    cond_mels = torch.randn(1, 2, 80, 24, generator=g)
    text_tokens = torch.nn.functional.pad(torch.tensor([TEXT]), (0, 1))  # tts(): F.pad(text_tokens, (0, 1))
    with torch.no_grad():
        auto_conditioning = ar.get_conditioning(cond_mels)
        # the token-1 probe: raise code 1's bias until its raw first-step logit is 1.5x the best other's
        logits = []
        hook = ar.inference_model.register_forward_hook(lambda m, a, out: logits.append(out.logits[:, -1].clone()))
        ar.inference_speech(auto_conditioning, text_tokens, do_sample=False, max_generate_length=1)
        first = logits[0][0]
        best_other = torch.cat([first[:1], first[2:]]).max()
        assert best_other > 0
        ar.mel_head.bias[1] += 1.5 * best_other - first[1]
        ar.mel_head.bias[ar.stop_mel_token] += STOP_BIAS  # candidates that stop at different lengths
        logits.clear()

        probs, multinomial = [], torch.multinomial

        def record(p, num_samples, *args, **kwargs):
            probs.append(p.clone())
            return multinomial(p, num_samples, *args, **kwargs)

        torch.multinomial = record
        torch.manual_seed(41)
        try:  # tts()'s call (api.py lines 405-413), its defaults for a preset-less call
            codes = ar.inference_speech(auto_conditioning, text_tokens, do_sample=True, top_p=0.8, temperature=0.8,
                                        num_return_sequences=R, length_penalty=1.0, repetition_penalty=2.0,
                                        max_generate_length=MAX_MEL_TOKENS)
        finally:
            torch.multinomial = multinomial
            hook.remove()
        assert (logits[0][:, 1] >= logits[0].max(-1).values).all(), "code 1 must win the first step before penalties"
        padded = torch.nn.functional.pad(codes, (0, MAX_MEL_TOKENS - codes.shape[1]), value=ar.stop_mel_token)
        for i in range(padded.shape[0]):
            padded[i] = api.fix_autoregressive_output(padded[i], ar.stop_mel_token, complain=False)
        scores = clvp(text_tokens.repeat(padded.shape[0], 1), padded, return_loss=False)  # (R,)
    bias = ar.mel_head.bias.detach().clone()
    return dict(text_tokens=_np(text_tokens), cond_mels=_np(cond_mels), auto_conditioning=_np(auto_conditioning),
                raw_logits=_np(torch.stack(logits[:STEPS])), probs=_np(torch.stack(probs[:STEPS])),
                codes=_np(codes), clvp_input=_np(padded), clvp_scores=_np(scores),
                max_mel_tokens=np.array(MAX_MEL_TOKENS), mel_head_bias=_np(bias))


# ----------------------------------------------------------------------------------------------
# Voices


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:  # samples (T, channels) in [-1, 1]
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _voices(out: Path) -> dict:
    import torch

    from tortoise.api import format_conditioning  # noqa: F401  (the real function, with its mel stubbed out)
    from tortoise.utils.audio import load_audio

    rng = np.random.default_rng(42)
    arrays, clips = {}, []
    for name, rate, channels, seconds in [("voice_stereo_44k", 44100, 2, 1.0), ("voice_mono_48k", 48000, 1, 0.5)]:
        t = np.arange(int(rate * seconds)) / rate
        left = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)  # a tone and noise
        right = 0.3 * np.sin(2 * np.pi * 9000 * t) + 0.05 * rng.standard_normal(t.shape)  # another in channel 1
        samples = np.stack([left, right][:channels], axis=1)  # (T, channels)
        _write_wav(out / f"{name}.wav", samples, rate)
        audio = load_audio(str(out / f"{name}.wav"), 22050)  # (1, T')
        # format_conditioning's waveform step: F.pad to 132300 (these clips are shorter than 6 s)
        cond = torch.nn.functional.pad(audio, (0, 132300 - audio.shape[-1]))
        arrays[f"{name}.loaded"] = _np(audio[0])
        arrays[f"{name}.conditioning_window_nonzero"] = np.array(int((_np(cond[0]) != 0).sum()))
        clips.append(audio)
    # get_conditioning_latents' autoregressive half (api.py lines 263-269) on the two clips
    from tortoise.api import format_conditioning

    ar, _ = _models()
    with torch.no_grad():
        auto_conds = torch.stack([format_conditioning(c, device="cpu") for c in clips], dim=1)  # (1, 2, 80, F)
        arrays["voices.auto_conds"] = _np(auto_conds)
        arrays["voices.auto_conditioning"] = _np(ar.get_conditioning(auto_conds))  # (1, C)
    return arrays


def make(data_dir: Path) -> None:
    import torch

    torch.use_deterministic_algorithms(True)
    api_fast = _import_api_fast()  # tortoise imported under transformers 4.31 with its stubs
    torchaudio = sys.modules["torchaudio"]
    functional = types.ModuleType("torchaudio.functional")
    functional.resample = torchaudio_resample
    torchaudio.functional = functional
    sys.modules["torchaudio.functional"] = functional
    transforms = types.ModuleType("torchaudio.transforms")
    transforms.MelSpectrogram = MelSpectrogram
    torchaudio.transforms = transforms
    sys.modules["torchaudio.transforms"] = transforms
    sys.modules.setdefault("scipy.io.wavfile", __import__("scipy.io.wavfile").io.wavfile)
    from tortoise import api

    del api_fast
    out = data_dir / "tortoise_rank"
    out.mkdir(parents=True, exist_ok=True)
    ar, clvp = _models()
    arrays = _sample(api, ar, clvp)
    arrays.update(_voices(out))
    _savez(out / "expected.npz", **arrays)
    write_json(out / "config.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__,
                                         steps=STEPS, candidates=R, max_mel_tokens=MAX_MEL_TOKENS, text=TEXT,
                                         note="see tools/ref_tortoise_rank.py"))
