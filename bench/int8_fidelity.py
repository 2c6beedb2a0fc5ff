"""What weights="int8" costs in fidelity against float32 (the README's figures), on the C++ CPU backend.

    python bench/int8_fidelity.py [--checkpoint DIR] [--steps 200] [--json out.json]

Default checkpoint: bench/make_checkpoint.py's full-size float32 one (random weights); tests/data/tiny_a is the
fixture. Both models load from the same folder (int8: quantized at load). The prompt is a 40-token text (fewer when
the config's text positions are fewer) and 6 s of random mel features (517 frames); N = --steps, capped by the
config's mel positions.
  logits  float32's greedy tokens (end-of-sequence masked) teacher-force both models: max and mean |logit error|
          over the prefill and the N steps, beside the largest |logit|
  greedy  each model's own greedy tokens over N steps: how many agree, and the first step where they differ
  rank    Tortoise's ultra_fast sampling (16 candidates, temperature 0.8, top_p 0.8, repetition penalty 2.0,
          seed 0, N tokens, model.generate): the candidates each model samples (how many are identical to
          float32's), and float32's 16 candidates scored by both models: CLVP score error and whether their order
          changes. (The encoders stay float32 under weights="int8": equal candidates score equal.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyclvp.model import ClvpModelForConditionalGeneration  # noqa: E402


def forced(dec, prompt, tokens):  # prefill + a step per token (N,) -> logits (N + 1, V)
    state = dec.new_state(1, prompt.shape[1] + len(tokens))
    out = [dec.prefill(prompt, None, state)[0]]
    for k, t in enumerate(tokens):
        out.append(dec.step(np.array([t]), np.array([k + 2]), state)[0])
    return np.stack(out)


def greedy(dec, prompt, n, eos):  # own greedy tokens (n,)
    state = dec.new_state(1, prompt.shape[1] + n)
    logits, tokens = dec.prefill(prompt, None, state), []
    for k in range(n):
        logits[:, eos] = -np.inf
        tokens.append(int(logits.argmax(-1)[0]))
        logits = dec.step(np.array(tokens[-1:]), np.array([k + 2]), state)
    return np.array(tokens)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "bench" / "checkpoints" / "clvp-default-float32")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    f32 = ClvpModelForConditionalGeneration.from_pretrained(args.checkpoint, backend="cpu")
    t_f32 = time.perf_counter() - t
    t = time.perf_counter()
    q8 = ClvpModelForConditionalGeneration.from_pretrained(args.checkpoint, backend="cpu", weights="int8")
    t_q8 = time.perf_counter() - t
    d = f32.config.decoder_config
    text_len = min(40, d.max_text_tokens - 3)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, min(255, f32.config.text_config.vocab_size), size=(1, text_len))
    mel = rng.standard_normal((1, d.feature_size, 517)).astype(np.float32)
    prompt = f32.decoder_prompt(f32.conditioning_encoder(mel, ids))  # (1, P, C); the conditioning encoder is float32
    n = min(args.steps, d.max_position_embeddings - 3)
    out = dict(checkpoint=str(args.checkpoint), steps=n, load_s=dict(float32=t_f32, int8=t_q8))

    want_tokens = greedy(f32.decoder, prompt, n, d.eos_token_id)
    want = forced(f32.decoder, prompt, want_tokens)
    err = np.abs(forced(q8.decoder, prompt, want_tokens) - want)
    out["logits"] = dict(max_err=float(err.max()), mean_err=float(err.mean()), max_abs_logit=float(np.abs(want).max()))
    got_tokens = greedy(q8.decoder, prompt, n, d.eos_token_id)
    differ = np.flatnonzero(got_tokens != want_tokens)
    out["greedy"] = dict(agree=int((got_tokens == want_tokens).sum()), of=n,
                         first_difference=int(differ[0]) + 1 if differ.size else None)

    kw = dict(num_return_sequences=16, do_sample=True, temperature=0.8, top_p=0.8, repetition_penalty=2.0,
              max_new_tokens=n, seed=0)
    a, b = f32.generate(ids, mel, **kw), q8.generate(ids, mel, **kw)
    same = [bool(np.array_equal(x, y)) for x, y in zip(a.speech_ids, b.speech_ids)]
    s_f32 = a.logits_per_text[0]  # (16,) float32's scores of its candidates
    s_q8 = q8.similarity(q8.text_encoder(*q8.generation_text(ids)), q8.speech_encoder_output(a.speech_ids))
    s_q8 = s_q8.logits_per_text[0]  # the int8 model's scores of the same candidates
    out["rank"] = dict(identical_candidates=int(sum(same)), of=16,
                       score_err_same_candidates=float(np.abs(s_q8 - s_f32).max()),
                       order_changed=bool((np.argsort(-s_q8, kind="stable") != np.argsort(-s_f32, kind="stable")).any()),
                       best_f32=int(np.argmax(s_f32)), best_int8_own=int(np.argmax(b.logits_per_text[0])),
                       scores_f32=s_f32.round(4).tolist(), scores_int8_own=b.logits_per_text[0].round(4).tolist())
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
