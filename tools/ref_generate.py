"""Generation fixtures: reference greedy sequences built with an explicit loop over transformers' modules.

transformers' own generate() adds position 0 to every prompt entry in its first call, which
Tortoise does not, so the reference is built by hand, without a cache, with Tortoise's positions:

    text ids --_pad_extra_bos_eos_tokens(add_bos_token=False)--> the generate-time text (an extra eos)
    cond = conditioning_encoder(features, text)                        (B, P0, C)
    prompt = [cond, input_embeds(start) + position_embeds(0)]          (B, P0 + 1, C), nothing else added
    step k = 1, 2, ...: logits = lm head of decoder(prompt + tokens 1..k-1, each token j embedded as
             input_embeds(t_j) + position_embeds(j + 1)), last position; processed by transformers'
             RepetitionPenaltyLogitsProcessor and MinNewTokensLengthLogitsProcessor over
             [start, t_1, ..., t_{k-1}]; t_k = argmax; a row that has emitted eos emits only eos.

The decoder adds position_embeds_layer(position_ids) to its inputs_embeds. To add *nothing* to the
prompt and exactly position_embeds(j + 1) to token j, the loop swaps in a table with a zero row in
front ([0; W]) and passes index 0 for the prompt and j + 2 for token j (x + 0 is exact in float).

The random tiny models never pick eos on their own, so the *_eos cases add eos_bias to lm_head.bias[eos]
(the test does the same): chosen so that b1_eos's row stops early (generation ends before
max_new_tokens) and exactly one row of b2_eos stops (the other must be undisturbed), with wide
margins on both sides of every decision.

  tests/data/generate/<tiny>.npz, per case c in CASES:
      c_input_ids, c_attention_mask, c_input_features     the inputs
      c_max_new_tokens, c_min_new_tokens, c_repetition_penalty, c_eos_bias
      c_tokens (B, N)                                      generated tokens (no start token)
      c_last_logits (B, V)                                 processed logits of the last step
      c_speech_ids (B, N)                                  fix_speech_decoder_output([start, tokens])
      c_logits_per_text (B, B), c_text_embeds, c_speech_embeds   the scores of generate()'s output
  tests/data/generate/processors.npz                        transformers' logits processors on random
      logits: rep penalty -> temperature -> top-k -> top-p, for several settings (case_<i>_*)
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, TINY_CONFIGS, tiny_model

CASES = {  # name -> batch size, padded last row?, generation settings; eos: pick an eos_bias (see _eos_bias)
    "b1": dict(B=1, pad=False, max_new_tokens=14, min_new_tokens=0, repetition_penalty=1.0),
    "b2pad": dict(B=2, pad=True, max_new_tokens=14, min_new_tokens=3, repetition_penalty=1.0),
    "b1_rep": dict(B=1, pad=False, max_new_tokens=14, min_new_tokens=0, repetition_penalty=2.0),
    "b1_eos": dict(B=1, pad=False, max_new_tokens=14, min_new_tokens=3, repetition_penalty=1.0, eos="early"),
    "b2_eos": dict(B=2, pad=True, max_new_tokens=14, min_new_tokens=2, repetition_penalty=1.0, eos="one row"),
}

PROCESSOR_CASES = [  # (repetition_penalty, temperature, top_k, top_p)
    (1.0, 1.0, None, 1.0),
    (2.0, 1.0, None, 1.0),
    (2.0, 0.8, None, 0.8),
    (1.3, 0.7, 5, 1.0),
    (1.0, 1.5, 7, 0.5),
    (2.0, 0.8, 1, 0.8),
    (1.0, 1.0, None, 0.05),
]


def _np(t):
    return t.detach().cpu().numpy()


def _inputs(rng, case):
    B, T = case["B"], 7
    ids = rng.integers(1, 255, size=(B, T))
    mask = np.ones((B, T), np.int64)
    if case["pad"]:
        ids[-1, 4:] = 0
        mask[-1, 4:] = 0
    feats = rng.standard_normal((B, 80, 20)).astype(np.float32)
    return ids, mask, feats


def _greedy(model, ids, mask, feats, case):
    import torch
    from transformers.generation.logits_process import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor,
                                                        RepetitionPenaltyLogitsProcessor)
    from transformers.models.clvp.modeling_clvp import _pad_extra_bos_eos_tokens

    cfg, dcfg = model.config, model.config.decoder_config
    lm, dec = model.speech_decoder_model, model.speech_decoder_model.model.decoder
    bos, eos = dcfg.bos_token_id, dcfg.eos_token_id
    ids, mask = _pad_extra_bos_eos_tokens(torch.tensor(ids), torch.tensor(mask), add_bos_token=False,
                                          bos_token_id=cfg.text_config.bos_token_id,
                                          eos_token_id=cfg.text_config.eos_token_id)
    cond = model.conditioning_encoder(input_features=torch.tensor(feats), input_ids=ids, attention_mask=mask)
    B = cond.shape[0]
    start = dec.input_embeds_layer(torch.full((B, 1), bos))  # + mel position 0:
    start = start + dec.position_embeds_layer(torch.zeros((B, 1), dtype=torch.long))
    prompt = torch.cat([cond, start], dim=1)  # (B, P, C)

    processors = LogitsProcessorList()
    if case["repetition_penalty"] != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(case["repetition_penalty"]))
    if case["min_new_tokens"] > 0:
        processors.append(MinNewTokensLengthLogitsProcessor(1, case["min_new_tokens"], eos))

    gaps = []  # per step: max logit - eos logit, (B,)
    table, bias = dec.position_embeds_layer, lm.lm_head.bias.data.clone()
    lm.lm_head.bias.data[eos] += case.get("eos_bias", 0.0)
    shifted = torch.nn.Embedding(table.num_embeddings + 1, table.embedding_dim)
    shifted.weight.data = torch.cat([torch.zeros(1, table.embedding_dim), table.weight.data])
    dec.position_embeds_layer = shifted
    try:
        seq = torch.full((B, 1), bos)  # [start, t_1, ...]
        finished = torch.zeros(B, dtype=torch.bool)
        for k in range(1, case["max_new_tokens"] + 1):
            gen = seq[:, 1:]  # (B, k-1)
            embeds = torch.cat([prompt, dec.input_embeds_layer(gen)], dim=1)
            pos = torch.cat([torch.zeros(prompt.shape[:2], dtype=torch.long),
                             (torch.arange(1, k) + 2).expand(B, -1)], dim=1)  # token j -> row j + 2 = position j + 1
            logits = processors(seq, lm(inputs_embeds=embeds, position_ids=pos).logits[:, -1])
            gaps.append(_np(logits.max(-1).values - logits[:, eos]))
            nxt = torch.where(finished, torch.full((B,), eos), logits.argmax(-1))
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            finished |= nxt == eos
            if finished.all():
                break
    finally:
        dec.position_embeds_layer = table
        lm.lm_head.bias.data = bias

    speech_ids = model.fix_speech_decoder_output(seq)
    s = model.speech_encoder_model(input_ids=speech_ids).embeds
    t = model.text_encoder_model(input_ids=ids, attention_mask=mask).embeds
    s, t = s / s.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    return dict(tokens=_np(seq[:, 1:]), last_logits=_np(logits), speech_ids=_np(speech_ids),
                logits_per_text=_np(t @ s.T * model.logit_scale.exp()), text_embeds=_np(t), speech_embeds=_np(s),
                eos_gaps=np.stack(gaps, axis=1))


def _eos_bias(gaps, case):  # gaps (B, N) from a run without bias -> the eos_bias for the case
    g = gaps[:, case["min_new_tokens"]:]  # eos is suppressed before min_new_tokens
    if case["eos"] == "early":  # the single row stops at its smallest gap among the middle steps
        mid = np.sort(g[0, : g.shape[1] - 3])
        return float((mid[0] + mid[1]) / 2)
    lo, hi = np.sort(g.min(axis=1))  # one row, one row only
    return float((lo + hi) / 2)


def _processor_cases(rng):
    import torch
    from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    out = {}
    for i, (rep, temp, top_k, top_p) in enumerate(PROCESSOR_CASES):
        logits = (rng.standard_normal((4, 50)) * 3).astype(np.float32)
        seen = rng.integers(0, 50, size=(4, 6))
        procs = LogitsProcessorList()
        if rep != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(rep))
        if temp != 1.0:
            procs.append(TemperatureLogitsWarper(temp))
        if top_k is not None:
            procs.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))
        got = procs(torch.tensor(seen), torch.tensor(logits))
        out.update({f"case_{i}_logits": logits, f"case_{i}_seen": seen, f"case_{i}_out": _np(got),
                    f"case_{i}_params": np.array([rep, temp, -1 if top_k is None else top_k, top_p])})
    return out


def make(data_dir: Path) -> None:
    import torch

    out = data_dir / "generate"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for name in TINY_CONFIGS:
        model = tiny_model(name)
        rng = np.random.default_rng(100 + sum(map(ord, name)))
        arrays = {}
        for case_name, case in CASES.items():
            ids, mask, feats = _inputs(rng, case)
            with torch.no_grad():
                if "eos" in case:
                    case = dict(case, eos_bias=_eos_bias(_greedy(model, ids, mask, feats, case)["eos_gaps"], case))
                res = _greedy(model, ids, mask, feats, case)
                res.pop("eos_gaps")
            arrays.update({f"{case_name}_input_ids": ids, f"{case_name}_attention_mask": mask,
                           f"{case_name}_input_features": feats})
            arrays.update({f"{case_name}_{k}": np.array(case.get(k, 0.0)) for k in (
                "max_new_tokens", "min_new_tokens", "repetition_penalty", "eos_bias")})
            arrays.update({f"{case_name}_{k}": v for k, v in res.items()})
        np.savez_compressed(out / f"{name}.npz", fixture_version=FIXTURE_VERSION, **arrays)
    np.savez_compressed(out / "processors.npz", fixture_version=FIXTURE_VERSION,
                        **_processor_cases(np.random.default_rng(5)))
