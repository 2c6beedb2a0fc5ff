"""Model fixtures: every CLVP module's output from transformers, on the tiny checkpoints.

  tests/data/model/<tiny>.npz          inputs and outputs for tiny_a and tiny_b (float32 / int64):
      input_ids, attention_mask (2, 7)     a batch whose second row is padded
      input_features (2, 80, 20)           two clips; ids_1 (1, 5) / features_1 (1, 80, 16): single ones
      pad_ids, pad_mask                    _pad_extra_bos_eos_tokens(input_ids, attention_mask) (bos + eos)
      pad_gen_ids, pad_gen_mask            the same with add_bos_token=False (what generate() does)
      cond, cond_1text_2clips, cond_2texts_1clip   ClvpConditioningEncoder, with the repeat rules
      dec_mask (2, 10)                     a decoder attention mask with a padded first key
      dec_hidden[_nomask]                  ClvpDecoder last_hidden_state on inputs_embeds=cond
      dec_logits_head[_nomask]             ClvpForCausalLM logits[..., :300] (all of tiny_b's vocab)
      dec_logits_last[_nomask]             logits at the last position, full vocab
      text_{last_hidden,pooled,embeds}     text encoder on (input_ids, attention_mask)
      text1_{...}                          text encoder on ids_1, no mask
      speech_ids, speech_mask (2, 12)      speech encoder inputs; speech_{...} / speech_nomask_{...} outputs
      fix_in (5, 10), fix_out (5, 9)       fix_speech_decoder_output on crafted eos placements
      fwd_*                                forward(input_ids, input_features, attention_mask, return_loss=True)
  tests/data/model/micro_bf16/         a micro model saved by save_pretrained in bfloat16, sharded
  tests/data/model/micro_fp16/         the same model in float16, one file
  tests/data/model/micro.npz           forward() of transformers' float32 model loaded from each of them
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ref_common import FIXTURE_VERSION, TINY_CONFIGS, tiny_model

# A model small enough to store twice (bf16 + fp16) as a loading fixture: ~100 KB per copy.
MICRO_CONFIG = dict(
    text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
                     num_attention_heads=1, summary_type="mean", bos_token_id=63),
    speech_config=dict(vocab_size=40, hidden_size=32, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
                       num_attention_heads=1, summary_type="last", bos_token_id=38, eos_token_id=39),
    decoder_config=dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, n_inner=24,
                        num_mel_attn_blocks=1, max_position_embeddings=24, max_text_tokens=16,
                        bos_token_id=38, eos_token_id=39, decoder_fixing_codes=[3, 4, 4, 5]),
    projection_dim=16,
)


def _np(t):
    return t.detach().cpu().numpy()


def _inputs(rng, cfg):
    ids = rng.integers(1, min(cfg.text_config.vocab_size, 255), size=(2, 7))  # 0 is the pad/eos id
    mask = np.ones((2, 7), np.int64)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    return dict(
        input_ids=ids, attention_mask=mask,
        input_features=rng.standard_normal((2, 80, 20)).astype(np.float32),
        ids_1=rng.integers(1, 255, size=(1, 5)),
        features_1=rng.standard_normal((1, 80, 16)).astype(np.float32),
    )


def _fix_cases(cfg):
    eos, T = cfg.decoder_config.eos_token_id, 10
    x = np.arange(5 * T).reshape(5, T) % 37 + 1
    x[0, 4] = eos  # an eos in the middle ...
    x[0, 7] = eos  # ... and another after it
    x[1, 8] = eos  # an eos among the last three positions
    x[2, 1] = eos  # an eos right after the dropped first token
    # row 3: no eos at all
    x[4, 0] = eos  # an eos in the dropped first column only
    return x


def _encoder_outputs(out, prefix):
    return {f"{prefix}_last_hidden": _np(out.last_hidden_state), f"{prefix}_pooled": _np(out.pooler_output),
            f"{prefix}_embeds": _np(out.embeds)}


def _decoder_outputs(model, cond, mask, suffix):
    import torch

    dec = model.speech_decoder_model
    mask = None if mask is None else torch.tensor(mask)
    hidden = dec.model(inputs_embeds=cond, attention_mask=mask).last_hidden_state
    logits = dec(inputs_embeds=cond, attention_mask=mask).logits
    return {f"dec_hidden{suffix}": _np(hidden), f"dec_logits_head{suffix}": _np(logits[..., :300]),
            f"dec_logits_last{suffix}": _np(logits[:, -1])}


def _model_case(name):
    import torch
    from transformers.models.clvp.modeling_clvp import _pad_extra_bos_eos_tokens

    model = tiny_model(name)
    cfg = model.config
    rng = np.random.default_rng(sum(map(ord, name)))
    x = _inputs(rng, cfg)
    T = {k: torch.tensor(v) for k, v in x.items()}
    out = dict(x)
    tc = cfg.text_config
    with torch.no_grad():
        ids, mask = _pad_extra_bos_eos_tokens(T["input_ids"], T["attention_mask"], bos_token_id=tc.bos_token_id,
                                              eos_token_id=tc.eos_token_id)
        out.update(pad_ids=_np(ids), pad_mask=_np(mask))
        ids, mask = _pad_extra_bos_eos_tokens(T["input_ids"], T["attention_mask"], add_bos_token=False,
                                              bos_token_id=tc.bos_token_id, eos_token_id=tc.eos_token_id)
        out.update(pad_gen_ids=_np(ids), pad_gen_mask=_np(mask))

        ce = model.conditioning_encoder
        cond = ce(input_features=T["input_features"], input_ids=T["input_ids"], attention_mask=T["attention_mask"])
        out["cond"] = _np(cond)
        out["cond_1text_2clips"] = _np(ce(input_features=T["input_features"], input_ids=T["ids_1"]))
        out["cond_2texts_1clip"] = _np(ce(input_features=T["features_1"], input_ids=T["input_ids"],
                                          attention_mask=T["attention_mask"]))

        dec_mask = np.ones(cond.shape[:2], np.int64)
        dec_mask[1, 0] = 0  # query 0 of row 1 sees no key at all (a uniform row, as in transformers)
        dec_mask[0, 3] = 0
        out["dec_mask"] = dec_mask
        out.update(_decoder_outputs(model, cond, dec_mask, ""))
        out.update(_decoder_outputs(model, cond, None, "_nomask"))

        out.update(_encoder_outputs(model.text_encoder_model(input_ids=T["input_ids"],
                                                             attention_mask=T["attention_mask"]), "text"))
        out.update(_encoder_outputs(model.text_encoder_model(input_ids=T["ids_1"]), "text1"))
        speech_ids = rng.integers(0, cfg.speech_config.vocab_size, size=(2, 12))
        speech_mask = np.ones((2, 12), np.int64)
        speech_mask[0, 9:] = 0
        out.update(speech_ids=speech_ids, speech_mask=speech_mask)
        out.update(_encoder_outputs(model.speech_encoder_model(input_ids=torch.tensor(speech_ids),
                                                               attention_mask=torch.tensor(speech_mask)), "speech"))
        out.update(_encoder_outputs(model.speech_encoder_model(input_ids=torch.tensor(speech_ids)), "speech_nomask"))

        fix_in = _fix_cases(cfg)
        out.update(fix_in=fix_in, fix_out=_np(model.fix_speech_decoder_output(torch.tensor(fix_in))))

        logits = model.speech_decoder_model(inputs_embeds=cond).logits
        out["fwd_speech_ids"] = _np(model.fix_speech_decoder_output(logits.argmax(2)))
        out.update(_forward_outputs(model, T["input_ids"], T["input_features"], T["attention_mask"]))
    return out


def _forward_outputs(model, input_ids, input_features, attention_mask):
    f = model(input_ids=input_ids, input_features=input_features, attention_mask=attention_mask, return_loss=True)
    return dict(fwd_logits_per_text=_np(f.logits_per_text), fwd_logits_per_speech=_np(f.logits_per_speech),
                fwd_text_embeds=_np(f.text_embeds), fwd_speech_embeds=_np(f.speech_embeds), fwd_loss=_np(f.loss),
                fwd_text_pooled=_np(f.text_model_output), fwd_speech_pooled=_np(f.speech_model_output))


def _micro(out: Path):
    """The micro model in bf16 (sharded) and fp16, and transformers' float32 forward on each reload."""
    import torch
    from transformers import ClvpConfig, ClvpModelForConditionalGeneration

    torch.manual_seed(0)
    model = ClvpModelForConditionalGeneration(ClvpConfig(**MICRO_CONFIG)).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key != "logit_scale":
                p.normal_(0.0, 0.2).add_(1.0 if p.ndim == 1 and "norm" in key and key.endswith("weight") else 0.0)
    rng = np.random.default_rng(7)
    ids = torch.tensor(rng.integers(1, 63, size=(2, 4)))
    feats = torch.tensor(rng.standard_normal((2, 80, 12)).astype(np.float32))
    arrays = dict(input_ids=_np(ids), input_features=_np(feats))
    for dtype, folder, shard in ((torch.bfloat16, "micro_bf16", "40KB"), (torch.float16, "micro_fp16", "50GB")):
        model.to(dtype).save_pretrained(out / folder, max_shard_size=shard)
        (out / folder / "generation_config.json").unlink(missing_ok=True)
        reloaded = ClvpModelForConditionalGeneration.from_pretrained(out / folder, dtype=torch.float32).eval()
        with torch.no_grad():
            f = reloaded(input_ids=ids, input_features=feats)
        tag = folder.split("_")[1]
        arrays[f"{tag}_logits_per_text"] = _np(f.logits_per_text)
        arrays[f"{tag}_text_embeds"] = _np(f.text_embeds)
        arrays[f"{tag}_speech_embeds"] = _np(f.speech_embeds)
    model.float()
    files = sorted(p.name for p in (out / "micro_bf16").iterdir())
    assert any(n.endswith(".index.json") for n in files), f"bf16 micro checkpoint is not sharded: {files}"
    np.savez(out / "micro.npz", fixture_version=FIXTURE_VERSION, **arrays)


def make(data_dir: Path) -> None:
    out = data_dir / "model"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for name in TINY_CONFIGS:
        arrays = _model_case(name)
        np.savez_compressed(out / f"{name}.npz", fixture_version=FIXTURE_VERSION, **arrays)
    _micro(out)
