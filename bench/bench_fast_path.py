"""The whole fast path on the CPU: text + voice -> speech tokens -> latents -> HiFi-GAN -> waveform, pyclvp's
TextToSpeech against Tortoise's own api_fast.TextToSpeech in the same run.

    python bench/bench_fast_path.py --torch-python /work/venv-ref/bin/python [--tokens 129] [--threads 1 2] [--rounds 2]

Both sides run the full-size models api_fast builds: UnifiedVoice (layers=30, model_dim=1024, heads=16,
max_mel_tokens=604, max_text_tokens=402, max_conditioning_inputs=2, number_text_tokens=255, start_text_token=255)
with its own seeded random init, and HiFi-GAN (bench/bench_speech.py's seeded weights). The inputs: a fixed
15-id text (Tortoise: a tokenizer stub returning them) and two random (80, 400) conditioning mels given directly
(Tortoise: get_conditioning_latents replaced by get_conditioning on them, as tools/ref_speech.py does; pyclvp: the
mels as features). Sampling is api_fast's (do_sample, top_k 50, top_p 0.8, temperature 0.8, repetition penalty 2),
seeded, and the length is forced: exactly `--tokens` speech tokens (129 = 6 s of 24 kHz audio):
  Tortoise: tts(..., max_generate_length=N, min_new_tokens=N); tts_stream(..., min_new_tokens=N,
            stopping_criteria=[stop after N new tokens]) (its max_length=500 cannot be passed)
  pyclvp:   tts(..., min_new_tokens=N, max_new_tokens=N); tts_stream(... the same)
The token count, latent count and sample count are checked on both sides.

Tortoise runs with kv_cache=True (api_fast's TextToSpeech defaults to kv_cache=False, which reruns the whole
sequence every step; pyclvp's default positions="cached" is the KV-cached path). Tortoise's
`Tensor.to("cuda")` in HifiganGenerator.inference is made a no-op (as in bench_speech.py); nothing else changes.

Work the two sides do differently: pyclvp's tts() with one candidate still runs CLVP on it (model.candidates ->
score: text and speech encoders of the CLVP folder, here a small random CLVP, 2 layers of width 64: negligible);
api_fast never runs CLVP. The split reported: conditioning (get_conditioning / rank.conditioning), generation
(inference_speech / model.candidates minus score), clvp (pyclvp only), latents (UnifiedVoice.forward(return_latent)
/ speech_latents), vocoder (HifiganGenerator.inference / Hifigan.inference).

Each timed figure is one call in a fresh process after a short warm-up (a tts of 8 tokens); the two sides alternate,
`--rounds` times per thread count, and the medians are reported. Weights are written once into
bench/checkpoints/fast_path/ (gitignored): autoregressive.pth by torch, then converted by pyclvp into
pyclvp/ (config.json, model.safetensors, hifigan/); the HiFi-GAN comes from bench/checkpoints/speech/
(bench_speech.py writes it).
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

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "checkpoints" / "fast_path"
SPEECH = ROOT / "bench" / "checkpoints" / "speech"
SDIST = Path(os.environ.get("TORTOISE_SDIST", "/work/tortoise_sdist/tortoise-tts-3.0.0"))
TEXT_IDS = [14, 3, 27, 41, 9, 33, 2, 58, 17, 6, 45, 21, 88, 120, 7]  # 15 ids inside number_text_tokens=255
CLIPS, FRAMES = 2, 400
API_AR = dict(max_mel_tokens=604, max_text_tokens=402, max_conditioning_inputs=2, layers=30, model_dim=1024,
              heads=16, number_text_tokens=255, start_text_token=255, checkpointing=False,
              train_solo_embeddings=False)  # tortoise/api_fast.py TextToSpeech.__init__

# Both workers' (and bench_quality_path.py's) split of the time: timed(obj, "f", key) wraps obj.f so that its calls
# add their wall time to spent[key].
TIMED = r'''
import time
spent = {}
def timed(obj, name, key):
    fn = getattr(obj, name)
    def wrapper(*a, **k):
        t = time.perf_counter(); r = fn(*a, **k); spent[key] = spent.get(key, 0.0) + time.perf_counter() - t; return r
    setattr(obj, name, wrapper)
'''

TORCH_WORKER = TIMED + r'''
import json, sys, time
import numpy as np
import torch
root, sdist, mode = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, root + "/tools")
import os; os.environ["TORTOISE_SDIST"] = sdist
from ref_speech import _import_api_fast, _text_to_speech
from ref_torch_pickle import _ar_state_dict
api_fast = _import_api_fast()
cfg = json.loads(sys.argv[4])
if mode == "write":
    torch.manual_seed(0)
    ar = api_fast.UnifiedVoice(**cfg["ar"]).eval()
    torch.save(_ar_state_dict(ar), cfg["pth"])
    print(json.dumps(dict(params=sum(p.numel() for p in ar.parameters()))))
    sys.exit()
from transformers import StoppingCriteria, StoppingCriteriaList
torch.set_num_threads(cfg["threads"])
torch.Tensor.to = (lambda to: lambda self, *a, **k: self if a[:1] == ("cuda",) else to(self, *a, **k))(torch.Tensor.to)
t0 = time.perf_counter()
ar = api_fast.UnifiedVoice(**cfg["ar"]).eval()
ar.load_state_dict(torch.load(cfg["pth"]), strict=False)  # as TextToSpeech.__init__
ar.post_init_gpt2_config(kv_cache=True)
hifi = api_fast.HifiganGenerator(**cfg["hifigan"]).eval()
hifi.load_state_dict(torch.load(cfg["hifidecoder"]), strict=False)
load_s = time.perf_counter() - t0
rng = np.random.default_rng(5)
mels = rng.standard_normal((cfg["clips"], 80, cfg["frames"]), dtype=np.float32)
clips = [torch.from_numpy(m)[None] for m in mels]  # (1, 80, frames) each: format_conditioning's output
def auto_latent_of(voice_samples):
    return ar.get_conditioning(torch.stack(voice_samples, dim=1))  # (1, C)
tts = _text_to_speech(api_fast, ar, hifi, auto_latent_of)
tts.tokenizer.ids = cfg["ids"]
timed(ar, "get_conditioning", "conditioning"); timed(ar, "inference_speech", "generation")
timed(ar, "forward", "latents"); timed(hifi, "inference", "vocoder")
counted = []
gen_fn = ar.get_generator
def counting(*a, **k):
    for item in gen_fn(*a, **k):
        counted.append(item); yield item
ar.get_generator = counting
class StopAfter(StoppingCriteria):
    def __init__(self, n): self.n, self.start = n, None
    def __call__(self, input_ids, scores, **kw):
        self.start = self.start or input_ids.shape[-1] - 1  # the prompt's length at the first call
        return input_ids.shape[-1] - self.start >= self.n
def run_tts(n):
    spent.clear()
    t = time.perf_counter()
    with torch.no_grad():
        wav = tts.tts("unused", voice_samples=clips, verbose=False, use_deterministic_seed=0,
                      max_generate_length=n, min_new_tokens=n)
    total = time.perf_counter() - t
    return total, dict(spent), int(wav.shape[-1])
def run_stream(n):
    spent.clear(); counted.clear()
    t = time.perf_counter(); first = None; samples = 0; chunks = 0
    for chunk in tts.tts_stream("unused", voice_samples=clips, verbose=False, use_deterministic_seed=0,
                                min_new_tokens=n, stopping_criteria=StoppingCriteriaList([StopAfter(n)])):
        first = first or time.perf_counter() - t; samples += int(chunk.shape[-1]); chunks += 1
    return time.perf_counter() - t, first, samples, chunks, len(counted), dict(spent)
run_tts(8)  # warm-up
gen_codes = []
inf = ar.inference_speech
def keep(*a, **k):
    r = inf(*a, **k); gen_codes.append(int(r.shape[-1])); return r
ar.inference_speech = keep
total, split, samples = run_tts(cfg["tokens"])
s_total, s_first, s_samples, s_chunks, s_tokens, s_split = run_stream(cfg["tokens"])
print(json.dumps(dict(side="torch", load_s=load_s, tts_s=total, split=split, samples=samples, tokens=gen_codes[-1],
                      stream_s=s_total, first_chunk_s=s_first, stream_samples=s_samples, stream_chunks=s_chunks,
                      stream_tokens=s_tokens, stream_split=s_split)))
'''

PYCLVP_WORKER = TIMED + r'''
import json, sys, time
import numpy as np
import pyclvp.speech.tts as tts_mod
from pyclvp.speech.tts import TextToSpeech
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
tts = TextToSpeech.from_pretrained(cfg["folder"], backend="cpu")
load_s = time.perf_counter() - t0
rng = np.random.default_rng(5)
voice = rng.standard_normal((cfg["clips"], 80, cfg["frames"]), dtype=np.float32)  # features, as the torch side's
ids = np.array(cfg["ids"], dtype=np.int64)
timed(tts_mod, "conditioning", "conditioning"); timed(tts.model, "candidates", "generation")
timed(tts.model, "score", "clvp"); timed(tts.model.decoder_ref, "speech_latents", "latents")
timed(tts.hifigan, "inference", "vocoder")
def run_tts(n):
    spent.clear()
    t = time.perf_counter()
    wav = tts.tts(ids, voice, min_new_tokens=n, max_new_tokens=n, seed=0)
    total = time.perf_counter() - t
    split = dict(spent)
    split["generation"] = split["generation"] - split.get("clvp", 0.0)  # candidates = sampling + CLVP's score
    return total, split, int(wav.shape[-1])
lat, streamed = [], []
sl, source = tts.model.decoder_ref.speech_latents, tts_mod.stream
def keep(*a, **k):
    r = sl(*a, **k); lat.append(int(r.shape[1])); return r
def counted(*a, **k):  # the stream's tokens (each with its latent from the generation)
    for item in source(*a, **k):
        streamed.append(item); yield item
run_tts(8)  # warm-up
tts.model.decoder_ref.speech_latents, tts_mod.stream = keep, counted
total, split, samples = run_tts(cfg["tokens"])
tokens = lat[-1]
spent.clear()
t = time.perf_counter(); first = None; s_samples = 0; chunks = 0
for chunk in tts.tts_stream(ids, voice, min_new_tokens=cfg["tokens"], max_new_tokens=cfg["tokens"], seed=0):
    first = first or time.perf_counter() - t; s_samples += int(chunk.shape[-1]); chunks += 1
s_total = time.perf_counter() - t
print(json.dumps(dict(side="pyclvp", load_s=load_s, tts_s=total, split=split, samples=samples, tokens=tokens,
                      stream_s=s_total, first_chunk_s=first, stream_samples=s_samples, stream_chunks=chunks,
                      stream_tokens=len(streamed), stream_split=dict(spent))))
'''


def _run(cmd, env=None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"{cmd[0]} failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


HIFIGAN = dict(in_channels=1024, out_channels=1, resblock_type="1", resblock_dilation_sizes=[[1, 3, 5]] * 3,
               resblock_kernel_sizes=[3, 7, 11], upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=512,
               upsample_factors=[8, 8, 2, 2], cond_channels=1024)  # tortoise/api_fast.py, as bench_speech.py


def prepare(torch_python: str) -> dict:
    """bench/checkpoints/fast_path/{autoregressive.pth, pyclvp/}: written and converted once."""
    import numpy as np

    OUT.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_speech

    bench_speech.prepare(torch_python)  # speech/hifidecoder.pth and speech/hifigan/, if missing
    pth, folder = OUT / "autoregressive.pth", OUT / "pyclvp"
    if not pth.is_file():
        t = time.perf_counter()
        r = _run([torch_python, "-c", TORCH_WORKER, str(ROOT), str(SDIST), "write", json.dumps(dict(ar=API_AR, pth=str(pth)))])
        print(f"# wrote {pth} ({r['params'] / 1e6:.1f}M parameters) in {time.perf_counter() - t:.0f} s", flush=True)
    if not (folder / "model.safetensors").is_file():
        t = time.perf_counter()
        sys.path.insert(0, str(ROOT))
        from pyclvp.config import ClvpConfig
        from pyclvp.convert import convert_autoregressive_weights, convert_clvp_weights, tortoise_config
        from pyclvp.io import torch_pickle
        from pyclvp.io.safetensors import save_file

        ar = torch_pickle.load(pth)
        # the tests' tiny CLVP (2-4 layers, width 64), its text table redrawn to the autoregressive model's
        # 256 text ids and its speech table to the 8194 speech codes (random codes may be any of them)
        clvp = dict(torch_pickle.load(ROOT / "tests" / "data" / "torch_pickle" / "tortoise" / "clvp2.pth"))
        rng = np.random.default_rng(3)
        clvp["text_emb.weight"] = rng.standard_normal((ar["text_embedding.weight"].shape[0], 64), np.float32) * 0.1
        clvp["speech_emb.weight"] = rng.standard_normal((ar["mel_embedding.weight"].shape[0], 64), np.float32) * 0.1
        folder.mkdir(exist_ok=True)
        heads = API_AR["heads"]
        save_file(dict(convert_clvp_weights(clvp), **convert_autoregressive_weights(ar, heads)),
                  str(folder / "model.safetensors"))
        ClvpConfig.from_dict(tortoise_config(ar, clvp, heads)).save_pretrained(folder)
        print(f"# converted into {folder} in {time.perf_counter() - t:.0f} s", flush=True)
    link = folder / "hifigan"
    if not link.exists():
        link.symlink_to(SPEECH / "hifigan")
    return dict(pth=str(pth), folder=str(folder), hifigan=HIFIGAN, hifidecoder=str(SPEECH / "hifidecoder.pth"))


def bench(torch_python: str, tokens: int, threads: list, rounds: int, first: str = "torch") -> list:
    paths = prepare(torch_python)
    common = dict(tokens=tokens, ids=TEXT_IDS, clips=CLIPS, frames=FRAMES)
    rows = []
    for n in threads:
        env = dict(os.environ, PYCLVP_NUM_THREADS=str(n), OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
        runs = {"torch": [], "pyclvp": []}
        for r in range(rounds):
            order = ["torch", "pyclvp"] if (r % 2 == 0) == (first == "torch") else ["pyclvp", "torch"]
            for side in order:
                load = os.getloadavg()[0]
                if side == "torch":
                    cfg = dict(common, ar=API_AR, pth=paths["pth"], hifigan=paths["hifigan"],
                               hifidecoder=paths["hifidecoder"], threads=n)
                    res = _run([torch_python, "-c", TORCH_WORKER, str(ROOT), str(SDIST), "time", json.dumps(cfg)], env)
                else:
                    res = _run([sys.executable, "-c", PYCLVP_WORKER, json.dumps(dict(common, folder=paths["folder"]))], env)
                res.update(threads=n, round=r, load1=load)
                print(json.dumps(res), flush=True)
                runs[side].append(res)
        rows.append(summary(n, tokens, runs))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(n: int, tokens: int, runs: dict) -> dict:
    med = lambda side, key: statistics.median(r[key] for r in runs[side])  # noqa: E731
    t, o = runs["torch"], runs["pyclvp"]
    for side, rs in runs.items():
        for r in rs:
            assert r["tokens"] == tokens and r["stream_tokens"] == tokens, (side, r["tokens"], r["stream_tokens"])
    samples = o[0]["samples"]
    assert all(r["samples"] == samples for r in t + o), [r["samples"] for r in t + o]
    audio = samples / 24000
    row = dict(threads=n, tokens=tokens, audio_s=round(audio, 3), rounds=len(t))
    for key in ("tts_s", "stream_s", "first_chunk_s"):
        tm, om = med("torch", key), med("pyclvp", key)
        row[key] = dict(torch=round(tm, 2), pyclvp=round(om, 2), ratio=round(tm / om, 3))
    row["rtf"] = dict(torch=round(row["tts_s"]["torch"] / audio, 3), pyclvp=round(row["tts_s"]["pyclvp"] / audio, 3))
    row["split"] = {side: {k: round(statistics.median(r["split"].get(k, 0.0) for r in rs), 2)
                           for k in ("conditioning", "generation", "clvp", "latents", "vocoder")}
                    for side, rs in runs.items()}
    row["stream_samples"] = {side: rs[0]["stream_samples"] for side, rs in runs.items()}
    row["load1"] = [round(r["load1"], 1) for r in t + o]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-python", required=True, help="an interpreter with torch and Tortoise 3.0.0's dependencies "
                   "(transformers 4.31.0: tools/tortoise_env.sh)")
    p.add_argument("--tokens", type=int, default=129, help="speech tokens forced on both sides (default 129 = 6 s)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    p.add_argument("--rounds", type=int, default=2, help="processes per side and thread count, alternating")
    p.add_argument("--first", choices=["torch", "pyclvp"], default="torch", help="the side that starts each round pair")
    args = p.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename} {os.cpu_count()} CPUs, "
          f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    bench(args.torch_python, args.tokens, args.threads, args.rounds, args.first)
    print(f"# done {time.strftime('%H:%M')}, load {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
