"""The whole quality path on the CPU: text + voice -> 16 candidates -> CLVP ranking -> latents -> diffusion (30
steps) -> UnivNet -> waveform, pyclvp's TextToSpeech.tts_with_preset("ultra_fast") against Tortoise 3.0.0's own
tortoise/api.py TextToSpeech.tts_with_preset("ultra_fast") in the same run; and, with --presets, pyclvp's cost
per preset (pyclvp only).

    python bench/bench_quality_path.py --torch-python /work/venv-ref/bin/python [--tokens 129] [--threads 2]
        [--rounds 1] [--first torch]
    python bench/bench_quality_path.py --torch-python /work/venv-ref/bin/python --presets ultra_fast fast \\
        [--preset-tokens 32]

Both sides run the full-size models api.py builds, with seeded random weights (no released weights here):
  autoregressive  UnifiedVoice(layers=30, model_dim=1024, heads=16, max_mel_tokens=604, max_text_tokens=402,
                  max_conditioning_inputs=2, number_text_tokens=255, start_text_token=255): torch's own init
                  under torch.manual_seed(0), the file bench_fast_path.py writes (bench/checkpoints/fast_path/
                  autoregressive.pth; written here with its code if missing)
  clvp            CLVP(dim_text=768, dim_speech=768, dim_latent=768, num_text_tokens=256, text_enc_depth=20,
                  text_seq_len=350, text_heads=12, num_speech_tokens=8192, speech_enc_depth=20, speech_heads=12,
                  speech_seq_len=430, use_xformers=True): torch's own init under torch.manual_seed(0)
  diffusion       DiffusionTts(model_channels=1024, num_layers=10, in_channels=100, out_channels=200,
                  in_latent_channels=1024, in_tokens=8193, num_heads=16, ...): bench_diffusion.py's weights
                  (pyclvp.speech.diffusion.random_weights, seed 0) over torch's init for the keys they lack
  vocoder         UnivNetGenerator() (api.py: its defaults): tools/ref_univnet.py --full's weights (seed 40,
                  weight norm kept, under "model_g" as the released vocoder.pth)
written once by torch into the gitignored bench/checkpoints/quality_path/ and converted for pyclvp by
`pyclvp convert-tortoise --autoregressive --clvp --diffusion --vocoder` into bench/checkpoints/quality_path/pyclvp/.

Tortoise is built as tools/ref_quality.py builds it (torchaudio's resample and MelSpectrogram, librosa's mel and
pad_center: line-for-line stand-ins; TextToSpeech made with __new__ and given the models as __init__ loads them:
strict=False for the autoregressive model, eval(inference=True) for the vocoder; a tokenizer stub returning the 15
ids; enable_redaction False; autoregressive_batch_size 16, i.e. one batch). It runs with kv_cache=True: api.py's
default kv_cache=False reruns the whole sequence at every generated token (quadratic, not measured here); pyclvp
always decodes KV-cached (its default positions="uncached" reproduces kv_cache=False's numbers at the same cost).

The inputs: two real voice clips (third_party/tortoise/voices mol/1.wav and emma/1.wav, 22.05 kHz int16 / 32768,
the same float32 arrays on both sides: Tortoise computes the conditioning mels from them itself), 15 fixed text ids.
The length is forced: exactly `--tokens` speech tokens per candidate on both sides (129 = 6 s of speech):
  Tortoise: tts_with_preset(..., max_mel_tokens=N, min_new_tokens=N) (inference_speech's max_length is the prompt
            + max_generate_length = max_mel_tokens; min_new_tokens goes through **hf_generate_kwargs)
  pyclvp:   tts_with_preset(..., min_new_tokens=N, max_new_tokens=N)
so no candidate stops, fix_autoregressive_output leaves the codes as they are, and unless 9 calm tokens (83) come
in a row the latents are N long: T = N * 4 * 24000 // 22050 mel frames, 256 T samples (129 -> 561 -> 143,616).
The candidates' count (16 for ultra_fast), the latent count and the sample count are checked on both sides, and
that each waveform is finite.

The split: conditioning (get_conditioning_latents: both conditioning encoders and the univnet mels /
rank.conditioning + diffusion_conditioning_mels + DiffusionTts.get_conditioning), generation (inference_speech /
decoding.decode, all candidates), clvp (CLVP.forward / model.score), latents (UnifiedVoice.forward(return_latent) /
speech_latents), diffusion (do_spectrogram_diffusion / sampler.spectrogram_diffusion, timestep_independent
included), vocoder (UnivNetGenerator.inference / UnivNet.inference). Also each worker's CPU seconds (user + system,
its threads together) over the timed call and its peak RSS: with the machine shared, CPU s / wall s says how much of
the `--threads` cores the process got.

Each timed figure is one tts_with_preset call in a fresh process after a short warm-up (a call of 8 tokens and 2
diffusion steps; it also pages in pyclvp's lazily mapped weights); the two sides alternate, `--rounds` times.

--presets P...: pyclvp alone, one fresh process per preset, on `--preset-tokens` tokens (default 32: the full
presets on 6 s of speech would take hours on 2 shared cores): every figure a measured run of the preset's
candidates and steps (cond_free: two passes per step, run as one batch of 2).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_fast_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "bench" / "checkpoints"
OUT = CKPT / "quality_path"
AR_PTH = CKPT / "fast_path" / "autoregressive.pth"  # bench_fast_path.py's
SDIST = Path(os.environ.get("TORTOISE_SDIST", "/work/tortoise_sdist/tortoise-tts-3.0.0"))
VOICES = ROOT / "third_party" / "tortoise" / "voices"
CLIPS = ["mol/1.wav", "emma/1.wav"]
TEXT_IDS = bench_fast_path.TEXT_IDS
API_CLVP = dict(dim_text=768, dim_speech=768, dim_latent=768, num_text_tokens=256, text_enc_depth=20,
                text_seq_len=350, text_heads=12, num_speech_tokens=8192, speech_enc_depth=20, speech_heads=12,
                speech_seq_len=430, use_xformers=True)  # tortoise/api.py TextToSpeech.__init__
API_DIFFUSION = dict(model_channels=1024, num_layers=10, in_channels=100, out_channels=200, in_latent_channels=1024,
                     in_tokens=8193, dropout=0, use_fp16=False, num_heads=16, layer_drop=0,
                     unconditioned_percentage=0)  # tortoise/api.py TextToSpeech.__init__
PRESETS = ["ultra_fast", "fast", "standard", "high_quality"]
WARMUP = dict(tokens=8, steps=2)
SPLIT = ("conditioning", "generation", "clvp", "latents", "diffusion", "vocoder")

COMMON = bench_fast_path.TIMED + r'''
import json, os, resource, sys, time, wave
import numpy as np
def read_clips(voices, names):  # 22.05 kHz int16 -> float32 / 32768, as tortoise.utils.audio.load_audio
    out = []
    for name in names:
        with wave.open(os.path.join(voices, name)) as w:
            assert w.getframerate() == 22050 and w.getsampwidth() == 2 and w.getnchannels() == 1, name
            out.append(np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768)
    return out
def cpu_s():
    t = os.times(); return t.user + t.system
def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
'''

TORCH_WORKER = COMMON + r'''
import torch
root, sdist, mode = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = json.loads(sys.argv[4])
sys.path.insert(0, root + "/tools"); sys.path.insert(0, root)
os.environ["TORTOISE_SDIST"] = sdist
from ref_quality import _import_api
api = _import_api()
if mode == "write":
    torch.manual_seed(0)
    clvp = api.CLVP(**cfg["clvp"]).eval()
    torch.save(clvp.state_dict(), cfg["clvp_pth"])
    from pyclvp.speech.diffusion import DiffusionConfig, random_weights
    torch.manual_seed(0)
    diffusion = api.DiffusionTts(**cfg["diffusion"]).eval()
    sd = diffusion.state_dict()
    drawn = random_weights(DiffusionConfig(), 0)  # bench_diffusion.py's weights
    for k, v in drawn.items():
        assert k in sd and tuple(sd[k].shape) == v.shape, k
        sd[k] = torch.from_numpy(np.ascontiguousarray(v))
    diffusion.load_state_dict(sd)
    torch.save(diffusion.state_dict(), cfg["diffusion_pth"])
    from ref_univnet import UNIVNET_FULL, _generator, _import_vocoder
    gen = _generator(_import_vocoder(), UNIVNET_FULL, None, seed=40)  # tools/ref_univnet.py --full's weights
    torch.save({"model_g": gen.state_dict()}, cfg["vocoder_pth"])
    count = lambda m: sum(p.numel() for p in m.parameters())
    print(json.dumps(dict(clvp=count(clvp), diffusion=count(diffusion), drawn=len(drawn), sd=len(sd),
                          vocoder=count(gen))))
    sys.exit()
torch.set_num_threads(cfg["threads"])
t0 = time.perf_counter()
ar = api.UnifiedVoice(**cfg["ar"]).cpu().eval()  # as TextToSpeech.__init__
ar.load_state_dict(torch.load(cfg["ar_pth"]), strict=False)
ar.post_init_gpt2_config(use_deepspeed=False, kv_cache=True, half=False)
diffusion = api.DiffusionTts(**cfg["diffusion"]).cpu().eval()
diffusion.load_state_dict(torch.load(cfg["diffusion_pth"]))
clvp = api.CLVP(**cfg["clvp"]).cpu().eval()
clvp.load_state_dict(torch.load(cfg["clvp_pth"]))
vocoder = api.UnivNetGenerator().cpu()
vocoder.load_state_dict(torch.load(cfg["vocoder_pth"], map_location=torch.device("cpu"))["model_g"])
vocoder.eval(inference=True)
class TokenizerStub:
    def encode(self, text): return list(cfg["ids"])
tts = api.TextToSpeech.__new__(api.TextToSpeech)
tts.device, tts.half, tts.enable_redaction = torch.device("cpu"), False, False
tts.autoregressive_batch_size = min(16, cfg["candidates"])
tts.tokenizer, tts.models_dir = TokenizerStub(), None
tts.autoregressive, tts.diffusion, tts.clvp, tts.cvvp, tts.vocoder = ar, diffusion, clvp, None, vocoder
tts.rlg_auto = tts.rlg_diffusion = None
load_s = time.perf_counter() - t0
clips = [torch.from_numpy(c)[None] for c in read_clips(cfg["voices"], cfg["clips"])]  # (1, T) each
timed(tts, "get_conditioning_latents", "conditioning"); timed(ar, "inference_speech", "generation")
timed(clvp, "forward", "clvp"); timed(ar, "forward", "latents")
timed(api, "do_spectrogram_diffusion", "diffusion"); timed(vocoder, "inference", "vocoder")
seen = {}
inf, dsd = ar.inference_speech, api.do_spectrogram_diffusion
def keep_codes(*a, **k):
    r = inf(*a, **k); seen.setdefault("codes", []).append(tuple(r.shape)); return r
def keep_latents(model, diffuser, latents, *a, **k):
    seen["latents"] = int(latents.shape[1]); seen["steps"] = len(diffuser.use_timesteps)
    seen["cond_free"] = bool(diffuser.conditioning_free); return dsd(model, diffuser, latents, *a, **k)
ar.inference_speech, api.do_spectrogram_diffusion = keep_codes, keep_latents
def run(n, steps):
    spent.clear(); seen.clear()
    kw = dict(diffusion_iterations=steps) if steps else {}
    kw["num_autoregressive_samples"] = cfg["candidates"]  # the preset's unless --candidates
    c, t = cpu_s(), time.perf_counter()
    with torch.no_grad():
        wav = tts.tts_with_preset("unused", preset=cfg["preset"], voice_samples=clips, verbose=False,
                                  use_deterministic_seed=0, max_mel_tokens=n, min_new_tokens=n, **kw)
    return time.perf_counter() - t, cpu_s() - c, wav.numpy().reshape(-1)
run(cfg["warmup"]["tokens"], cfg["warmup"]["steps"])
total, cpu, wav = run(cfg["tokens"], cfg["steps"])
print(json.dumps(dict(side="torch", load_s=load_s, total_s=total, cpu_s=cpu, split=dict(spent), samples=int(wav.size),
                      finite=bool(np.isfinite(wav).all()), candidates=sum(s[0] for s in seen["codes"]),
                      tokens=sorted({s[1] for s in seen["codes"]}), latents=seen["latents"], steps=seen["steps"],
                      cond_free=seen["cond_free"], peak_rss_gb=peak_rss_gb())))
'''

PYCLVP_WORKER = COMMON + r'''
import pyclvp.speech.tts as tts_mod
from pyclvp.speech.tts import TextToSpeech
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
tts = TextToSpeech.from_pretrained(cfg["folder"], backend=cfg["backend"])
load_s = time.perf_counter() - t0
clips = read_clips(cfg["voices"], cfg["clips"])
ids = np.array(cfg["ids"], dtype=np.int64)
timed(tts_mod, "conditioning", "conditioning"); timed(tts_mod, "diffusion_conditioning_mels", "conditioning")
timed(tts.diffusion, "get_conditioning", "conditioning"); timed(tts_mod, "decode", "generation")
timed(tts.model, "score", "clvp"); timed(tts.model.decoder_ref, "speech_latents", "latents")
timed(tts_mod, "spectrogram_diffusion", "diffusion"); timed(tts.univnet, "inference", "vocoder")
def run(n, steps):
    spent.clear()
    kw = dict(diffusion_steps=steps) if steps else {}
    kw["candidates"] = cfg["candidates"]  # the preset's unless --candidates
    c, t = cpu_s(), time.perf_counter()
    res = tts.quality(ids, clips, cfg["preset"], seed=0, min_new_tokens=n, max_new_tokens=n, **kw)
    return time.perf_counter() - t, cpu_s() - c, res
run(cfg["warmup"]["tokens"], cfg["warmup"]["steps"])
total, cpu, res = run(cfg["tokens"], cfg["steps"])
wav = res.wav[0]
print(json.dumps(dict(side="pyclvp", preset=cfg["preset"], load_s=load_s, total_s=total, cpu_s=cpu, split=dict(spent),
                      samples=int(wav.size), finite=bool(np.isfinite(wav).all()), candidates=int(res.tokens.shape[0]),
                      tokens=sorted({int(res.tokens.shape[1])}), latents=int(res.trimmed[0].shape[1]),
                      mel_frames=int(res.mel[0].shape[-1]), peak_rss_gb=peak_rss_gb(),
                      wav_rms=float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))))))
'''


_run = bench_fast_path._run  # a worker process: its last stdout line as JSON, or its stderr and exit


def prepare(torch_python: str) -> dict:
    """bench/checkpoints/quality_path/{clvp2.pth, diffusion_decoder.pth, vocoder.pth, pyclvp/}: written once."""

    OUT.mkdir(parents=True, exist_ok=True)
    paths = dict(ar_pth=str(AR_PTH), clvp_pth=str(OUT / "clvp2.pth"), diffusion_pth=str(OUT / "diffusion_decoder.pth"),
                 vocoder_pth=str(OUT / "vocoder.pth"))
    if not AR_PTH.is_file():  # bench_fast_path.prepare's first step, without its conversion
        AR_PTH.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        r = _run([torch_python, "-c", bench_fast_path.TORCH_WORKER, str(ROOT), str(SDIST), "write",
                  json.dumps(dict(ar=bench_fast_path.API_AR, pth=str(AR_PTH)))])
        print(f"# wrote {AR_PTH} ({r['params'] / 1e6:.1f}M parameters) in {time.perf_counter() - t:.0f} s", flush=True)
    if not all(Path(paths[k]).is_file() for k in ("clvp_pth", "diffusion_pth", "vocoder_pth")):
        t = time.perf_counter()
        r = _run([torch_python, "-c", TORCH_WORKER, str(ROOT), str(SDIST), "write",
                  json.dumps(dict(paths, clvp=API_CLVP, diffusion=API_DIFFUSION))])
        print(f"# wrote {OUT}: CLVP {r['clvp'] / 1e6:.1f}M, DiffusionTts {r['diffusion'] / 1e6:.1f}M "
              f"({r['drawn']} of {r['sd']} tensors drawn by random_weights), UnivNet {r['vocoder'] / 1e6:.1f}M "
              f"parameters in {time.perf_counter() - t:.0f} s", flush=True)
    folder = OUT / "pyclvp"
    if not all((folder / sub / "model.safetensors").is_file() for sub in (".", "diffusion", "univnet")):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pyclvp", "convert-tortoise", "--autoregressive", paths["ar_pth"],
                        "--clvp", paths["clvp_pth"], "--diffusion", paths["diffusion_pth"], "--vocoder",
                        paths["vocoder_pth"], "--decoder-heads", "16", "-o", str(folder)], check=True)
        print(f"# converted into {folder} in {time.perf_counter() - t:.0f} s", flush=True)
    return dict(paths, folder=str(folder))


def _env(n: int) -> dict:
    return dict(os.environ, PYCLVP_NUM_THREADS=str(n), OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n),
                OPENBLAS_NUM_THREADS=str(n))


def _common(tokens: int, steps, candidates: int, preset: str = "ultra_fast") -> dict:
    return dict(tokens=tokens, steps=steps, candidates=candidates, preset=preset, ids=TEXT_IDS, voices=str(VOICES),
                clips=CLIPS, warmup=WARMUP)


def _pyclvp(paths: dict, common: dict, n: int, backend: str) -> dict:
    return _run([sys.executable, "-c", PYCLVP_WORKER, json.dumps(dict(common, folder=paths["folder"],
                                                                      backend=backend))], _env(n))


def expected(tokens: int) -> tuple:  # (latents, mel frames, samples) when no candidate stops and nothing is trimmed
    frames = tokens * 4 * 24000 // 22050
    return tokens, frames, 256 * frames


def bench(torch_python: str, tokens: int, steps, candidates: int, n: int, rounds: int, first: str,
          backend: str) -> dict:
    paths = prepare(torch_python)
    common = _common(tokens, steps, candidates)
    runs = {"torch": [], "pyclvp": []}
    for r in range(rounds):
        order = ["torch", "pyclvp"] if (r % 2 == 0) == (first == "torch") else ["pyclvp", "torch"]
        for side in order:
            load = os.getloadavg()
            if side == "torch":
                cfg = dict(common, ar=bench_ar(), clvp=API_CLVP, diffusion=API_DIFFUSION, threads=n, **paths)
                res = _run([torch_python, "-c", TORCH_WORKER, str(ROOT), str(SDIST), "time", json.dumps(cfg)], _env(n))
            else:
                res = _pyclvp(paths, common, n, backend)
            res.update(threads=n, round=r, load_before=load, load_after=os.getloadavg())
            print(json.dumps(res), flush=True)
            runs[side].append(res)
    row = summary(n, tokens, candidates, runs)
    print(json.dumps(row), flush=True)
    return row


def bench_ar() -> dict:

    return bench_fast_path.API_AR  # = tortoise/api.py's UnifiedVoice arguments


def summary(n: int, tokens: int, candidates: int, runs: dict) -> dict:
    latents, frames, samples = expected(tokens)
    for side, rs in runs.items():
        for r in rs:
            assert r["candidates"] == candidates and r["tokens"] == [tokens], (side, r["candidates"], r["tokens"])
            assert r["latents"] == latents and r["samples"] == samples and r["finite"], (side, r)
    audio = samples / 24000
    med = lambda side, key: statistics.median(r[key] for r in runs[side])  # noqa: E731
    row = dict(threads=n, tokens=tokens, candidates=candidates, samples=samples, audio_s=round(audio, 3),
               rounds=len(runs["torch"]))
    tm, om = med("torch", "total_s"), med("pyclvp", "total_s")
    row["total_s"] = dict(torch=round(tm, 1), pyclvp=round(om, 1), ratio=round(tm / om, 3))
    row["s_per_s"] = dict(torch=round(tm / audio, 2), pyclvp=round(om / audio, 2))
    row["cpu_s"] = {side: round(med(side, "cpu_s"), 1) for side in runs}
    row["split"] = {side: {k: round(statistics.median(r["split"].get(k, 0.0) for r in rs), 2) for k in SPLIT}
                    for side, rs in runs.items()}
    row["load"] = {side: [[round(x, 2) for x in r["load_before"]] + ["->"] + [round(x, 2) for x in r["load_after"]]
                          for r in rs] for side, rs in runs.items()}
    return row


def presets(torch_python: str, names: list, tokens: int, n: int, backend: str) -> list:
    paths = prepare(torch_python)
    rows = []
    for name in names:
        load = os.getloadavg()
        res = _pyclvp(paths, _common(tokens, None, PRESET_CANDIDATES[name], name), n, backend)
        latents, frames, samples = expected(tokens)
        assert res["candidates"] == PRESET_CANDIDATES[name] and res["tokens"] == [tokens], res
        assert res["latents"] == latents and res["samples"] == samples and res["finite"], res
        audio = res["samples"] / 24000
        res.update(threads=n, load_before=load, load_after=os.getloadavg(), audio_s=round(audio, 3),
                   s_per_s=round(res["total_s"] / audio, 2))
        print(json.dumps(res), flush=True)
        rows.append(res)
    return rows


PRESET_CANDIDATES = {"ultra_fast": 16, "fast": 96, "standard": 256, "high_quality": 256}  # tts_with_preset's


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-python", required=True, help="an interpreter with torch and Tortoise 3.0.0's dependencies "
                   "(transformers 4.31.0: tools/tortoise_env.sh); it also writes the weights")
    p.add_argument("--tokens", type=int, default=129, help="speech tokens per candidate, both sides (default 129 = 6 s)")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the preset's, 30); for quick "
                   "development runs only")
    p.add_argument("--candidates", type=int, default=16, help="candidates (default: ultra_fast's 16); for quick "
                   "development runs only")
    p.add_argument("--threads", type=int, default=2, help="threads on both sides (default 2)")
    p.add_argument("--rounds", type=int, default=1, help="processes per side, alternating (default 1)")
    p.add_argument("--first", choices=["torch", "pyclvp"], default="torch", help="the side that starts each round pair")
    p.add_argument("--backend", default="cpu", help="pyclvp's backend (default cpu)")
    p.add_argument("--presets", nargs="+", choices=PRESETS, help="pyclvp only: time these presets instead")
    p.add_argument("--preset-tokens", type=int, default=32, help="speech tokens for --presets (default 32 = 1.5 s)")
    args = p.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename} {os.cpu_count()} CPUs, "
          f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    if args.presets:
        presets(args.torch_python, args.presets, args.preset_tokens, args.threads, args.backend)
    else:
        bench(args.torch_python, args.tokens, args.steps, args.candidates, args.threads, args.rounds, args.first,
              args.backend)
    print(f"# done {time.strftime('%Y-%m-%d %H:%M')}, load {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
