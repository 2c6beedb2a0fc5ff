"""The checkpoint: which tensors a CLVP model needs (the spec), loaded and checked against it.

The spec lists every tensor of transformers' `ClvpModelForConditionalGeneration.state_dict()` under
transformers' own names, with the shape the config implies. Shape letters: V vocab, C hidden,
F feed-forward width, M mel bins, R rotary dim, P projection dim (each per sub-model's config).
`load_checkpoint(folder, config, dtype)` loads a folder against the spec (pyclvp/io/checkpoints.py:
which files, all problems in one CheckpointError, zero-copy views where the dtype is stored as asked).
`int8_targets(config)` names the matrices that weights="int8" stores as int8 (pyclvp/io/q8.py).
"""
from __future__ import annotations

from ..config import ClvpConfig
from ..io.checkpoints import CheckpointError, load_weights
from ..io.q8 import BLOCK

__all__ = ["CheckpointError", "checkpoint_spec", "OPTIONAL", "WEIGHTS", "int8_targets", "load_checkpoint",
           "strip_prefix"]

WEIGHTS = (None, "int8")  # from_pretrained(weights=...): as stored, or the decoder's matrices in int8

# Tensors a checkpoint may omit: rotary inverse frequencies are a buffer that pyclvp recomputes from
# the config (transformers saves it; older checkpoints may not).
OPTIONAL = ("text_encoder_model.rotary_pos_emb.inv_freq", "speech_encoder_model.rotary_pos_emb.inv_freq")


# ----------------------------------------------------------------------------------------------
# The spec: name -> shape, from the config


def _attention_spec(prefix, C, bias):  # ClvpSelfAttention
    spec = {}
    for proj in ("q_proj", "k_proj", "v_proj"):
        spec[f"{prefix}.{proj}.weight"] = (C, C)  # torch Linear layout (Cout, Cin)
        if bias:
            spec[f"{prefix}.{proj}.bias"] = (C,)
    spec[f"{prefix}.out_proj.weight"] = (C, C)
    spec[f"{prefix}.out_proj.bias"] = (C,)  # out_proj always has a bias
    return spec


def _conditioning_spec(cfg: ClvpConfig):  # ClvpConditioningEncoder
    d, C = cfg.decoder_config, cfg.decoder_config.hidden_size
    p = "conditioning_encoder"
    spec = {
        f"{p}.text_token_embedding.weight": (cfg.text_config.vocab_size, C),  # (V_text, C)
        f"{p}.text_position_embedding.weight": (d.max_text_tokens, C),  # (max_text_tokens, C)
        f"{p}.mel_conv.weight": (C, d.feature_size, 1),  # Conv1d (C, M, kernel 1)
        f"{p}.mel_conv.bias": (C,),
    }
    for i in range(d.num_mel_attn_blocks):
        spec[f"{p}.group_norms.{i}.weight"] = (C,)
        spec[f"{p}.group_norms.{i}.bias"] = (C,)
        spec.update(_attention_spec(f"{p}.mel_attn_blocks.{i}", C, d.use_attention_bias))
    return spec


def _decoder_spec(cfg: ClvpConfig):  # ClvpForCausalLM
    d, C, F = cfg.decoder_config, cfg.decoder_config.hidden_size, cfg.decoder_config.inner_dim
    p = "speech_decoder_model.model.decoder"
    spec = {
        f"{p}.input_embeds_layer.weight": (d.vocab_size, C),  # (V, C) mel token embedding
        f"{p}.position_embeds_layer.weight": (d.max_position_embeddings, C),  # learned mel positions
    }
    for i in range(d.num_hidden_layers):
        q = f"{p}.layers.{i}"
        spec[f"{q}.input_layernorm.weight"] = spec[f"{q}.input_layernorm.bias"] = (C,)
        spec.update(_attention_spec(f"{q}.attn", C, d.use_attention_bias))
        spec[f"{q}.post_attention_layernorm.weight"] = spec[f"{q}.post_attention_layernorm.bias"] = (C,)
        spec[f"{q}.mlp.c_fc.weight"] = (C, F)  # GPT-2 Conv1D layout (Cin, Cout)
        spec[f"{q}.mlp.c_fc.bias"] = (F,)
        spec[f"{q}.mlp.c_proj.weight"] = (F, C)  # Conv1D (Cin, Cout)
        spec[f"{q}.mlp.c_proj.bias"] = (C,)
    spec[f"{p}.layer_norm.weight"] = spec[f"{p}.layer_norm.bias"] = (C,)
    spec["speech_decoder_model.final_norm.weight"] = spec["speech_decoder_model.final_norm.bias"] = (C,)
    spec["speech_decoder_model.lm_head.weight"] = (d.vocab_size, C)  # (V, C)
    spec["speech_decoder_model.lm_head.bias"] = (d.vocab_size,)
    return spec


def _encoder_spec(p, e):  # ClvpEncoder (text or speech)
    C, F = e.hidden_size, e.intermediate_size
    spec = {f"{p}.token_embedding.weight": (e.vocab_size, C)}
    if e.use_rotary_embedding:
        spec[f"{p}.rotary_pos_emb.inv_freq"] = (e.rotary_dim // 2,)  # optional, see OPTIONAL
    for i in range(e.num_hidden_layers):
        q = f"{p}.layers.{i}"
        spec.update(_attention_spec(f"{q}.self_attn", C, e.use_attention_bias))
        spec[f"{q}.mlp.fc1.proj.weight"] = (2 * F, C)  # gated unit: [h | gate] stacked
        spec[f"{q}.mlp.fc1.proj.bias"] = (2 * F,)
        spec[f"{q}.mlp.fc2.weight"] = (C, F)
        spec[f"{q}.mlp.fc2.bias"] = (C,)
        spec[f"{q}.input_rmsnorm.weight"] = spec[f"{q}.post_attention_rmsnorm.weight"] = (C,)
    spec[f"{p}.final_layer_norm.weight"] = spec[f"{p}.final_layer_norm.bias"] = (C,)
    spec[f"{p}.projection.weight"] = (e.projection_dim, C)  # (P, C), no bias
    return spec


def checkpoint_spec(cfg: ClvpConfig) -> dict[str, tuple]:
    """Every tensor name of the model's state dict -> its shape (scalar logit_scale: ())."""
    spec = {"logit_scale": ()}
    spec.update(_conditioning_spec(cfg))
    spec.update(_decoder_spec(cfg))
    spec.update(_encoder_spec("text_encoder_model", cfg.text_config))
    spec.update(_encoder_spec("speech_encoder_model", cfg.speech_config))
    return spec


def int8_targets(cfg: ClvpConfig) -> dict[str, bool]:
    """{name: transposed} of the matrices weights="int8" quantizes: the speech decoder's (attention q/k/v/out, MLP
    c_fc/c_proj, transposed: Conv1D (Cin, Cout)) and lm_head, what a decode step streams; the encoders and embedding
    tables stay float. A matrix whose input dimension is not a multiple of 32 (pyclvp/io/q8.py BLOCK) stays float."""
    out = {}
    for name, shape in _decoder_spec(cfg).items():
        conv1d = ".mlp.c_" in name  # GPT-2 Conv1D layout (Cin, Cout)
        if len(shape) == 2 and name.endswith(".weight") and "embeds_layer" not in name:
            if (shape[0] if conv1d else shape[1]) % BLOCK == 0:
                out[name] = conv1d
    return out


def strip_prefix(weights: dict, prefix: str) -> dict:
    """The tensors under `prefix` with the prefix removed: strip_prefix(w, "speech_decoder_model.")."""
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def load_checkpoint(folder, cfg: ClvpConfig, dtype: str = "float32", prepare=None, weights=None) -> dict:
    """name -> array for every tensor of the spec (OPTIONAL ones only if present), in `dtype` (see load_weights);
    weights="int8": int8_targets(cfg) as int8 (quantized as they are loaded when the file stores them in float)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be None (as stored) or 'int8', got {weights!r}")
    quantize = int8_targets(cfg) if weights == "int8" else None
    return load_weights(folder, checkpoint_spec(cfg), dtype, prepare, OPTIONAL, quantize)
