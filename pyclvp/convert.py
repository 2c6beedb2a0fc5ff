"""Checkpoint conversions into transformers' CLVP layout (config.json + model.safetensors), without torch.

    convert_bin(src, out)                   a transformers folder saved as pytorch_model.bin (or shards)
    convert_tortoise(ar, clvp, out)         Tortoise's autoregressive.pth (UnifiedVoice) + clvp2.pth (CLVP)
    convert_hifigan(pth, out)               Tortoise's hifidecoder.pth (HifiganGenerator) -> out/hifigan/
    convert_univnet(pth, out)               Tortoise's vocoder.pth (UnivNetGenerator) -> out/univnet/
    convert_diffusion(pth, out)             Tortoise's diffusion_decoder.pth (DiffusionTts) -> out/diffusion/
    convert_int8(src, out)                  any CLVP folder -> the same with the decoder's matrices in int8

Both read the PyTorch pickles with pyclvp.io.torch_pickle (allow-listed, nothing executed) and write with
pyclvp.io.safetensors. The result loads in pyclvp and in transformers' ClvpModelForConditionalGeneration.

The Tortoise mapping is transformers' own (ref: transformers/models/clvp/convert_clvp_to_hf.py,
convert_encoder_weights and convert_decoder_weights), key for key:

CLVP (clvp2.pth) -> text_encoder_model / speech_encoder_model / logit_scale:
  - x-transformers alternates blocks: attn_layers.layers.{2i} is layer i's attention and
    layers.{2i+1} its feed-forward; both become layers.{i}. Each block's pre-norm `.0.0.g` becomes
    input_rmsnorm.weight (even block) or post_attention_rmsnorm.weight (odd block).
  - then the ordered substring renames of CLVP_ENCODERS_MAPPING (to_q -> q_proj, net.0 -> fc1, ...).
UnifiedVoice (autoregressive.pth) -> conditioning_encoder / speech_decoder_model:
  - GPT-2's fused c_attn is a Conv1D, weight (C, 3C): transposed to Linear's (3C, C), then split
    into q_proj, k_proj, v_proj; the bias (3C,) is split the same way. c_proj is transposed into out_proj.
  - the conditioning encoder's qkv is a Conv1d, weight (3C, C, 1). Tortoise's QKVAttentionLegacy
    splits heads *before* q/k/v, so its 3C rows are laid out (H, [q, k, v], D): q is the first D
    rows of every head, k the second, v the third. The script writes this de-interleave out with
    `unfold` for C=1024, H=16; here it is one reshape, valid for any C and H.
  - proj_out (C, C, 1) loses its last axis and becomes out_proj.
  - attn.bias / attn.masked_bias (old GPT-2 mask buffers) and text_head (unused by CLVP) are dropped.
  - then the ordered substring renames of CLVP_DECODER_MAPPING (gpt.h -> ...decoder.layers, ...).

HifiganGenerator (hifidecoder.pth) -> hifigan/{config.json, model.safetensors}, the same names:
  - weight normalization is folded: every `X.weight_g` (O, 1, 1) and `X.weight_v` (O, ...) become
    X.weight = g * v / |v|, the norm over every axis but the first (torch.nn.utils.weight_norm, dim=0);
  - tensors the generator does not use are dropped (Tortoise loads the file with strict=False); a
    missing one is an error. Strides are not in the weights: the config is api_fast.py's unless given.

UnivNetGenerator (vocoder.pth) -> univnet/{config.json, model.safetensors}, the same names: the file is a dict whose
"model_g" holds the generator's state dict (Tortoise loads torch.load(...)["model_g"]); weight norm is folded as
above (the ConvTranspose1d's too: dim=0 is its input channels, and the fold's norm is over every axis but the first).

DiffusionTts (diffusion_decoder.pth) -> diffusion/{config.json, model.safetensors}, the same names:
  - the token path (code_embedding, code_converter), which Tortoise's api never runs (it conditions on
    latents), is dropped; every tensor of diffusion_spec must be there. The config is read off the shapes
    (the head count from the relative position tables, (32, heads)) unless given.

The config is read off the tensor shapes (sizes, layer counts, vocabularies). Two things shapes do
not show: the CLVP encoders' head count comes from x-transformers' fixed head size of 64, and the
decoder's from Tortoise's recommended model_dim // 64 (16 for the released model), overridable.
"""
from __future__ import annotations

import os
import re
import shutil

import numpy as np

from .config import ClvpConfig
from .io import torch_pickle
from .io.checkpoints import CheckpointError, check_shapes, load_bin_folder
from .io.half import Bf16Array
from .io.q8 import METADATA_KEY, SCALE_SUFFIX, Q8Matrix
from .io.safetensors import save_file
from .model.weights import load_checkpoint
from .speech.diffusion import DiffusionConfig, diffusion_spec
from .speech.hifigan import HifiganConfig, hifigan_spec
from .speech.univnet import UnivNetConfig, univnet_spec

__all__ = ["convert_bin", "convert_tortoise", "convert_clvp_weights", "convert_autoregressive_weights",
           "tortoise_config", "convert_hifigan", "convert_univnet", "convert_diffusion", "diffusion_config",
           "fold_weight_norm", "CLVP_ENCODERS_MAPPING", "CLVP_DECODER_MAPPING"]

SAFE_WEIGHTS_NAME = "model.safetensors"
XTRANSFORMERS_DIM_HEAD = 64  # x-transformers' DEFAULT_DIM_HEAD: Tortoise's CLVP never changes it

# Ordered (old, new) substring renames, applied in this order to every key (ref: convert_clvp_to_hf.py).
CLVP_ENCODERS_MAPPING = (
    ("text_transformer.transformer.attn_layers", "text_encoder_model"),
    ("speech_transformer.transformer.attn_layers", "speech_encoder_model"),
    ("text_transformer.transformer.norm", "text_encoder_model.final_layer_norm"),
    ("speech_transformer.transformer.norm", "speech_encoder_model.final_layer_norm"),
    ("to_text_latent", "text_encoder_model.projection"),
    ("to_speech_latent", "speech_encoder_model.projection"),
    ("text_emb", "text_encoder_model.token_embedding"),
    ("speech_emb", "speech_encoder_model.token_embedding"),
    ("1.wrap.net.0", "mlp.fc1"),
    ("1.wrap.net.3", "mlp.fc2"),
    ("1.wrap", "self_attn"),
    ("to_out", "out_proj"),
    ("to_q", "q_proj"),
    ("to_k", "k_proj"),
    ("to_v", "v_proj"),
    ("temperature", "logit_scale"),
)
CLVP_DECODER_MAPPING = (
    ("conditioning_encoder.init", "conditioning_encoder.mel_conv"),
    ("conditioning_encoder.attn", "conditioning_encoder.mel_attn_blocks"),
    ("mel_attn_blocks", "group_norms"),
    (".norm.weight", ".weight"),
    (".norm.bias", ".bias"),
    ("text_embedding", "conditioning_encoder.text_token_embedding"),
    ("text_pos_embedding.emb", "conditioning_encoder.text_position_embedding"),
    ("final_norm", "speech_decoder_model.final_norm"),
    ("mel_head", "speech_decoder_model.lm_head"),
    ("gpt.ln_f", "speech_decoder_model.model.decoder.layer_norm"),
    ("mel_embedding", "speech_decoder_model.model.decoder.input_embeds_layer"),
    ("mel_pos_embedding.emb", "speech_decoder_model.model.decoder.position_embeds_layer"),
    ("gpt.h", "speech_decoder_model.model.decoder.layers"),
    ("ln_1", "input_layernorm"),
    ("ln_2", "post_attention_layernorm"),
)
_CONVERTED_PREFIXES = ("text_encoder_model.", "speech_encoder_model.", "conditioning_encoder.",
                       "speech_decoder_model.", "logit_scale")
_XT_BLOCK = re.compile(r"^((?:text|speech)_transformer\.transformer\.attn_layers\.layers)\.(\d+)\.(.+)$")
_GPT_ATTN = re.compile(r"^gpt\.h\.(\d+)\.attn\.(c_attn|c_proj|bias|masked_bias)(?:\.(weight|bias))?$")
_COND_ATTN = re.compile(r"^conditioning_encoder\.attn\.(\d+)\.(qkv|proj_out)\.(weight|bias)$")


def _rename(key: str, table) -> str:
    for old, new in table:
        key = key.replace(old, new)
    return key


def _check_all_mapped(converted: dict, source: str) -> dict:
    stray = sorted(k for k in converted if not k.startswith(_CONVERTED_PREFIXES))
    if stray:
        raise ValueError(f"{source}: parameters that are not part of Tortoise's model: {stray[:10]}"
                         f"{' ...' if len(stray) > 10 else ''}")
    return converted


# ----------------------------------------------------------------------------------------------
# CLVP (clvp2.pth) -> the text and speech encoders (ref: convert_clvp_to_hf.py, convert_encoder_weights)


def convert_clvp_weights(clvp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tortoise CLVP state_dict -> transformers names; tensors are passed through unchanged."""
    out = {}
    for key in sorted(clvp):
        block = _XT_BLOCK.match(key)
        new = key
        if block:  # layers.{2i}.* (attention) and layers.{2i+1}.* (feed-forward) -> layers.{i}.*
            prefix, index, rest = block.group(1), int(block.group(2)), block.group(3)
            if rest == "0.0.g":
                rest = "input_rmsnorm.weight" if index % 2 == 0 else "post_attention_rmsnorm.weight"
            new = f"{prefix}.{index // 2}.{rest}"
        out[_rename(new, CLVP_ENCODERS_MAPPING)] = clvp[key]
    return _check_all_mapped(out, "clvp checkpoint")


# ----------------------------------------------------------------------------------------------
# UnifiedVoice (autoregressive.pth) -> conditioning encoder + decoder (ref: convert_decoder_weights)


def _split_gpt_attention(w, layer: int, attr: str) -> dict:
    """c_attn Conv1D weight (C, 3C) or bias (3C,) -> q/k/v_proj Linear weights (C, C) or biases (C,)."""
    if attr == "weight":
        w = w.T  # (C, 3C) -> (3C, C)
    q, k, v = np.split(w, 3, axis=0)  # 3 x (C, C) or 3 x (C,)
    base = f"speech_decoder_model.model.decoder.layers.{layer}.attn"
    return {f"{base}.q_proj.{attr}": q, f"{base}.k_proj.{attr}": k, f"{base}.v_proj.{attr}": v}


def _split_legacy_qkv(w, block: int, attr: str, heads: int) -> dict:
    """qkv Conv1d weight (3C, C, 1) or bias (3C,), rows laid out (H, 3, D) -> q/k/v_proj (C, C) or (C,)."""
    if attr == "weight":
        w = w[..., 0]  # (3C, C, 1) -> (3C, C)
    rows = w.shape[0]
    if rows % (3 * heads):
        raise ValueError(f"conditioning_encoder.attn.{block}.qkv has {rows} rows, not a multiple of 3 x {heads} heads")
    per_head = w.reshape(heads, 3, rows // (3 * heads), *w.shape[1:])  # (H, 3, D[, C])
    q, k, v = (per_head[:, i].reshape(rows // 3, *w.shape[1:]) for i in range(3))  # (H, D[, C]) -> (C[, C])
    base = f"conditioning_encoder.mel_attn_blocks.{block}"
    return {f"{base}.q_proj.{attr}": q, f"{base}.k_proj.{attr}": k, f"{base}.v_proj.{attr}": v}


def convert_autoregressive_weights(ar: dict[str, np.ndarray], heads: int) -> dict[str, np.ndarray]:
    """Tortoise UnifiedVoice state_dict -> transformers names. `heads` is the model's head count."""
    out = {}
    for key in sorted(ar):
        gpt, cond = _GPT_ATTN.match(key), _COND_ATTN.match(key)
        if key.startswith("text_head.") or (gpt and gpt.group(2) in ("bias", "masked_bias")):
            continue  # GPT-2's causal-mask buffers and the text head: not part of CLVP
        if gpt and gpt.group(2) == "c_attn":
            out.update(_split_gpt_attention(ar[key], int(gpt.group(1)), gpt.group(3)))
        elif gpt:  # c_proj: Conv1D (C, C) -> Linear (C, C) is a transpose (a no-op for the bias)
            out[f"speech_decoder_model.model.decoder.layers.{gpt.group(1)}.attn.out_proj.{gpt.group(3)}"] = ar[key].T
        elif cond and cond.group(2) == "qkv":
            out.update(_split_legacy_qkv(ar[key], int(cond.group(1)), cond.group(3), heads))
        elif cond:  # proj_out: Conv1d (C, C, 1) -> Linear (C, C)
            value = ar[key][..., 0] if cond.group(3) == "weight" else ar[key]
            out[f"conditioning_encoder.mel_attn_blocks.{cond.group(1)}.out_proj.{cond.group(3)}"] = value
        else:
            out[_rename(key, CLVP_DECODER_MAPPING)] = ar[key]
    return _check_all_mapped(out, "autoregressive checkpoint")


# ----------------------------------------------------------------------------------------------
# The config, read off the shapes


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if found != set(range(len(found))):
        raise ValueError(f"layer indices {sorted(found)} of {pattern!r} are not 0..n-1")
    return len(found)


def _need(sd: dict, key: str, source: str) -> np.ndarray:
    if key not in sd:
        raise ValueError(f"{source} has no {key!r}: not a Tortoise checkpoint of the expected kind")
    return sd[key]


def _encoder_config(clvp: dict, side: str, bos: int, eos: int) -> dict:
    """text or speech encoder config from CLVP's tensors (ref: tortoise/models/clvp.py, CLVP.__init__)."""
    emb = _need(clvp, f"{side}_emb.weight", "clvp checkpoint")  # (V, C)
    layers = f"{side}_transformer.transformer.attn_layers.layers"
    blocks = _count(clvp, rf"^{re.escape(layers)}\.(\d+)\.")
    if blocks % 2:
        raise ValueError(f"{side} transformer has {blocks} blocks: expected attention/feed-forward pairs")
    hidden = emb.shape[1]
    inner = _need(clvp, f"{layers}.0.1.wrap.to_q.weight", "clvp checkpoint").shape[0]  # (H * 64, C)
    if inner != hidden:
        raise ValueError(f"{side} attention is {inner} wide but the model is {hidden}: transformers' CLVP "
                         "needs heads x 64 == hidden size")
    heads = inner // XTRANSFORMERS_DIM_HEAD
    projection_dim = _need(clvp, f"to_{side}_latent.weight", "clvp checkpoint").shape[0]
    inv_freq = clvp.get(f"{layers[:-len('.layers')]}.rotary_pos_emb.inv_freq")
    rotary = max(projection_dim // (heads * 2), 32)  # transformers' ClvpRotaryPositionalEmbedding
    if inv_freq is not None and inv_freq.shape[0] * 2 != rotary:
        raise ValueError(f"{side} rotary dimension {inv_freq.shape[0] * 2} cannot be expressed in transformers' "
                         f"CLVP config (it would be {rotary})")
    return dict(vocab_size=emb.shape[0], hidden_size=hidden, num_hidden_layers=blocks // 2,
                num_attention_heads=heads, projection_dim=projection_dim,
                intermediate_size=_need(clvp, f"{layers}.1.1.wrap.net.3.weight", "clvp checkpoint").shape[1],
                use_attention_bias=f"{layers}.0.1.wrap.to_q.bias" in clvp, bos_token_id=bos, eos_token_id=eos,
                rms_norm_style="tortoise")  # x-transformers' RMSNorm, not transformers' ClvpRMSNorm


def tortoise_config(ar: dict, clvp: dict, decoder_heads: int | None = None) -> dict:
    """transformers ClvpConfig dict for a Tortoise UnifiedVoice + CLVP pair (ref: tortoise/api.py)."""
    mel_emb = _need(ar, "mel_embedding.weight", "autoregressive checkpoint")  # (V, C)
    vocab, hidden = mel_emb.shape
    heads = decoder_heads or hidden // XTRANSFORMERS_DIM_HEAD
    if heads <= 0 or hidden % heads:
        hint = "" if decoder_heads else f" (model_dim // {XTRANSFORMERS_DIM_HEAD}); pass decoder_heads (--decoder-heads)"
        raise ValueError(f"decoder hidden size {hidden} does not split into {heads} heads{hint}")
    text_vocab = _need(ar, "text_embedding.weight", "autoregressive checkpoint").shape[0]
    if text_vocab != _need(clvp, "text_emb.weight", "clvp checkpoint").shape[0]:
        raise ValueError(f"the autoregressive text vocabulary ({text_vocab}) and CLVP's "
                         f"({clvp['text_emb.weight'].shape[0]}) differ; transformers' CLVP shares one")
    inner = _need(ar, "gpt.h.0.mlp.c_fc.weight", "autoregressive checkpoint").shape[1]
    start_mel, stop_mel = vocab - 2, vocab - 1  # Tortoise: start_mel_token 8192, stop_mel_token 8193 of 8194
    decoder = dict(
        vocab_size=vocab, hidden_size=hidden, num_attention_heads=heads,
        num_hidden_layers=_count(ar, r"^gpt\.h\.(\d+)\."),
        num_mel_attn_blocks=_count(ar, r"^conditioning_encoder\.attn\.(\d+)\."),
        n_inner=None if inner == 4 * hidden else inner,
        max_position_embeddings=_need(ar, "mel_pos_embedding.emb.weight", "autoregressive checkpoint").shape[0],
        max_text_tokens=_need(ar, "text_pos_embedding.emb.weight", "autoregressive checkpoint").shape[0],
        feature_size=_need(ar, "conditioning_encoder.init.weight", "autoregressive checkpoint").shape[1],
        use_attention_bias=True, bos_token_id=start_mel, eos_token_id=stop_mel)
    text = _encoder_config(clvp, "text", bos=text_vocab - 1, eos=0)  # Tortoise: start_text_token 255, stop 0
    speech = _encoder_config(clvp, "speech", bos=start_mel, eos=stop_mel)
    if text["projection_dim"] != speech["projection_dim"]:
        raise ValueError("CLVP's text and speech latents differ in size")
    return dict(model_type="clvp", architectures=["ClvpModelForConditionalGeneration"],
                projection_dim=text["projection_dim"], text_config=text, speech_config=speech,
                decoder_config=decoder)


# ----------------------------------------------------------------------------------------------
# Writing


def _write(out_dir, tensors: dict, config: dict) -> dict:
    """model.safetensors + config.json (every field written out, defaults included); returns the config."""
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
    full = ClvpConfig.from_dict(config)
    full.save_pretrained(out_dir)
    return full.to_dict()


def convert_tortoise(autoregressive, clvp, out_dir, *, decoder_heads: int | None = None) -> dict:
    """autoregressive.pth + clvp2.pth -> out_dir/{config.json, model.safetensors}. Returns the config."""
    ar_sd = torch_pickle.load(autoregressive)
    clvp_sd = torch_pickle.load(clvp)
    config = tortoise_config(ar_sd, clvp_sd, decoder_heads)
    tensors = convert_clvp_weights(clvp_sd)
    decoder = convert_autoregressive_weights(ar_sd, config["decoder_config"]["num_attention_heads"])
    clash = sorted(set(tensors) & set(decoder))
    if clash:
        raise ValueError(f"the two checkpoints both define {clash[:5]}: were they given the right way round?")
    tensors.update(decoder)
    return _write(out_dir, tensors, config)


# ----------------------------------------------------------------------------------------------
# HiFi-GAN (the fast path's decoder)


def fold_weight_norm(sd: dict) -> dict:
    """{X.weight_g, X.weight_v} -> X.weight = g * v / |v| (norm over all axes but the first), others unchanged."""
    out = {k: v for k, v in sd.items() if not k.endswith((".weight_g", ".weight_v"))}
    for key in sd:
        if key.endswith(".weight_v"):
            base = key[:-len(".weight_v")]
            v = np.asarray(sd[key], np.float32)
            g = np.asarray(_need(sd, base + ".weight_g", "the weight-normed checkpoint"), np.float32)
            norm = np.sqrt((v.astype(np.float64) ** 2).sum(axis=tuple(range(1, v.ndim)), keepdims=True))  # (O, 1, ..)
            out[base + ".weight"] = (v * (g.reshape(norm.shape) / norm.astype(np.float32))).astype(np.float32)
    return out


def convert_hifigan(hifidecoder, out_dir, config: dict | None = None) -> dict:
    """hifidecoder.pth -> out_dir/hifigan/{config.json, model.safetensors}; `config` overrides api_fast's
    constructor arguments (HifiganConfig fields). Returns the config written."""
    cfg = HifiganConfig.from_dict(dict(config or {}))
    sd = torch_pickle.load(hifidecoder)
    return _write_vocoder(os.path.join(out_dir, "hifigan"), fold_weight_norm(sd), hifigan_spec(cfg), cfg, hifidecoder)


def _write_vocoder(folder, tensors: dict, spec: dict, cfg, source) -> dict:
    """Keep the spec's tensors, check their shapes, write folder/{config.json, model.safetensors}."""
    tensors = {name: np.ascontiguousarray(arr, dtype=np.float32) for name, arr in tensors.items() if name in spec}
    check_shapes({k: v.shape for k, v in tensors.items()}, spec, source)
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
    cfg.save_pretrained(folder)
    return cfg.to_dict()


# ----------------------------------------------------------------------------------------------
# UnivNet (the quality path's vocoder)


def convert_univnet(vocoder_pth, out_dir, config: dict | None = None) -> dict:
    """vocoder.pth -> out_dir/univnet/{config.json, model.safetensors}; `config` overrides UnivNetGenerator()'s
    arguments (UnivNetConfig fields). Returns the config written."""
    cfg = UnivNetConfig.from_dict(dict(config or {}))
    obj = torch_pickle.load_object(vocoder_pth)
    if not isinstance(obj, dict) or not isinstance(obj.get("model_g"), dict):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{vocoder_pth}: expected a dict with the generator's state dict under 'model_g' "
                              f"(as Tortoise's vocoder.pth), got {keys}")
    tensors = fold_weight_norm(obj["model_g"])
    return _write_vocoder(os.path.join(out_dir, "univnet"), tensors, univnet_spec(cfg), cfg, vocoder_pth)
# The diffusion decoder (the quality path)


def diffusion_config(sd: dict) -> dict:
    """DiffusionTts's constructor arguments read off its state dict's shapes (ref: DiffusionTts.__init__)."""
    src = "the diffusion checkpoint"
    inp = _need(sd, "inp_block.weight", src)  # (C, M, 3)
    table = _need(sd, "latent_conditioner.1.relative_pos_embeddings.relative_attention_bias.weight", src)  # (32, H)
    config = dict(model_channels=int(inp.shape[0]), in_channels=int(inp.shape[1]),
                  out_channels=int(_need(sd, "out.2.weight", src).shape[0]),
                  in_latent_channels=int(_need(sd, "latent_conditioner.0.weight", src).shape[1]),
                  num_heads=int(table.shape[1]), num_layers=_count(sd, r"layers\.(\d+)\.attn\."))
    if "code_embedding.weight" in sd:
        config["in_tokens"] = int(sd["code_embedding.weight"].shape[0])
    return config


def convert_diffusion(pth, out_dir, config: dict | None = None) -> dict:
    """diffusion_decoder.pth -> out_dir/diffusion/{config.json, model.safetensors}; `config` overrides what the
    shapes say (DiffusionConfig fields). Returns the config written."""
    sd = torch_pickle.load(pth)
    cfg = DiffusionConfig.from_dict({**diffusion_config(sd), **dict(config or {})})
    spec = diffusion_spec(cfg)
    tensors = {name: np.ascontiguousarray(arr, dtype=np.float32) for name, arr in sd.items() if name in spec}
    check_shapes({k: v.shape for k, v in tensors.items()}, spec, pth)
    folder = os.path.join(out_dir, "diffusion")
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
    cfg.save_pretrained(folder)
    return cfg.to_dict()


def convert_int8(src_dir, out_dir) -> dict:
    """A CLVP folder (model.safetensors, its shards or pytorch_model.bin; float32, float16 or bfloat16) ->
    out_dir/model.safetensors with the speech decoder's matrices and lm_head in int8 (pyclvp/model/weights.py
    int8_targets; stored as pyclvp/io/q8.py says: I8 + name_scale F32, the transposed ones listed in the metadata),
    every other tensor as stored; config.json (and generation_config.json, if any) copied. pyclvp loads the result as
    int8 (transformers cannot: it has no int8 pairs). Returns {"tensors": written, "int8": quantized matrices}."""
    cfg = ClvpConfig.from_pretrained(src_dir)
    weights = load_checkpoint(src_dir, cfg, "float32", prepare=lambda name, a, dtype: a, weights="int8")
    tensors, dtypes, transposed = {}, {}, []
    for name, a in weights.items():
        if isinstance(a, Q8Matrix):
            tensors[name], tensors[name + SCALE_SUFFIX] = a.q, a.scale
            transposed += [name] if a.transposed else []
        elif isinstance(a, Bf16Array):
            tensors[name], dtypes[name] = a.view(np.ndarray), "BF16"
        else:
            tensors[name] = a
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, SAFE_WEIGHTS_NAME), dtypes=dtypes,
              metadata={"format": "pt", METADATA_KEY: ",".join(transposed)})
    _copy_configs(src_dir, out_dir)
    return {"tensors": len(tensors), "int8": sum(isinstance(a, Q8Matrix) for a in weights.values())}


def _copy_configs(src_dir, out_dir) -> None:
    for name in ("config.json", "generation_config.json"):
        src = os.path.join(src_dir, name)
        if os.path.exists(src) and not os.path.samefile(src_dir, out_dir):
            shutil.copyfile(src, os.path.join(out_dir, name))


def convert_bin(src_dir, out_dir) -> int:
    """A transformers folder with pytorch_model.bin (or its shards) -> out_dir/model.safetensors, with
    config.json (and generation_config.json, if any) copied. Tensors and dtypes are kept as they are,
    except bfloat16, which becomes float32 (exactly). Returns the number of tensors written."""
    tensors = load_bin_folder(src_dir)
    config = os.path.join(src_dir, "config.json")
    if not os.path.exists(config):
        raise FileNotFoundError(f"{src_dir} has no config.json")
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
    _copy_configs(src_dir, out_dir)
    return len(tensors)
