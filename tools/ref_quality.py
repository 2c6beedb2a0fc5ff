"""quality fixtures: Tortoise 3.0.0's quality path (tortoise/api.py tts_with_preset -> tts: CLVP ranking, latents,
calm-token trimming, spectrogram diffusion, UnivNet) and its voice front end (wav_to_univnet_mel).

  tests/data/quality/univnet_mel.npz   the diffusion half of get_conditioning_latents on two real voice clips
      (third_party/tortoise/voices: mol/1.wav whole, emma/1.wav cut to its first EMMA_SAMPLES samples, so that
      one clip is truncated to 102400 samples at 24 kHz and one zero-padded):
        <clip>.at_24k (102400,)      torchaudio.functional.resample(clip, 22050, 24000), pad_or_truncate'd
        <clip>.mel (100, 401)        wav_to_univnet_mel (TacotronSTFT(1024, 256, 1024, 100, 24000, 0, 12000))
        mel_basis (100, 513)         TacotronSTFT's mel filters (librosa.filters.mel, see below)
  tests/data/quality/tiny/   a mutually consistent set of tiny models and the pipeline run on them:
      autoregressive.pth     a UnifiedVoice (TINY_AR widened to 256 mel codes: fix_autoregressive_output writes
                             codes 83, 45 and 248, which the latents pass embeds), randomized
      vocoder.pth            {"model_g": ...} a UnivNetGenerator on 100 mel bins with strides 8, 8, 4 (hop 256),
                             4 channels, kernel predictor 8 wide
      config.json            the constructors, seeds, and the diffusion model's config: its weights are NOT stored,
                             they are pyclvp.speech.diffusion.random_weights(cfg, DIFFUSION_SEED) (NumPy, PCG64)
      expected.npz           tts_with_preset("...", preset="ultra_fast", voice_samples=[mol, emma]) with
                             max_mel_tokens=MAX_MEL_TOKENS, its steps recorded:
        text_tokens, auto_conditioning, diffusion_conds (1, 2, 100, 401), diffusion_conditioning (1, 2C),
        candidates (16, N)        injected as inference_speech's output (sampling cannot be replayed across RNGs)
        clvp_input (16, MAX), clvp_scores (16,), best (), best_codes (1, MAX)
        best_latents (1, MAX, C)  autoregressive(..., return_latent=True, clip_inputs=False)
        latents (1, S, C)         after the calm-token trim (what do_spectrogram_diffusion gets)
        mel (1, 100, T), wav (1, 1, 256 T)
        k2_best (2,), k2_latents (2, MAX, C), k2_trimmed<i> (1, S_i, C), k2_mel<i>, k2_wav<i>   the same call with k=2
                                  (a fresh generator: the first candidate's draws, then the second's)
      Every torch.randn / randn_like the pipeline makes (do_spectrogram_diffusion's x_T, p_sample's per step,
      UnivNetGenerator.inference's z) is replaced by numpy.random.default_rng(NOISE_SEED).standard_normal(shape,
      float32), in order: pyclvp's quality path with seed=NOISE_SEED draws the same numbers in the same order.

What the tool changes around Tortoise's code, and nothing else: torchaudio's resample and MelSpectrogram are the
line-for-line copies of tools/ref_tortoise_rank.py (torchaudio is not installable for torch 2.13); librosa is not
installed (numba), so librosa.filters.mel and librosa.util.pad_center are given by a copy of librosa 0.10's code
below (mel_frequencies, hz_to_mel, mel_to_hz with htk=False, norm="slaney", float32 weights); TextToSpeech is
built with __new__ (its __init__ downloads weights) and given the tiny models; the tokenizer is a stub returning
TEXT; enable_redaction is False (the wav2vec2 aligner only acts on [bracketed] text).
"""
from __future__ import annotations

import shutil
import sys
import types
import wave
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, write_json
from ref_speech import _import_api_fast, _np, _savez
from ref_torch_pickle import TINY_AR, TINY_CLVP, _ar_state_dict, _randomize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # pyclvp, for random_weights (NumPy only)
VOICES = ROOT / "third_party" / "tortoise" / "voices"
CLIPS = {"mol": ("mol/1.wav", None), "emma": ("emma/1.wav", 60000)}  # (file, samples kept)
QUALITY_AR = dict(TINY_AR, number_mel_codes=256, start_mel_token=254, stop_mel_token=255, max_mel_tokens=60)
AR_SEED = 50
DIFFUSION = dict(model_channels=32, num_layers=1, in_channels=100, out_channels=200, in_latent_channels=32,
                 in_tokens=16, num_heads=4)
DIFFUSION_SEED = 51
UNIVNET = dict(noise_dim=8, channel_size=4, dilations=[1, 3, 9, 27], strides=[8, 8, 4], lReLU_slope=0.2,
               kpnet_conv_size=3, hop_length=256, n_mel_channels=100)
KPNET_HIDDEN = 8
UNIVNET_SEED = 52
TEXT = [14, 3, 27, 41, 9, 33, 2, 58, 17]
R, MAX_MEL_TOKENS = 16, 40   # ultra_fast's 16 candidates; tts()'s max_mel_tokens
CANDIDATE_SEED, NOISE_SEED = 53, 54


# ----------------------------------------------------------------------------------------------
# librosa 0.10.x filters.mel (htk=False, norm="slaney") and util.pad_center, copied


def _hz_to_mel(frequencies):
    frequencies = np.asanyarray(frequencies)
    f_min, f_sp = 0.0, 200.0 / 3
    mels = (frequencies - f_min) / f_sp
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - f_min) / f_sp
    logstep = np.log(6.4) / 27.0
    if frequencies.ndim:
        log_t = frequencies >= min_log_hz
        mels[log_t] = min_log_mel + np.log(frequencies[log_t] / min_log_hz) / logstep
    elif frequencies >= min_log_hz:
        mels = min_log_mel + np.log(frequencies / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels):
    mels = np.asanyarray(mels)
    f_min, f_sp = 0.0, 200.0 / 3
    freqs = f_min + f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - f_min) / f_sp
    logstep = np.log(6.4) / 27.0
    if mels.ndim:
        log_t = mels >= min_log_mel
        freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    elif mels >= min_log_mel:
        freqs = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return freqs


def librosa_mel(*, sr, n_fft, n_mels=128, fmin=0.0, fmax=None, htk=False, norm="slaney", dtype=np.float32):
    assert not htk and norm == "slaney"
    if fmax is None:
        fmax = float(sr) / 2
    n_mels = int(n_mels)
    weights = np.zeros((n_mels, int(1 + n_fft // 2)), dtype=dtype)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)  # fft_frequencies
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # mel_frequencies
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


def librosa_pad_center(data, *, size, axis=-1, **kwargs):
    kwargs.setdefault("mode", "constant")
    n = data.shape[axis]
    lpad = int((size - n) // 2)
    lengths = [(0, 0)] * data.ndim
    lengths[axis] = (lpad, int(size - n - lpad))
    assert lpad >= 0
    return np.pad(data, lengths, **kwargs)


def _import_api():
    """tortoise.api under the stubs of tools/ref_speech.py, with torchaudio's resample and MelSpectrogram and
    librosa's mel and pad_center filled in."""
    _import_api_fast()
    from ref_tortoise_rank import MelSpectrogram, torchaudio_resample

    torchaudio = sys.modules["torchaudio"]
    functional, transforms = types.ModuleType("torchaudio.functional"), types.ModuleType("torchaudio.transforms")
    functional.resample, transforms.MelSpectrogram = torchaudio_resample, MelSpectrogram
    torchaudio.functional, torchaudio.transforms = functional, transforms
    sys.modules.update({"torchaudio.functional": functional, "torchaudio.transforms": transforms})
    sys.modules["librosa.filters"].mel = librosa_mel
    sys.modules["librosa.util"].pad_center = librosa_pad_center
    import tortoise.utils.stft as tstft

    tstft.pad_center = librosa_pad_center  # imported by name before the stub was filled
    from tortoise import api

    return api


# ----------------------------------------------------------------------------------------------
# Voices


def _read_clip(name: str):  # Tortoise's load_audio(path, 22050) on a 22.05 kHz int16 file: (1, T) float32
    from tortoise.utils.audio import load_audio

    rel, keep = CLIPS[name]
    audio = load_audio(str(VOICES / rel), 22050)  # (1, T): int16 / 32768, clipped
    return audio[:, :keep] if keep else audio


def _univnet_mels(api, out: Path) -> list:
    import torch

    from tortoise.utils.audio import TacotronSTFT, wav_to_univnet_mel

    arrays, clips = {}, []
    for name in CLIPS:
        clip = _read_clip(name)
        clips.append(clip)
        with torch.no_grad():  # get_conditioning_latents, api.py lines 272-276
            sample = sys.modules["torchaudio"].functional.resample(clip, 22050, 24000)
            sample = api.pad_or_truncate(sample, 102400)
            mel = wav_to_univnet_mel(sample, do_normalization=False, device="cpu")  # (1, 100, 401)
        arrays[f"{name}.at_24k"] = _np(sample[0])  # the 24 kHz samples isolate the mel from the resampler
        arrays[f"{name}.mel"] = _np(mel[0])
        print(f"  {name}: {clip.shape[-1]} samples at 22.05 kHz -> mel {tuple(mel.shape)} "
              f"[{mel.min():.2f}, {mel.max():.2f}]")
    arrays["mel_basis"] = _np(TacotronSTFT(1024, 256, 1024, 100, 24000, 0, 12000).mel_basis)
    _savez(out / "univnet_mel.npz", **arrays)
    return clips


# ----------------------------------------------------------------------------------------------
# The tiny models and the pipeline


def _models(api):
    import torch

    from pyclvp.speech.diffusion import DiffusionConfig, random_weights
    from ref_univnet import _generator, _import_vocoder

    torch.manual_seed(0)
    ar = api.UnifiedVoice(**QUALITY_AR).eval()
    _randomize(ar, AR_SEED)
    ar_sd = _ar_state_dict(ar)
    clvp = api.CLVP(**TINY_CLVP).eval()
    clvp.load_state_dict(torch.load(ROOT / "tests" / "data" / "torch_pickle" / "tortoise" / "clvp2.pth"))
    ar.post_init_gpt2_config(kv_cache=False)  # TextToSpeech.__init__ with its default kv_cache=False
    torch.manual_seed(1)
    diffusion = api.DiffusionTts(**DIFFUSION, dropout=0, use_fp16=False, layer_drop=0,
                                 unconditioned_percentage=0).eval()
    weights = random_weights(DiffusionConfig.from_dict(DIFFUSION), DIFFUSION_SEED)
    diffusion.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    vocoder = _generator(_import_vocoder(), UNIVNET, KPNET_HIDDEN, UNIVNET_SEED)
    vocoder_sd = {"model_g": {k: v.clone() for k, v in vocoder.state_dict().items()}}  # with weight norm
    vocoder.eval(inference=True)  # TextToSpeech.__init__: removes the weight norm
    return ar, ar_sd, clvp, diffusion, vocoder, vocoder_sd


def _candidates(ar) -> "torch.Tensor":  # (R, N): inference_speech's output, stopping at various places
    import torch

    rng = np.random.default_rng(CANDIDATE_SEED)
    N = MAX_MEL_TOKENS - 6  # generation ended before max_mel_tokens: tts() pads them
    codes = rng.integers(0, 254, size=(R, N))
    codes[codes == 83] = 84
    for i in range(R):
        stop = int(rng.integers(8, N + 4))  # some never stop (stop >= N)
        if i % 3 == 0:
            codes[i, 2:6] = 83  # a run of 4 calm tokens: too short to trim at
        if stop < N:
            codes[i, stop:] = ar.stop_mel_token  # generate pads finished rows with the stop token
    return torch.from_numpy(codes)


class _TokenizerStub:
    def encode(self, text):
        return list(TEXT)


def _numpy_randn():
    """torch.randn / randn_like -> numpy.random.default_rng(NOISE_SEED).standard_normal(shape, float32)."""
    import torch

    rng, log = np.random.default_rng(NOISE_SEED), []
    randn, randn_like = torch.randn, torch.randn_like

    def draw(*size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        z = torch.from_numpy(rng.standard_normal(tuple(int(s) for s in shape), dtype=np.float32))
        log.append(tuple(z.shape))
        return z

    torch.randn, torch.randn_like = draw, lambda t, **kwargs: draw(tuple(t.shape))
    return log, lambda: setattr(torch, "randn", randn) or setattr(torch, "randn_like", randn_like)


def _pipeline(api, ar, clvp, diffusion, vocoder, clips) -> dict:
    import torch

    tts = api.TextToSpeech.__new__(api.TextToSpeech)
    tts.device, tts.half, tts.enable_redaction = torch.device("cpu"), False, False
    tts.autoregressive_batch_size = R  # one batch of 16
    tts.tokenizer, tts.models_dir = _TokenizerStub(), None
    tts.autoregressive, tts.diffusion, tts.clvp, tts.cvvp, tts.vocoder = ar, diffusion, clvp, None, vocoder
    tts.rlg_auto = tts.rlg_diffusion = None
    codes = _candidates(ar)
    rec = {}

    def record(obj, name, key):
        fn = getattr(obj, name)

        def wrapper(*args, **kwargs):
            result = fn(*args, **kwargs)
            rec.setdefault(key, []).append((args, kwargs, result))
            return result

        setattr(obj, name, wrapper)

    ar.inference_speech = lambda *args, **kwargs: rec.setdefault("inference_speech", []).append(kwargs) or codes.clone()
    record(ar, "forward", "ar_forward")
    record(ar, "get_conditioning", "auto")
    record(diffusion, "get_conditioning", "diffusion_cond")
    record(clvp, "forward", "clvp")
    record(api, "do_spectrogram_diffusion", "diffusion")
    record(vocoder, "inference", "vocoder")
    draws, restore = _numpy_randn()
    try:
        with torch.no_grad():
            wav = tts.tts_with_preset("unused", preset="ultra_fast", voice_samples=clips, verbose=False,
                                      use_deterministic_seed=0, max_mel_tokens=MAX_MEL_TOKENS)
    finally:
        restore()
    (kw,) = rec["inference_speech"]
    assert kw["num_return_sequences"] == R and kw["max_generate_length"] == MAX_MEL_TOKENS, kw
    (auto_args, _, auto_latent), = rec["auto"]
    (dc_args, _, dc_latent), = rec["diffusion_cond"]
    (clvp_args, clvp_kwargs, scores), = rec["clvp"]
    (fwd_args, fwd_kwargs, best_latents), = rec["ar_forward"]
    (diff_args, diff_kwargs, mel), = rec["diffusion"]
    (voc_args, _, wav_again), = rec["vocoder"]
    assert wav_again is wav and fwd_kwargs == dict(return_latent=True, clip_inputs=False)
    assert diff_kwargs["temperature"] == 1.0 and diff_args[1].conditioning_free is False  # ultra_fast
    steps = len(diff_args[1].use_timesteps)
    assert steps == 30 and len(draws) == steps + 2, (steps, draws)  # x_T, one per step, UnivNet's z
    order = torch.argsort(scores, descending=True)
    assert scores[order[0]] - scores[order[1]] > 1e-3, "the best candidate must win by a margin"
    latents = diff_args[2]
    print(f"  best {int(order[0])}: latents {tuple(best_latents.shape)} -> trimmed {tuple(latents.shape)}, "
          f"mel {tuple(mel.shape)}, wav {tuple(wav.shape)}")
    arrays = dict(text_tokens=_np(clvp_args[0][:1]), auto_conds=_np(auto_args[0]), auto_conditioning=_np(auto_latent),
                  diffusion_conds=_np(dc_args[0]), diffusion_conditioning=_np(dc_latent), candidates=_np(codes),
                  clvp_input=_np(clvp_args[1]), clvp_scores=_np(scores), best=np.array(int(order[0])),
                  best_codes=_np(fwd_args[3]), best_latents=_np(best_latents), latents=_np(latents), mel=_np(mel),
                  wav=_np(wav), noise_draws=np.array(draws))
    # k = 2: the two best candidates' latents in one batch, then diffusion and UnivNet for each in turn
    rec.clear()
    draws, restore = _numpy_randn()
    try:
        with torch.no_grad():
            wavs = tts.tts_with_preset("unused", preset="ultra_fast", voice_samples=clips, verbose=False,
                                       use_deterministic_seed=0, max_mel_tokens=MAX_MEL_TOKENS, k=2)
    finally:
        restore()
    (fwd_args, _, k2_latents), = rec["ar_forward"]
    assert len(wavs) == 2 and len(rec["diffusion"]) == 2 and len(draws) == 2 * (steps + 2), len(draws)
    assert torch.equal(fwd_args[3], clvp_args[1][order[:2]])  # the fixed candidates, best first
    for i, ((diff_args, _, mel), (_, _, w)) in enumerate(zip(rec["diffusion"], rec["vocoder"])):
        assert w is wavs[i]
        arrays.update({f"k2_trimmed{i}": _np(diff_args[2]), f"k2_mel{i}": _np(mel), f"k2_wav{i}": _np(w)})
    arrays.update(k2_best=_np(order[:2]), k2_latents=_np(k2_latents))
    print(f"  k=2: best {[int(i) for i in order[:2]]}: trimmed {[tuple(arrays[f'k2_trimmed{i}'].shape) for i in (0, 1)]}")
    return arrays


def make(data_dir: Path) -> None:
    import torch

    torch.use_deterministic_algorithms(True)
    api = _import_api()
    out = data_dir / "quality"
    shutil.rmtree(out, ignore_errors=True)
    (out / "tiny").mkdir(parents=True)
    clips = _univnet_mels(api, out)
    ar, ar_sd, clvp, diffusion, vocoder, vocoder_sd = _models(api)
    torch.save(ar_sd, out / "tiny" / "autoregressive.pth")
    torch.save(vocoder_sd, out / "tiny" / "vocoder.pth")
    arrays = _pipeline(api, ar, clvp, diffusion, vocoder, clips)
    _savez(out / "tiny" / "expected.npz", **arrays)
    write_json(out / "tiny" / "config.json", dict(
        fixture_version=FIXTURE_VERSION, torch=torch.__version__, autoregressive=QUALITY_AR, ar_seed=AR_SEED,
        clvp="../../torch_pickle/tortoise/clvp2.pth", diffusion=DIFFUSION, diffusion_seed=DIFFUSION_SEED,
        univnet=UNIVNET, kpnet_hidden_channels=KPNET_HIDDEN, univnet_seed=UNIVNET_SEED, text_ids=TEXT,
        clips={k: dict(file=v[0], samples=v[1]) for k, v in CLIPS.items()}, preset="ultra_fast", candidates=R,
        max_mel_tokens=MAX_MEL_TOKENS, noise_seed=NOISE_SEED,
        note="tts_with_preset(ultra_fast) with injected candidates and numpy-drawn noise; see tools/ref_quality.py"))
