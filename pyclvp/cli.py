"""The `pyclvp` command: one sub-command per job.

  pyclvp tokenize TEXT        normalized text and ids
  pyclvp mel CLIP.wav -o F    log-mel features (and a PNG picture)
  pyclvp info DIR             what a checkpoint holds
  pyclvp rank / demo          generate candidates and rank them with CLVP
  pyclvp tts                  speak a text in a voice: HiFi-GAN (fast) or diffusion + UnivNet (--decoder diffusion)
  pyclvp convert / convert-tortoise   PyTorch checkpoints -> safetensors

Each sub-command is a pair: `_add_<name>(subparsers)` declares its arguments and `_cmd_<name>(args)`
runs it. Errors that are the user's (a bad file, bad text, `--backend cuda` where CUDA cannot run)
print one line and exit with status 2; `info` exits with status 1 when the tensors do not fit config.json.
"""
from __future__ import annotations

import argparse
import sys

COMMANDS = []  # list of (name, add_fn): filled by the @command decorator below


def command(name):
    def register(add_fn):
        COMMANDS.append((name, add_fn))
        return add_fn
    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyclvp", description="Torch-free CLVP (Tortoise TTS) tools")
    parser.add_argument("--version", action="store_true", help="print the version and build info")
    sub = parser.add_subparsers(dest="command")
    for name, add_fn in COMMANDS:
        add_fn(sub)
    return parser


@command("version")
def _add_version(sub):
    p = sub.add_parser("version", help="print the version and the C++ core's build info")
    p.set_defaults(func=_cmd_version)


def _cmd_version(args):
    import json

    import pyclvp
    from pyclvp import _core

    print(f"pyclvp {pyclvp.__version__}")
    print(json.dumps(_core.build_info(), indent=2))


@command("tokenize")
def _add_tokenize(sub):
    p = sub.add_parser("tokenize", help="normalize text and print its CLVP token ids")
    p.add_argument("text", nargs="+", help="one or more texts (each is tokenized on its own)")
    p.add_argument("--json", action="store_true", help="one JSON object per text: text, normalized, ids, tokens")
    p.add_argument("--vocab", metavar="DIR", help="folder with vocab.json and merges.txt (default: bundled)")
    p.add_argument("--transliterate", action="store_true", help="keep accented letters' ASCII base (café -> cafe)")
    p.add_argument("--normalizer", choices=["transformers", "tortoise"], default="transformers",
                   help="transformers' normalizer (default) or Tortoise's own cleaner (1999 -> nineteen ninety-nine)")
    p.set_defaults(func=_cmd_tokenize)


def _cmd_tokenize(args):
    import json

    from pyclvp.text.tokenizer import ClvpTokenizer

    tok = ClvpTokenizer.from_pretrained(args.vocab, transliterate=args.transliterate, normalizer=args.normalizer)
    for text in args.text:
        ids = tok.encode(text)
        if args.json:
            print(json.dumps({"text": text, "normalized": tok.normalize(text), "ids": ids,
                              "tokens": tok.convert_ids_to_tokens(ids)}, ensure_ascii=False))
        else:
            print(f"normalized: {tok.normalize(text)}")
            print(f"ids: {' '.join(map(str, ids))}")


@command("mel")
def _add_mel(sub):
    p = sub.add_parser("mel", help="write a WAV clip's CLVP log-mel features (.npy) and a picture of them (.png)")
    p.add_argument("clip", help="a WAV file (any rate, PCM or IEEE float; resampled to 22,050 Hz)")
    p.add_argument("-o", "--output", required=True, help="the .npy file for the (80, frames) float32 features")
    p.add_argument("--png", metavar="FILE", help="also write a picture of the spectrogram (low bins at the bottom)")
    p.add_argument("--full", action="store_true", help="the whole clip (default: padded/truncated to 6 s, as CLVP)")
    p.add_argument("--no-norms", action="store_true", help="leave out the division by Tortoise's mel norms")
    p.add_argument("--config", metavar="DIR", help="folder with preprocessor_config.json (default: bundled)")
    p.set_defaults(func=_cmd_mel)


def _cmd_mel(args):
    import numpy as np

    from pyclvp.audio import load_audio
    from pyclvp.audio.features import ClvpFeatureExtractor
    from pyclvp.png import spectrogram_rgb, write_png

    extractor = ClvpFeatureExtractor.from_pretrained(args.config)
    if args.no_norms:
        extractor.mel_norms = None
    audio = load_audio(args.clip, extractor.sampling_rate)                          # (T,)
    max_length = max(len(audio), 1) if args.full else None
    features = extractor(audio, sampling_rate=extractor.sampling_rate, max_length=max_length,
                         return_tensors="np")["input_features"][0]                  # (M, frames)
    np.save(args.output, features)
    print(f"{args.clip}: {len(audio) / extractor.sampling_rate:.2f} s -> {args.output}: {features.shape} float32")
    if args.png:
        norms = extractor.mel_norms
        log_mel = features if norms is None else features * np.asarray(norms, dtype=np.float32)[:, None]
        write_png(args.png, spectrogram_rgb(log_mel))
        print(f"picture: {args.png}")


@command("convert")
def _add_convert(sub):
    p = sub.add_parser("convert", help="a transformers folder with pytorch_model.bin -> model.safetensors (no torch)")
    p.add_argument("src", help="folder with config.json and pytorch_model.bin (or pytorch_model.bin.index.json + shards)")
    p.add_argument("-o", "--output", required=True, help="output folder (may be src itself)")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args):
    from pyclvp.convert import convert_bin

    n = convert_bin(args.src, args.output)
    print(f"wrote {n} tensors to {args.output}/model.safetensors")


@command("convert-tortoise")
def _add_convert_tortoise(sub):
    p = sub.add_parser("convert-tortoise", help="Tortoise autoregressive.pth + clvp2.pth (and hifidecoder.pth, "
                                                "diffusion_decoder.pth, vocoder.pth) -> a transformers-layout CLVP folder "
                                                "(config.json + model.safetensors, hifigan/, diffusion/, univnet/), "
                                                "without torch")
    p.add_argument("--autoregressive", metavar="PTH", help="Tortoise's autoregressive.pth (UnifiedVoice)")
    p.add_argument("--clvp", metavar="PTH", help="Tortoise's clvp2.pth (CLVP)")
    p.add_argument("--hifigan", metavar="PTH", help="Tortoise's hifidecoder.pth (the fast path's HiFi-GAN decoder)")
    p.add_argument("--hifigan-config", metavar="JSON", help="HifiganGenerator's arguments, if not api_fast.py's")
    p.add_argument("--vocoder", metavar="PTH", help="Tortoise's vocoder.pth (the quality path's UnivNet vocoder)")
    p.add_argument("--vocoder-config", metavar="JSON", help="UnivNetGenerator's arguments, if not api.py's defaults")
    p.add_argument("--diffusion", metavar="PTH", help="Tortoise's diffusion_decoder.pth (the quality path's DiffusionTts)")
    p.add_argument("--diffusion-config", metavar="JSON", help="DiffusionTts's arguments, if not read off the shapes")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--decoder-heads", type=int, default=None,
                   help="the autoregressive model's attention heads (default: model_dim // 64, 16 for Tortoise)")
    p.set_defaults(func=_cmd_convert_tortoise)


def _cmd_convert_tortoise(args):
    from pyclvp.convert import convert_diffusion, convert_hifigan, convert_tortoise, convert_univnet
    from pyclvp.io.files import read_json

    if (args.autoregressive is None) != (args.clvp is None):
        raise ValueError("--autoregressive and --clvp go together (the CLVP folder needs both)")
    if args.autoregressive is None and args.hifigan is None and args.vocoder is None and args.diffusion is None:
        raise ValueError("nothing to convert: give --autoregressive and --clvp, --hifigan, --diffusion, --vocoder, "
                         "or several")
    if args.autoregressive is not None:
        config = convert_tortoise(args.autoregressive, args.clvp, args.output, decoder_heads=args.decoder_heads)
        d = config["decoder_config"]
        print(f"wrote {args.output}/config.json and model.safetensors (decoder {d['num_hidden_layers']} layers x "
              f"{d['hidden_size']}, {d['num_attention_heads']} heads)")
    vocoders = [  # (folder, converter, .pth, config overrides, what to say of the config written)
        ("hifigan", convert_hifigan, args.hifigan, args.hifigan_config, lambda c: (
            f"HiFi-GAN {c['in_channels']} -> {c['upsample_initial_channel']} channels, upsampling "
            + "x".join(map(str, c["upsample_factors"])))),
        ("diffusion", convert_diffusion, args.diffusion, args.diffusion_config, lambda c: (
            f"DiffusionTts {c['num_layers']} layers x {c['model_channels']}, {c['num_heads']} heads")),
        ("univnet", convert_univnet, args.vocoder, args.vocoder_config, lambda c: (
            f"UnivNet {c['n_mel_channels']} mel bins -> {c['channel_size']} channels, strides "
            + "x".join(map(str, c["strides"])))),
    ]
    for folder, convert, pth, overrides, summary in vocoders:
        if pth is not None:
            config = convert(pth, args.output, read_json(overrides) if overrides else None)
            print(f"wrote {args.output}/{folder}/config.json and model.safetensors ({summary(config)})")


@command("info")
def _add_info(sub):
    p = sub.add_parser("info", help="a checkpoint's configuration, parameter count, dtypes and file size")
    p.add_argument("model", metavar="DIR", help="folder with config.json and model.safetensors (or shards)")
    p.set_defaults(func=_cmd_info)


PARTS = ("conditioning_encoder", "speech_decoder_model", "text_encoder_model", "speech_encoder_model")


def checkpoint_info(folder) -> dict:
    """What a safetensors checkpoint holds, from its headers only: files and sizes, parameter counts
    (in all and per part), stored dtypes, and whether the tensors fit config.json (problems: None or text)."""
    from pathlib import Path

    import numpy as np

    from pyclvp.config import ClvpConfig
    from pyclvp.io.checkpoints import CheckpointError, check_shapes, find_weight_files, tensor_headers
    from pyclvp.model.weights import OPTIONAL, checkpoint_spec

    folder = Path(folder)
    files = find_weight_files(folder)
    cfg = ClvpConfig.from_pretrained(folder)
    entries = tensor_headers(files)
    shapes = {name: shape for name, (_, _, shape) in entries.items()}
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    dtypes = {}
    for _, stored, _ in entries.values():
        dtypes[stored] = dtypes.get(stored, 0) + 1
    try:
        check_shapes(shapes, checkpoint_spec(cfg), folder, OPTIONAL)
        problems = None
    except CheckpointError as e:
        problems = str(e)
    return dict(config=cfg, files={f.name: f.stat().st_size for f in files}, tensors=len(entries),
                parameters=sum(sizes.values()), dtypes=dtypes, problems=problems,
                parts={p: sum(n for k, n in sizes.items() if k.startswith(p + ".")) for p in PARTS})


def _cmd_info(args):
    info = checkpoint_info(args.model)
    cfg = info["config"]
    t, s, d = cfg.text_config, cfg.speech_config, cfg.decoder_config
    print(f"model: {args.model}")
    for name, size in info["files"].items():
        print(f"file: {name} ({_bytes(size)})")
    print(f"parameters: {info['parameters']:,} in {info['tensors']} tensors; stored as "
          + ", ".join(f"{k} x{n}" for k, n in sorted(info["dtypes"].items())))
    for part, n in info["parts"].items():
        print(f"  {part}: {n:,}")
    print(f"decoder: {d.num_hidden_layers} layers x {d.hidden_size} ({d.num_attention_heads} heads, inner "
          f"{d.inner_dim}), speech vocab {d.vocab_size} (start {d.bos_token_id}, stop {d.eos_token_id}), "
          f"{d.max_position_embeddings} mel positions, {d.max_text_tokens} text positions, "
          f"{d.num_mel_attn_blocks} conditioning blocks")
    for label, e in (("text encoder", t), ("speech encoder", s)):
        print(f"{label}: {e.num_hidden_layers} layers x {e.hidden_size} ({e.num_attention_heads} heads, rotary "
              f"{e.rotary_dim if e.use_rotary_embedding else 'off'}), vocab {e.vocab_size}, summary "
              f"{e.summary_type}, projection {e.projection_dim}")
    print(f"checks: {'the tensors fit config.json' if info['problems'] is None else info['problems']}")
    return 0 if info["problems"] is None else 1


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _non_negative_int(text: str) -> int:
    """argparse type for --seed: NumPy's generators take no negative seed."""
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _pad_to(text: str):
    """argparse type for --pad-to: a count >= 1, none, or max_new_tokens (the default: --max-new-tokens)."""
    if text.lower() == "none":
        return None
    if text == "max_new_tokens":
        return text
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or none, got {text!r}")
    return int(text)


def _add_generation_args(p):
    p.add_argument("--text", required=True, help="the text to speak")
    p.add_argument("--voice", action="append", required=True, metavar="CLIP.wav",
                   help="a WAV clip of the voice (repeat for more clips: their conditioning is averaged); read as "
                        "Tortoise does: first channel, torchaudio's resampler, the first 6 s")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--candidates", type=int, metavar="N", help="candidates to generate (default 16)")
    group.add_argument("--preset", help="Tortoise preset: ultra_fast (16), fast (96), standard / high_quality (256)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="speech tokens per candidate (default 500)")
    p.add_argument("--seed", type=_non_negative_int, help="random seed for sampling, >= 0 (default: fresh each run)")
    p.add_argument("--pad-to", type=_pad_to, default="max_new_tokens", metavar="N|none",
                   help="speech tokens CLVP scores per candidate, the stop token padding the shorter ones "
                        "(default: --max-new-tokens, as Tortoise's tts(); none: the longest candidate's length)")
    p.add_argument("--positions", choices=["uncached", "cached"], default="uncached",
                   help="mel position of generated token k: k (uncached, Tortoise's default kv_cache=False) or k + 1 "
                        "(cached, kv_cache=True and transformers' CLVP)")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cpu", "cuda"], help="compute backend")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON (with each candidate's speech ids)")


@command("rank")
def _add_rank(sub):
    p = sub.add_parser("rank", help="generate speech-token candidates for a text in a voice, ranked by CLVP")
    p.add_argument("--model", required=True, metavar="DIR", help="folder with config.json and model.safetensors")
    _add_generation_args(p)
    p.set_defaults(func=_cmd_rank)


def _cmd_rank(args):
    import json
    from pathlib import Path

    from pyclvp.audio import load_voice
    from pyclvp.model import ClvpModelForConditionalGeneration
    from pyclvp.rank import rank

    if not args.text.strip():
        raise ValueError("the text is empty")
    if not Path(args.model).is_dir():
        raise ValueError(f"model folder {args.model} does not exist (download config.json + model.safetensors, "
                         f"or try `pyclvp demo`)")
    model = ClvpModelForConditionalGeneration.from_pretrained(args.model, backend=args.backend)
    clips = [load_voice(path) for path in args.voice]  # (132300,) float32 at 22,050 Hz each, as Tortoise reads them
    count = 16 if args.candidates is None else args.candidates
    kwargs = dict(preset=args.preset) if args.preset else dict(num_candidates=count)
    if args.max_new_tokens is not None:
        kwargs["max_new_tokens"] = args.max_new_tokens
    candidates = rank(model, args.text, clips, seed=args.seed, progress=sys.stderr.isatty(),
                      pad_to=getattr(args, "pad_to", "max_new_tokens"), positions=getattr(args, "positions", "uncached"),
                      **kwargs)
    rows = [dict(rank=i + 1, score=round(c.score, 4), tokens=c.length, seconds=round(c.seconds, 2),
                 speech_ids=c.speech_ids.tolist()) for i, c in enumerate(candidates)]
    if args.json:
        print(json.dumps(dict(text=args.text, voices=args.voice, candidates=rows)))
        return
    print(f"text: {args.text!r}; voice: {', '.join(args.voice)}; {len(rows)} candidates, best first")
    print(f"{'rank':>4}  {'score':>8}  {'tokens':>6}  {'seconds':>7}")
    for r in rows:
        print(f"{r['rank']:>4}  {r['score']:>8.3f}  {r['tokens']:>6}  {r['seconds']:>7.2f}")


@command("tts")
def _add_tts(sub):
    p = sub.add_parser("tts", help="speak a text in a voice: speech tokens -> latents -> HiFi-GAN (or diffusion + "
                                   "UnivNet) -> a 24 kHz WAV")
    p.add_argument("--model", required=True, metavar="DIR", help="folder with config.json, model.safetensors and "
                   "hifigan/ (pyclvp convert-tortoise --hifigan), or diffusion/ and univnet/ for --decoder diffusion")
    p.add_argument("--text", required=True, help="the text to speak")
    p.add_argument("--voice", action="append", required=True, metavar="CLIP.wav",
                   help="a WAV clip of the voice (repeat for more clips: their conditioning is averaged); read as "
                        "Tortoise does: first channel, torchaudio's resampler, the first 6 s")
    p.add_argument("-o", "--output", required=True, metavar="OUT.wav", help="the WAV to write; - for standard output")
    p.add_argument("--decoder", choices=["hifigan", "diffusion"], default="hifigan",
                   help="hifigan: Tortoise's fast path (api_fast, the default); diffusion: its quality path (api.py "
                        "tts_with_preset: diffusion decoder + UnivNet)")
    p.add_argument("--preset", choices=["ultra_fast", "fast", "standard", "high_quality"],
                   help="with --decoder diffusion: Tortoise's preset (candidates / diffusion steps: ultra_fast 16 / 30 "
                        "without conditioning-free guidance, the default; fast 96 / 80; standard 256 / 200; "
                        "high_quality 256 / 400)")
    p.add_argument("--candidates", type=int, metavar="N",
                   help="sample N candidates and speak the one CLVP ranks best (default: 1 with hifigan, as "
                        "Tortoise's api_fast; the preset's with diffusion)")
    p.add_argument("--max-new-tokens", type=int, default=500, metavar="N", help="speech tokens at most (default 500)")
    p.add_argument("--max-memory", type=float, metavar="GB",
                   help="with --decoder diffusion: refuse to start when the estimated peak memory (GB = 1e9 bytes; "
                        "pyclvp.speech.tts.memory_estimate) exceeds GB")
    p.add_argument("--seed", type=_non_negative_int, help="random seed for sampling, >= 0 (default: fresh each run)")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cpu", "cuda"], help="compute backend")
    p.add_argument("--stream", action="store_true", help="write the audio chunk by chunk as the tokens come "
                                                         "(with -o -, a player can start before the end)")
    p.set_defaults(func=_cmd_tts)


def _progress_line(label: str, unit: str):
    """progress(done, total) as one line on standard error: `diffusion [#####     ] 15/30 steps`."""
    def show(done: int, total: int) -> None:
        filled = 30 * done // max(total, 1)
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r{label} [{'#' * filled}{' ' * (30 - filled)}] {done}/{total} {unit}{end}")
        sys.stderr.flush()
    return show


def _cmd_tts(args):
    from pyclvp.audio import load_voice
    from pyclvp.io.wav import pcm16, wav_header, write_wav
    from pyclvp.speech.tts import TextToSpeech, memory_estimate

    if not args.text.strip():
        raise ValueError("the text is empty")
    quality = args.decoder == "diffusion"
    if args.stream and (quality or args.candidates not in (None, 1)):
        raise ValueError("--stream speaks one candidate as it is sampled with HiFi-GAN; it cannot rank --candidates "
                         "or run --decoder diffusion")
    if not quality and (args.preset or args.max_memory is not None):
        raise ValueError("--preset and --max-memory go with --decoder diffusion")
    tts = TextToSpeech.from_pretrained(args.model, backend=args.backend)
    tts.check_ready(args.decoder)
    kwargs = dict(seed=args.seed, max_new_tokens=args.max_new_tokens)
    if quality:
        preset = args.preset or "ultra_fast"
        if args.max_memory is not None:
            est = memory_estimate(tts, preset, candidates=args.candidates, max_new_tokens=args.max_new_tokens)
            need = est["peak"] / 1e9
            parts = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in est.items() if k != "peak")
            print(f"estimated peak memory: {need:.2f} GB ({parts})", file=sys.stderr)
            if need > args.max_memory:
                raise ValueError(f"the {preset} preset needs an estimated {need:.2f} GB, over --max-memory "
                                 f"{args.max_memory:g} GB: use a smaller preset, fewer --candidates or "
                                 f"--max-new-tokens")
        # the whole clips: the diffusion decoder reads up to 102400 samples at 24 kHz, the autoregressive model's
        # features cut their own 6 s window
        clips = [load_voice(path, window=None) for path in args.voice]
        tty = sys.stderr.isatty()
        wav = tts.quality(args.text, clips, preset, candidates=args.candidates,
                          progress=_progress_line("decoding", "steps") if tty else None,
                          diffusion_progress=_progress_line("diffusion", "steps") if tty else None, **kwargs).wav
    else:
        clips = [load_voice(path) for path in args.voice]  # (132300,) float32 at 22,050 Hz each, as Tortoise reads
        if args.stream:
            out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")
            try:
                out.write(wav_header(tts.sampling_rate, None))  # sizes unknown until the end: streaming sizes
                for chunk in tts.tts_stream(args.text, clips, **kwargs):
                    out.write(pcm16(chunk))
                    out.flush()
            finally:
                if out is not sys.stdout.buffer:
                    out.close()
            return
        wav = tts.tts(args.text, clips, candidates=1 if args.candidates is None else args.candidates, progress=sys.stderr.isatty(), **kwargs)
    if args.output == "-":
        sys.stdout.buffer.write(wav_header(tts.sampling_rate, len(wav)) + pcm16(wav))
        return
    path = write_wav(args.output, wav, tts.sampling_rate)
    print(f"wrote {path}: {len(wav) / tts.sampling_rate:.2f} s at {tts.sampling_rate} Hz", file=sys.stderr)


DEMO_TEXT = "Hello! This is pyclvp, ranking speech tokens without torch."


@command("demo")
def _add_demo(sub):
    p = sub.add_parser("demo", help="run `rank` end to end on a small model with RANDOM weights (no download)")
    p.add_argument("--candidates", type=int, default=4, metavar="N", help="candidates to generate (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=60, metavar="N", help="tokens per candidate (default 60)")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cpu", "cuda"], help="compute backend")
    p.add_argument("--keep", metavar="DIR", help="write the demo model and clip to DIR (default: a temporary folder)")
    p.add_argument("--wav", default="pyclvp-demo.wav", metavar="OUT.wav",
                   help="where to write the demo's audio (default pyclvp-demo.wav)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args):
    import tempfile
    from pathlib import Path

    from pyclvp.audio import load_voice
    from pyclvp.demo import write_random_checkpoint, write_random_hifigan, write_voice_clip
    from pyclvp.io.wav import write_wav
    from pyclvp.speech.tts import TextToSpeech

    print("pyclvp demo: a small CLVP model and HiFi-GAN with seeded RANDOM weights and a synthesized voice clip.\n"
          "The scores are meaningless and the audio is noise; this shows the pipeline: tokenizer -> WAV -> log-mel\n"
          "features -> conditioning -> KV-cached sampling of speech tokens -> CLVP ranking -> latents -> HiFi-GAN.\n"
          "For real weights, see the README.\n")
    with tempfile.TemporaryDirectory(prefix="pyclvp-demo-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        config = write_random_checkpoint(folder, seed=0)
        write_random_hifigan(folder, config.decoder_config.hidden_size, seed=0)
        clip = write_voice_clip(folder / "voice.wav")
        print(f"$ pyclvp rank --model {folder} --text {DEMO_TEXT!r} --voice {clip} --candidates {args.candidates} "
              f"--max-new-tokens {args.max_new_tokens} --seed 0 --backend {args.backend}")
        rank_args = argparse.Namespace(model=str(folder), text=DEMO_TEXT, voice=[str(clip)], preset=None,
                                       candidates=args.candidates, max_new_tokens=args.max_new_tokens, seed=0,
                                       backend=args.backend, json=False, pad_to="max_new_tokens", positions="uncached")
        _cmd_rank(rank_args)
        out = Path(args.wav)
        print(f"\nspeaking the best of {args.candidates} new candidates (at least {args.max_new_tokens // 2} tokens) "
              f"with a random HiFi-GAN")
        tts = TextToSpeech.from_pretrained(folder, backend=args.backend)
        # min_new_tokens: the random model stops at random; a few seconds of its noise show the pipeline better
        wav = tts.tts(DEMO_TEXT, [load_voice(clip)], candidates=args.candidates, seed=0,
                      max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens // 2)
        write_wav(out, wav, tts.sampling_rate)
        print(f"wrote {out}: {len(wav) / tts.sampling_rate:.2f} s of noise from random weights (the pipeline runs "
              "end to end; real weights speak)")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        args.func = _cmd_version
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except _user_errors() as e:  # one clear line, no traceback
        print(f"pyclvp {args.command}: error: {e}", file=sys.stderr)
        return 2


def _user_errors() -> tuple:
    """The exceptions that are the user's to fix. CudaUnavailableError joins them once its module is loaded:
    it is raised only from there, and importing it up front would load pyclvp._core for every command."""
    cuda_ops = sys.modules.get("pyclvp.ops.cuda_ops")
    return (ValueError, OSError) + ((cuda_ops.CudaUnavailableError,) if cuda_ops else ())


if __name__ == "__main__":
    sys.exit(main())
