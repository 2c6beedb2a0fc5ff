"""speech fixtures: Tortoise 3.0.0's fast speech-out path (tortoise/api_fast.py: UnifiedVoice latents + HiFi-GAN).

  tests/data/speech/hifigan_small/     hifidecoder.pth (state_dict with weight_g/weight_v), config.json,
                                       expected.npz (HifiganGenerator.inference on two cases + its stages)
  tests/data/speech/unified_voice/<name>/  autoregressive.pth (as the released file has it), config.json,
                                       expected.npz (get_conditioning, forward(return_latent=True),
                                       greedy inference_speech with and without the KV cache)
  tests/data/speech/api_fast_greedy/   autoregressive.pth, config.json, expected_kv_cache.npz, expected_no_kv_cache.npz:
                                       TextToSpeech.tts and .tts_stream run end to end on a tiny UnifiedVoice
                                       and hifigan_small's decoder, greedy

Runs under transformers 4.31.0, the version tortoise-tts 3.0.0 pins (tools/tortoise_env.sh builds that venv),
not under the transformers 5 of the other parts: there GPT2PreTrainedModel lost GenerationMixin, so
inference_speech has no `generate`, and stream_generator.py imports classes transformers 5 removed.

Everything runs Tortoise's own code. What this tool changes around it, and nothing else:
  - torchaudio and librosa are stubbed: api_fast imports them, and only the waveform-to-mel helpers (not called:
    the conditioning mels are given) use them;
  - `HifiganGenerator.inference` moves its input to "cuda" unconditionally; `Tensor.to("cuda")` is made a no-op;
  - sampling is made greedy by replacing `torch.multinomial` with an argmax over the same probabilities:
    api_fast hard-codes do_sample=True and top_k=50, so they cannot be overridden by arguments; temperature,
    top-k and top-p keep the argmax, so the tokens are the argmax of the repetition-penalized logits;
  - TextToSpeech is built with __new__ (its __init__ downloads the released weights) and given the attributes
    __init__ sets, from the tiny models; get_conditioning_latents is replaced by its body minus
    format_conditioning (torchaudio's mel), and the tokenizer by a stub returning fixed ids;
  - tts_stream's 500-token limit cannot be lowered by arguments, so a StoppingCriteria stops it at the same length
    tts's `max_generate_length` gives.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, write_json
from ref_torch_pickle import TINY_AR, _ar_state_dict, _import_tortoise, _randomize

TRANSFORMERS = "4.31.0"

# api_fast's decoder shrunk: in/cond channels = TINY_AR's model_dim; kernels, dilations and factors as api_fast.
HIFIGAN_SMALL = dict(in_channels=32, out_channels=1, resblock_type="1",
                     resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], resblock_kernel_sizes=[3, 7, 11],
                     upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=32, upsample_factors=[8, 8, 2, 2],
                     cond_channels=32)
# A second UnifiedVoice: another depth, width, head count (head size 8) and vocabulary.
TINY_AR_B = dict(layers=3, model_dim=24, heads=3, max_text_tokens=24, max_mel_tokens=40, max_conditioning_inputs=1,
                 number_text_tokens=40, start_text_token=40, number_mel_codes=60, start_mel_token=58,
                 stop_mel_token=59, checkpointing=False, train_solo_embeddings=False)
UNIFIED_VOICES = {"tiny_ar": (TINY_AR, 2), "tiny_ar_b": (TINY_AR_B, 12)}  # (config, _randomize seed)
# api_fast's model: TINY_AR with room for 80 mel tokens, since tts_stream's first chunk waits for 60 codes.
API_AR = dict(TINY_AR, max_mel_tokens=100)
API_NEW_TOKENS = 80        # tts: max_generate_length; tts_stream: the stopping criterion
API_STREAM_CHUNK = 8       # tts_stream's stream_chunk_size
API_OVERLAP = 1024         # tts_stream's overlap_wav_len (its default)


def _import_api_fast():
    import transformers

    if transformers.__version__ != TRANSFORMERS:
        raise RuntimeError(f"the speech part needs transformers {TRANSFORMERS} (tools/tortoise_env.sh), "
                           f"not {transformers.__version__}")
    _import_tortoise()
    librosa, util, filters = (types.ModuleType(n) for n in ["librosa", "librosa.util", "librosa.filters"])
    util.pad_center = util.tiny = filters.mel = None  # tortoise/utils/stft.py imports them by name
    librosa.util, librosa.filters = util, filters
    sys.modules.update({"librosa": librosa, "librosa.util": util, "librosa.filters": filters})
    from tortoise import api_fast

    return api_fast


@contextlib.contextmanager
def _greedy_on_cpu():
    """torch.multinomial -> argmax, Tensor.to("cuda") -> no-op (see the module docstring)."""
    import torch

    multinomial, to = torch.multinomial, torch.Tensor.to

    def argmax(probs, num_samples, *args, **kwargs):
        assert num_samples == 1
        return probs.argmax(dim=-1, keepdim=True)  # (B, 1)

    def to_cpu(self, *args, **kwargs):
        return self if args and args[0] == "cuda" else to(self, *args, **kwargs)

    torch.multinomial, torch.Tensor.to = argmax, to_cpu
    try:
        yield
    finally:
        torch.multinomial, torch.Tensor.to = multinomial, to


def _savez(path: Path, **arrays) -> None:
    """np.savez_compressed with a fixed timestamp on every member, so that regenerating gives the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for key, value in dict(fixture_version=FIXTURE_VERSION, **arrays).items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())


def _np(t):
    return t.detach().cpu().numpy()


# ----------------------------------------------------------------------------------------------
# HiFi-GAN


def _hifigan(api_fast, seed: int = 20):
    """HIFIGAN_SMALL with seeded weights: weight_g redrawn in [0.5, 1.5) so every conv keeps the signal's scale,
    conv_post's ten times that so the final tanh works outside its linear range."""
    import torch

    gen = api_fast.HifiganGenerator(**HIFIGAN_SMALL).eval()
    _randomize(gen, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, p in gen.named_parameters():
            if key.endswith("weight_g"):
                p.copy_((10.0 if key.startswith("conv_post") else 1.0) * (0.5 + torch.rand(p.shape, generator=g)))
    return gen


def _hifigan_stages(gen, latents, conditioning) -> dict:
    """HifiganGenerator.inference step by step (its body, then forward's), for debugging a port."""
    import torch
    import torch.nn.functional as F

    from tortoise.models.hifigan_decoder import LRELU_SLOPE

    out = {}
    up_1 = F.interpolate(latents.transpose(1, 2), scale_factor=[1024 / 256], mode="linear")  # (B, C, 4T)
    up_2 = F.interpolate(up_1, scale_factor=[24000 / 22050], mode="linear")  # (B, C, floor(4T * 24000/22050))
    out["up_1"], out["up_2"] = up_1, up_2
    o = gen.conv_pre(up_2) + gen.cond_layer(conditioning.unsqueeze(0).transpose(1, 2))  # (B, U, T')
    out["conv_pre_cond"] = o
    for i in range(gen.num_upsamples):
        o = gen.ups[i](F.leaky_relu(o, LRELU_SLOPE))  # (B, U / 2^(i+1), T' * prod(factors[:i+1]))
        out[f"stage{i}_up"] = o
        o = sum(gen.resblocks[i * gen.num_kernels + j](o) for j in range(gen.num_kernels)) / gen.num_kernels
        out[f"stage{i}"] = o
    out["conv_post"] = gen.conv_post(F.leaky_relu(o))  # default slope 0.01 here, not LRELU_SLOPE
    out["wav"] = torch.tanh(out["conv_post"])  # (B, 1, T' * 256)
    return {k: _np(v) for k, v in out.items()}


def _make_hifigan(api_fast, out: Path):
    import torch

    folder = out / "hifigan_small"
    folder.mkdir()
    gen = _hifigan(api_fast)
    torch.save(gen.state_dict(), folder / "hifidecoder.pth")
    write_json(folder / "config.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__,
                                            constructor=HIFIGAN_SMALL))
    g = torch.Generator().manual_seed(21)
    arrays = {}
    # inference broadcasts ONE conditioning vector over the batch: g (1, C) -> (1, C, 1) after its
    # unsqueeze(0).transpose(1, 2); a (B, C) conditioning would become (1, C, B) and not broadcast.
    for case, (b, t) in {"b1": (1, 5), "b2": (2, 7)}.items():
        latents = torch.randn(b, t, HIFIGAN_SMALL["in_channels"], generator=g)  # (B, T, C)
        conditioning = torch.randn(1, HIFIGAN_SMALL["cond_channels"], generator=g)  # (1, C)
        with _greedy_on_cpu():
            wav = gen.inference(latents, conditioning)  # (B, 1, floor(4T * 24000/22050) * 256)
        with torch.no_grad():
            stages = _hifigan_stages(gen, latents, conditioning)
        assert np.array_equal(stages["wav"], _np(wav)), case
        arrays.update({f"{case}.latents": _np(latents), f"{case}.conditioning": _np(conditioning),
                       f"{case}.wav": _np(wav)})
        if case == "b1":  # the stages of b2 would double the file for little
            arrays.update({f"{case}.{k}": v for k, v in stages.items() if k != "wav"})
    _savez(folder / "expected.npz", **arrays)
    return gen


# ----------------------------------------------------------------------------------------------
# UnifiedVoice


def _unified_voice(api_fast, config: dict, seed: int):
    """(model, released-style state dict) with seeded weights; the state dict is taken before
    post_init_gpt2_config, which adds gpt.wte (= mel_embedding) to the module."""
    import torch

    torch.manual_seed(0)
    ar = api_fast.UnifiedVoice(**config).eval()
    _randomize(ar, seed)
    return ar, _ar_state_dict(ar)


def _make_unified_voice(api_fast, out: Path, name: str, config: dict, seed: int) -> None:
    import torch

    folder = out / "unified_voice" / name
    folder.mkdir(parents=True)
    ar, sd = _unified_voice(api_fast, config, seed)
    torch.save(sd, folder / "autoregressive.pth")
    write_json(folder / "config.json", dict(fixture_version=FIXTURE_VERSION, torch=torch.__version__,
                                            transformers=TRANSFORMERS, constructor=config, seed=seed))
    g = torch.Generator().manual_seed(seed + 100)
    c = config
    arrays = {}
    with torch.no_grad():
        cond_mels = torch.randn(2, 3, 80, 24, generator=g)  # (B, clips, 80, frames)
        conditioning = ar.get_conditioning(cond_mels)  # (B, C): mean over clips of each clip's frame 0
        one_clip = ar.get_conditioning(cond_mels[:, 0])  # (B, 80, frames) is one clip per item
        text = torch.randint(1, c["number_text_tokens"], (2, 9), generator=g)  # (B, T_text)
        text_lengths = torch.tensor([9, 6])  # unused: clip_inputs=False
        codes = torch.randint(0, c["number_mel_codes"] - 2, (2, 12), generator=g)  # (B, T_mel)
        wav_lengths = torch.tensor([12 * 1024, 7 * 1024 + 500])  # item 1: codes 8.. become stop tokens
        codes_padded = codes.clone()  # set_mel_padding writes into the tensor forward is given
        latents = ar(conditioning, text, text_lengths, codes_padded, wav_lengths, return_latent=True,
                     clip_inputs=False)  # (B, T_mel, C)
    arrays.update(cond_mels=_np(cond_mels), conditioning=_np(conditioning), conditioning_one_clip=_np(one_clip),
                  text=_np(text), text_lengths=_np(text_lengths), codes=_np(codes), wav_lengths=_np(wav_lengths),
                  codes_after_set_mel_padding=_np(codes_padded), latents=_np(latents))
    ar.post_init_gpt2_config(kv_cache=False)
    for kv in [True, False]:
        ar.inference_model.kv_cache = kv
        with torch.no_grad():
            tokens = ar.inference_speech(conditioning, text, do_sample=False, max_generate_length=30)  # (B, <=30)
        arrays[f"greedy_tokens.kv_cache_{kv}"] = _np(tokens)
    _savez(folder / "expected.npz", **arrays)


# ----------------------------------------------------------------------------------------------
# api_fast end to end


class _TokenizerStub:
    """VoiceBpeTokenizer.encode's place: fixed ids inside API_AR's text vocabulary."""

    ids = [14, 3, 27, 41, 9, 33, 2, 58, 17, 6, 45, 21]

    def encode(self, text):
        return list(self.ids)


def _recorder(obj, name: str, log: list):
    """Replace obj.name by a wrapper that appends (name, args, kwargs, result) to log."""
    fn = getattr(obj, name)

    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        log.append((name, args, kwargs, result))
        return result

    setattr(obj, name, wrapper)


def _text_to_speech(api_fast, ar, hifi, auto_latent_of):
    """A TextToSpeech with __init__'s attributes set from the tiny models (api_fast.py lines 178-225)."""
    import torch

    tts = api_fast.TextToSpeech.__new__(api_fast.TextToSpeech)
    tts.device = torch.device("cpu")
    tts.half = False
    tts.enable_redaction = False
    tts.autoregressive_batch_size = 1
    tts.tokenizer = _TokenizerStub()
    tts.autoregressive = ar
    tts.hifi_decoder = hifi
    tts.rlg_auto = None
    # get_conditioning_latents (lines 226-247) with format_conditioning's mels given: stack the clips'
    # (1, 80, frames) mels on dim 1 and call get_conditioning.
    tts.get_conditioning_latents = lambda voice_samples, return_mels=False: auto_latent_of(voice_samples)
    return tts


def _recorder_generator(ar, yielded: list):
    """Record the (token (1,), latent (1, C)) pairs get_generator's generator yields as tts_stream draws them."""
    fn = ar.get_generator

    def wrapper(*args, **kwargs):
        for item in fn(*args, **kwargs):
            yielded.append(item)
            yield item

    ar.get_generator = wrapper


def _make_api_fast(api_fast, out: Path, hifi) -> None:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    folder = out / "api_fast_greedy"
    folder.mkdir()
    ar, sd = _unified_voice(api_fast, API_AR, seed=30)
    torch.save(sd, folder / "autoregressive.pth")
    g = torch.Generator().manual_seed(31)
    clips = [torch.randn(1, 80, 40, generator=g) for _ in range(2)]  # format_conditioning's output per clip

    def auto_latent_of(voice_samples):
        auto_conds = torch.stack(voice_samples, dim=1)  # (1, clips, 80, frames)
        return ar.get_conditioning(auto_conds)  # (1, C)

    class StopAfter(StoppingCriteria):
        """Stop once input_ids holds `length` tokens (tts_stream's own limit, max_length=500, is fixed)."""

        def __init__(self, length: int):
            self.length = length

        def __call__(self, input_ids, scores, **kwargs):
            return input_ids.shape[-1] >= self.length

    trunc_index = 1 + 1 + len(_TokenizerStub.ids) + 1 + 1 + 1  # cond, start, text, tts's 0, stop, start_mel
    settings = dict(first_buffer=60, stream_chunk_size=API_STREAM_CHUNK, overlap_wav_len=API_OVERLAP,
                    max_new_tokens=API_NEW_TOKENS, temperature=0.8, top_p=0.8, top_k=50, repetition_penalty=2.0,
                    length_penalty=1.0)
    write_json(folder / "config.json", dict(
        fixture_version=FIXTURE_VERSION, torch=torch.__version__, transformers=TRANSFORMERS, seed=30,
        autoregressive=API_AR, hifidecoder="../hifigan_small/hifidecoder.pth", hifigan=HIFIGAN_SMALL,
        text_ids=_TokenizerStub.ids, settings=settings,
        note="tts/tts_stream with their defaults except stream_chunk_size and the length limit; sampling made "
             "greedy (argmax of the repetition-penalized logits); see tools/ref_speech.py"))

    for kv in [True, False]:
        ar.post_init_gpt2_config(kv_cache=kv)  # TextToSpeech.__init__, line 216
        tts = _text_to_speech(api_fast, ar, hifi, auto_latent_of)
        log, yielded = [], []
        for name in ["inference_speech", "forward"]:
            _recorder(ar, name, log)
        _recorder_generator(ar, yielded)
        _recorder(hifi, "inference", log)
        with _greedy_on_cpu():
            wav = tts.tts("unused", voice_samples=clips, verbose=False, use_deterministic_seed=0,
                          max_generate_length=API_NEW_TOKENS)
            (_, (cond, text_tokens), _, codes), (_, fwd_args, fwd_kwargs, latents), (_, _, _, wav_again) = log
            assert wav_again is wav and fwd_kwargs == dict(return_latent=True, clip_inputs=False)
            log.clear()

            streamed = []
            stream = tts.tts_stream("unused", voice_samples=clips, verbose=False, use_deterministic_seed=0,
                                    stream_chunk_size=API_STREAM_CHUNK, overlap_wav_len=API_OVERLAP,
                                    stopping_criteria=StoppingCriteriaList([StopAfter(trunc_index + API_NEW_TOKENS)]))
            streamed = [chunk.clone() for chunk in stream]  # (S_i,) each
        del ar.inference_speech, ar.forward, ar.get_generator, hifi.inference
        decodes = [entry for entry in log if entry[0] == "inference"]  # one per chunk, on all latents so far
        stream_codes = torch.cat([token for token, _ in yielded])  # (N,)
        stream_latents = torch.cat([latent for _, latent in yielded])  # (N, C)
        assert torch.equal(decodes[-1][1][0][0], stream_latents)
        arrays = dict(
            cond_mels=_np(torch.stack(clips, dim=1)), auto_conditioning=_np(cond), text_tokens=_np(text_tokens),
            codes=_np(codes), text_lengths=_np(fwd_args[2]), wav_lengths=_np(fwd_args[4]), latents=_np(latents),
            wav=_np(wav),
            stream_codes=_np(stream_codes), stream_latents=_np(stream_latents),
            stream_decode_lengths=np.array([e[1][0].shape[1] for e in decodes]),
            stream_decode_wav_lengths=np.array([e[3].shape[-1] for e in decodes]),
            stream_chunk_lengths=np.array([c.shape[0] for c in streamed]),
            stream_wav=_np(torch.cat(streamed)))
        _savez(folder / f"expected_{'kv_cache' if kv else 'no_kv_cache'}.npz", **arrays)


def make(data_dir: Path) -> None:
    import torch

    api_fast = _import_api_fast()
    torch.use_deterministic_algorithms(True)
    out = data_dir / "speech"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    hifi = _make_hifigan(api_fast, out)
    for name, (config, seed) in UNIFIED_VOICES.items():
        _make_unified_voice(api_fast, out, name, config, seed)
    _make_api_fast(api_fast, out, hifi)
