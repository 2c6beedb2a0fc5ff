"""The `pyclvp` command: one sub-command per job.

  pyclvp tokenize TEXT        normalized text and ids
  pyclvp mel CLIP.wav -o F    log-mel features (and a PNG picture)
  pyclvp info DIR             what a checkpoint holds
  pyclvp rank / demo          generate candidates and rank them with CLVP
  pyclvp tts                  speak a text in a voice: HiFi-GAN (fast) or diffusion + UnivNet (--decoder diffusion)
  pyclvp convert / convert-tortoise   PyTorch checkpoints -> safetensors

Each sub-command is a pair: `_add_<name>(subparsers)` declares its arguments and `_cmd_<name>(args)`
runs it. Errors that are the user's (a bad file, bad text, `--backend cuda` where CUDA cannot run)
print a few lines at most, naming flags as typed (--candidates, not num_candidates), and exit with status 2;
`info` exits with status 1 when the tensors do not fit config.json; Ctrl-C prints "interrupted" and exits 130.
Python warnings print as one line each (no source paths) while a command runs.
"""
from __future__ import annotations

import argparse
import re
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
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the .npy file for the (80, frames) float32 features (written as named; .npy is added "
                        "only to a name without a suffix)")
    p.add_argument("--png", metavar="FILE.png", help="also write a picture of the spectrogram: time in seconds, "
                                                     "mel bands, a colour bar")
    p.add_argument("--full", action="store_true", help="the whole clip (default: padded/truncated to 6 s, as CLVP)")
    p.add_argument("--no-norms", action="store_true", help="leave out the division by Tortoise's mel norms")
    p.add_argument("--config", metavar="DIR", help="folder with preprocessor_config.json (default: bundled)")
    p.set_defaults(func=_cmd_mel)


def _cmd_mel(args):
    import io
    from pathlib import Path

    import numpy as np

    from pyclvp.audio import load_audio
    from pyclvp.audio.features import ClvpFeatureExtractor
    from pyclvp.io.files import write_atomic
    from pyclvp.png import mel_figure, write_png

    if args.png and Path(args.png).suffix.lower() != ".png":
        raise ValueError(f"--png {args.png}: the picture is a PNG; give a name ending in .png")
    output = Path(args.output)
    added = not output.suffix
    if added:
        output = output.with_name(output.name + ".npy")
    extractor = ClvpFeatureExtractor.from_pretrained(args.config)
    if args.no_norms:
        extractor.mel_norms = None
    audio = _load_clip(args.clip, "clip", lambda p: load_audio(p, extractor.sampling_rate))  # (T,): the whole clip
    max_length = max(len(audio), 1) if args.full else None
    features = extractor(audio, sampling_rate=extractor.sampling_rate, max_length=max_length,
                         return_tensors="np")["input_features"][0]                  # (M, frames)
    buf = io.BytesIO()
    np.save(buf, features)
    write_atomic(output, buf.getvalue())
    rate, seconds = extractor.sampling_rate, len(audio) / extractor.sampling_rate
    print(f"{args.clip}: {seconds:.2f} s -> {output}: {features.shape} float32"
          + (" (.npy added: the name had no suffix)" if added else ""))
    if not args.full:
        fixed = extractor.default_audio_length
        if len(audio) > fixed * rate:
            print(f"cut to the first {fixed:.2f} s of {seconds:.2f} s, as CLVP does (--full keeps it all)")
        elif len(audio) < fixed * rate:
            print(f"padded with silence from {seconds:.2f} s to {fixed:.2f} s, as CLVP does (--full keeps its length)")
    if args.png:
        norms = extractor.mel_norms
        log_mel = features if norms is None else features * np.asarray(norms, dtype=np.float32)[:, None]
        seconds_per_frame = extractor.hop_length / rate
        write_png(args.png, mel_figure(log_mel, seconds_per_frame, title=f"log-mel of {Path(args.clip).name}"))
        print(f"picture: {args.png}")


@command("convert")
def _add_convert(sub):
    p = sub.add_parser("convert", help="a transformers folder with pytorch_model.bin -> model.safetensors (no torch); "
                                       "with --weights int8, any CLVP folder -> its int8 twin")
    p.add_argument("src", help="folder with config.json and pytorch_model.bin (or pytorch_model.bin.index.json + shards); "
                               "with --weights int8, or model.safetensors (or its shards)")
    p.add_argument("-o", "--output", required=True, help="output folder (may be src itself)")
    p.add_argument("--weights", choices=["int8"], help="int8: store the speech decoder's matrices and lm_head in int8 "
                                                       "(a float32 scale per 32 weights; the other tensors as stored)")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args):
    from pyclvp.convert import convert_bin, convert_int8

    if args.weights == "int8":
        n = convert_int8(args.src, args.output)
        print(f"wrote {n['tensors']} tensors to {args.output}/model.safetensors ({n['int8']} matrices in int8, "
              f"each with its scales)")
        return
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
    (in all and per part), stored dtypes, and whether the tensors fit config.json (problems: None or text).
    An int8 matrix (pyclvp/io/q8.py) counts as one tensor of its logical shape; its scales show in the dtypes."""
    import numpy as np

    from pyclvp.config import ClvpConfig
    from pyclvp.io.checkpoints import (CheckpointError, check_folder, check_shapes, find_weight_files, pair_int8,
                                       tensor_headers)
    from pyclvp.model.weights import OPTIONAL, checkpoint_spec

    folder = check_folder(folder)
    files = find_weight_files(folder)
    cfg = ClvpConfig.from_pretrained(folder)
    entries = tensor_headers(files)
    shapes = {name: shape for name, (_, _, shape) in pair_int8(entries).items()}  # an int8 matrix: its logical shape
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    dtypes = {}
    for _, stored, _ in entries.values():
        dtypes[stored] = dtypes.get(stored, 0) + 1
    try:
        check_shapes(shapes, checkpoint_spec(cfg), folder, OPTIONAL)
        problems = None
    except CheckpointError as e:
        problems = str(e)
    return dict(config=cfg, files={f.name: f.stat().st_size for f in files}, tensors=len(shapes),
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


BACKEND_CHOICES = ("auto", "numpy", "cpu", "cuda")  # matches pyclvp/ops/__init__.py BACKEND_CHOICES


def _add_backend_arg(p):
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="auto (the default): cuda when this machine can run it, else cpu, else numpy; "
                        "cpu: the C++ core; cuda: the CUDA core (a GPU); numpy: the readable reference (slow)")


def _add_weights_arg(p):
    p.add_argument("--weights", choices=["int8"],
                   help="int8: the speech decoder's matrices and lm_head in int8 (a float32 scale per 32 weights), "
                        "quantized as they load: ~3.5x fewer bytes per decode step, logits within ~1e-2 (README); "
                        "backends cpu and numpy. A folder from `pyclvp convert --weights int8` is int8 without it")


def _positive(flag: str, value) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be at least 1, got {value}")


def _load_clip(path, flag: str, load=None):
    """load(path) (default: load_voice, a voice clip as Tortoise reads it: first channel, torchaudio's resampler,
    a 6 s window) with the file and the flag that named it in any error."""
    from pathlib import Path

    from pyclvp.audio import load_voice

    label = f"{flag} {path}" if flag.startswith("-") else str(path)
    if Path(path).is_dir():
        raise ValueError(f"{label} is a folder, not a WAV file")
    try:
        return (load or load_voice)(path)
    except OSError as e:
        raise ValueError(f"{label}: {(e.strerror or str(e)).lower()}") from None
    except ValueError as e:
        raise ValueError(f"{label}: {e}") from None


def _name_voices(message: str, paths) -> str:
    """rank's "voice clip 2 of 2 ..." as the file given: "--voice b.wav ..."."""
    def name(m):
        i = int(m.group(1))
        return f"--voice {paths[i - 1]}" if 1 <= i <= len(paths) else m.group(0)
    return re.sub(r"voice clip (\d+) of \d+", name, message)


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
    p.add_argument("--cache-dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16",
                   help="storage of the decoder's KV cache (default bfloat16: half the bytes per step; float32: as "
                        "transformers)")
    _add_backend_arg(p)
    _add_weights_arg(p)
    p.add_argument("--json", action="store_true", help="print the ranking as JSON (with each candidate's speech ids)")


@command("rank")
def _add_rank(sub):
    p = sub.add_parser("rank", help="generate speech-token candidates for a text in a voice, ranked by CLVP")
    p.add_argument("--model", required=True, metavar="DIR", help="folder with config.json and model.safetensors")
    _add_generation_args(p)
    p.add_argument("--top", type=_non_negative_int, default=10, metavar="N",
                   help="rows of the table to print, best first (default 10; 0 for all; --json has all)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the candidates' scores against their lengths")
    p.set_defaults(func=_cmd_rank)


RANK_LEGEND = ("score: CLVP's text-voice match, higher is better; tokens: speech tokens before the stop token; "
               "seconds: tokens / 20 (about 20 tokens a second of speech)")


def _cmd_rank(args):
    import json
    from pathlib import Path

    from pyclvp.io.checkpoints import check_folder
    from pyclvp.model import ClvpModelForConditionalGeneration
    from pyclvp.rank import rank

    if not args.text.strip():
        raise ValueError("the text is empty")
    _positive("--candidates", args.candidates)
    _positive("--max-new-tokens", args.max_new_tokens)
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise ValueError(f"--plot {args.plot}: the picture is a PNG; give a name ending in .png")
    check_folder(args.model)
    clips = [_load_clip(path, "--voice") for path in args.voice]  # (T,) float32 at 22,050 Hz each
    model = ClvpModelForConditionalGeneration.from_pretrained(args.model, backend=args.backend, weights=args.weights)
    count = 16 if args.candidates is None else args.candidates
    kwargs = dict(preset=args.preset) if args.preset else dict(num_candidates=count)
    if args.max_new_tokens is not None:
        kwargs["max_new_tokens"] = args.max_new_tokens
    candidates = rank(model, args.text, clips, seed=args.seed, progress=sys.stderr.isatty(),
                      pad_to=getattr(args, "pad_to", "max_new_tokens"), positions=getattr(args, "positions", "uncached"),
                      cache_dtype=getattr(args, "cache_dtype", "bfloat16"), **kwargs)
    rows = [dict(rank=i + 1, score=round(c.score, 4), tokens=c.length, seconds=round(c.seconds, 2),
                 speech_ids=c.speech_ids.tolist()) for i, c in enumerate(candidates)]
    if args.plot:
        from pyclvp.png import scores_figure, write_png

        write_png(args.plot, scores_figure([r["tokens"] for r in rows], [c.score for c in candidates]))
    if args.json:
        print(json.dumps(dict(text=args.text, voices=args.voice, candidates=rows)))
        return
    shown = rows if args.top == 0 else rows[:args.top]
    print(f"text: {args.text!r}; voice: {', '.join(args.voice)}; backend {model.ops.name}; {len(rows)} candidates, "
          f"best first" + (f" (the top {len(shown)}; --top 0 for all)" if len(shown) < len(rows) else ""))
    print(RANK_LEGEND)
    print(f"{'rank':>4}  {'score':>8}  {'tokens':>6}  {'seconds':>7}")
    for r in shown:
        print(f"{r['rank']:>4}  {r['score']:>8.3f}  {r['tokens']:>6}  {r['seconds']:>7.2f}")
    if args.plot:
        print(f"picture: {args.plot}")


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
    _add_backend_arg(p)
    _add_weights_arg(p)
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
    from pyclvp.io.checkpoints import check_folder
    from pyclvp.io.wav import pcm16, wav_header, write_wav
    from pyclvp.speech.tts import TextToSpeech, memory_estimate

    if not args.text.strip():
        raise ValueError("the text is empty")
    quality = args.decoder == "diffusion"
    _positive("--candidates", args.candidates)
    _positive("--max-new-tokens", args.max_new_tokens)
    if args.stream and (quality or args.candidates not in (None, 1)):
        raise ValueError("--stream speaks one candidate as it is sampled with HiFi-GAN; it cannot rank --candidates "
                         "or run --decoder diffusion")
    if not quality and (args.preset or args.max_memory is not None):
        raise ValueError("--preset and --max-memory go with --decoder diffusion")
    check_folder(args.model)
    # As Tortoise reads them, at 22,050 Hz: the fast path's 6 s window; the whole clips for the quality path, whose
    # diffusion decoder reads up to 102400 samples at 24 kHz (the autoregressive features cut their own 6 s)
    load = (lambda path: load_voice(path, window=None)) if quality else load_voice
    clips = [_load_clip(path, "--voice", load) for path in args.voice]
    tts = TextToSpeech.from_pretrained(args.model, backend=args.backend, weights=args.weights)
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
        tty = sys.stderr.isatty()
        wav = tts.quality(args.text, clips, preset, candidates=args.candidates,
                          progress=_progress_line("decoding", "steps") if tty else None,
                          diffusion_progress=_progress_line("diffusion", "steps") if tty else None, **kwargs).wav[0]
    else:
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
        wav = tts.tts(args.text, clips, candidates=1 if args.candidates is None else args.candidates,
                      progress=sys.stderr.isatty(), **kwargs)
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
    _add_backend_arg(p)
    p.add_argument("--keep", metavar="DIR", help="the folder for the demo model and clip (default: the per-user "
                                                 "cache, $XDG_CACHE_HOME/pyclvp/demo or ~/.cache/pyclvp/demo)")
    p.add_argument("--wav", default="pyclvp-demo.wav", metavar="OUT.wav",
                   help="where to write the demo's audio (default pyclvp-demo.wav)")
    p.set_defaults(func=_cmd_demo)


def demo_cache_folder():
    """Where the demo keeps its model between runs: $XDG_CACHE_HOME/pyclvp/demo, else ~/.cache/pyclvp/demo."""
    import os
    from pathlib import Path

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root) / "pyclvp" / "demo"


DEMO_FILES = ("config.json", "model.safetensors", "hifigan/config.json", "hifigan/model.safetensors", "voice.wav")


def _demo_model(folder, cached: bool):
    """The demo model and clip in `folder`, reused when complete; (folder, clip, reused). The cache is built in a
    sibling temporary folder and renamed into place, so an interrupted run leaves no half model behind."""
    import shutil
    import tempfile
    from pathlib import Path

    from pyclvp.demo import write_random_checkpoint, write_random_hifigan, write_voice_clip

    folder = Path(folder)
    if all((folder / name).is_file() for name in DEMO_FILES):
        return folder, folder / "voice.wav", True
    folder.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent)) if cached else folder
    build.mkdir(parents=True, exist_ok=True)
    try:
        config = write_random_checkpoint(build, seed=0)
        write_random_hifigan(build, config.decoder_config.hidden_size, seed=0)
        write_voice_clip(build / "voice.wav")
        if cached:
            if folder.exists():  # an incomplete cache of ours
                shutil.rmtree(folder)
            build.rename(folder)
    finally:
        if cached and build.exists():
            shutil.rmtree(build)
    return folder, folder / "voice.wav", False


def _cmd_demo(args):
    from pathlib import Path

    from pyclvp.io.wav import write_wav
    from pyclvp.ops import get_ops
    from pyclvp.speech.tts import TextToSpeech

    _positive("--candidates", args.candidates)   # every check before the banner: an error is one line
    _positive("--max-new-tokens", args.max_new_tokens)
    if Path(args.wav).is_dir():
        raise ValueError(f"--wav {args.wav} is a folder; give a file name")
    ops = get_ops(args.backend)                  # `--backend cuda` where CUDA cannot run: one line, here
    print("pyclvp demo: a small CLVP model and HiFi-GAN with seeded RANDOM weights and a synthesized voice clip.\n"
          "The scores are meaningless and the audio is noise; this shows the pipeline: tokenizer -> WAV -> log-mel\n"
          "features -> conditioning -> KV-cached sampling of speech tokens -> CLVP ranking -> latents -> HiFi-GAN.\n"
          "For real weights, see the README.\n")
    folder, clip, reused = _demo_model(args.keep or demo_cache_folder(), cached=args.keep is None)
    print(f"{'reusing' if reused else 'wrote'} the demo model and voice clip in {folder}")
    print(f"$ pyclvp rank --model {folder} --text {DEMO_TEXT!r} --voice {clip} --candidates {args.candidates} "
          f"--max-new-tokens {args.max_new_tokens} --seed 0 --backend {args.backend}")
    rank_args = argparse.Namespace(model=str(folder), text=DEMO_TEXT, voice=[str(clip)], preset=None,
                                   candidates=args.candidates, max_new_tokens=args.max_new_tokens, seed=0,
                                   backend=ops, json=False, top=10, plot=None,
                                   pad_to="max_new_tokens", positions="uncached", weights=None)
    _cmd_rank(rank_args)
    out = Path(args.wav)
    print(f"\nspeaking the best of {args.candidates} new candidates (at least {args.max_new_tokens // 2} tokens) "
          f"with a random HiFi-GAN")
    tts = TextToSpeech.from_pretrained(folder, backend=ops)
    # min_new_tokens: the random model stops at random; a few seconds of its noise show the pipeline better
    wav = tts.tts(DEMO_TEXT, [_load_clip(clip, "clip")], candidates=args.candidates, seed=0,
                  max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens // 2)
    write_wav(out, wav, tts.sampling_rate)
    print(f"wrote {out}: {len(wav) / tts.sampling_rate:.2f} s of noise from random weights (the pipeline runs "
          "end to end; real weights speak)")


# The Python parameter names an error may carry, as the flags the user typed (rank, tts, demo).
FLAG_NAMES = {"num_candidates": "--candidates", "num_return_sequences": "--candidates",
              "max_new_tokens": "--max-new-tokens"}
ERROR_LINES = 6  # an error prints at most this many lines (its first lines, then how many more there were)


def _as_typed(message: str, args) -> str:
    """An error message in the CLI's words: parameter names as flags, voice clips as their files, a few lines."""
    message = re.sub(r"\b(" + "|".join(FLAG_NAMES) + r")\b", lambda m: FLAG_NAMES[m.group(1)], message)
    if getattr(args, "voice", None):
        message = _name_voices(message, args.voice)
    lines = message.splitlines() or [""]
    if len(lines) > ERROR_LINES:
        lines = lines[:ERROR_LINES - 1] + [f"  ... and {len(lines) - ERROR_LINES + 1} more lines"]
    return "\n".join(line if len(line) <= 400 else line[:397] + "..." for line in lines)


def _one_line_warning(prog):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr if file is None else file)
    return show


def main(argv=None) -> int:
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        args.func = _cmd_version
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    prog = f"pyclvp {args.command}" if args.command else "pyclvp"
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning(prog)  # the CLI's own: `import pyclvp` leaves warnings alone
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:  # a few clear lines, no traceback
        print(f"{prog}: error: {_as_typed(str(e), args)}", file=sys.stderr)
        return 2
    except _INPUT_FAILURES as e:  # what a hostile or broken input file can make the readers run into: one line
        print(f"{prog}: error: {_input_failure(e)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown


# Failures an input file can cause beside the readers' ValueError / OSError: nesting deeper than the
# interpreter's stack, a number too big for a float or an index, a size that does not fit in memory.
_INPUT_FAILURES = (RecursionError, OverflowError, MemoryError)


def _input_failure(e: BaseException) -> str:
    """One line for an _INPUT_FAILURES exception."""
    detail = " ".join(str(e).split())[:300]
    if isinstance(e, RecursionError):
        return "an input is nested too deeply to read" + (f" ({detail})" if detail else "")
    if isinstance(e, MemoryError):
        return "out of memory: an input asks for more memory than this machine has" + (f" ({detail})" if detail else "")
    return "a number in an input is too large" + (f" ({detail})" if detail else "")


def _user_errors() -> tuple:
    """The exceptions that are the user's to fix. CudaUnavailableError joins them once its module is loaded:
    it is raised only from there, and importing it up front would load pyclvp._core for every command."""
    cuda_ops = sys.modules.get("pyclvp.ops.cuda_ops")
    return (ValueError, OSError) + ((cuda_ops.CudaUnavailableError,) if cuda_ops else ())


if __name__ == "__main__":
    sys.exit(main())
