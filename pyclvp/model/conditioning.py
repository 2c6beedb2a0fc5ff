"""ClvpConditioningEncoder: a voice clip and a text become the decoder's prompt embeddings.

Shape legend: B batch, T time (text tokens or mel frames), C decoder hidden, M mel bins, G groups.

    text ids (B, T)  --pad_extra_bos_eos_tokens-->  [bos, ids..., eos at the first pad]  (B, T+2)
                     --token embedding + position embedding at cumsum(mask) - 1-->        (B, T+2, C)
    mel (B, M, T)    --mel_conv (a kernel-1 Conv1d = a linear map over the M bins)-->     (B, C, T)
                     --num_mel_attn_blocks x [GroupNorm -> self-attention -> + residual]-->
                     --frame 0 only-->                                                     (B, 1, C)
    output: concat([mel vector, text embeddings], time axis)                              (B, 1+T+2, C)

When there is one text and N clips, the text is repeated N times; one clip and N texts, the clip
is repeated; N texts and M clips (N != M) is an error.

ref: transformers/models/clvp/modeling_clvp.py, _pad_extra_bos_eos_tokens and ClvpConditioningEncoder.
Weights are the checkpoint's `conditioning_encoder.*` tensors with that prefix removed.
"""
from __future__ import annotations

import numpy as np

from .attention import self_attention
from .weights import strip_prefix


def pad_extra_bos_eos_tokens(input_ids, attention_mask=None, pad_token_id=0, bos_token_id=255, eos_token_id=0,
                             add_bos_token=True, add_eos_token=True):  # (B, T), (B, T) -> (B, T'), (B, T')
    """Put bos first and eos at the first pad (or at the end), extending the mask, exactly as transformers.

    Quirk kept for parity: the mask is extended by a 1 *at the front* for the eos too, not at the eos
    position, so on a padded row the mask's 1s run one place further right than the tokens.
    """
    if add_bos_token:
        input_ids = np.pad(input_ids, ((0, 0), (1, 0)), constant_values=bos_token_id)  # (B, T+1)
        attention_mask = _prepend_one(attention_mask)
    if add_eos_token:
        input_ids = _insert_eos(input_ids, pad_token_id, eos_token_id)  # (B, T+1)
        attention_mask = _prepend_one(attention_mask)
    return input_ids, attention_mask


def _prepend_one(mask):  # (B, T) -> (B, T+1), or None
    return None if mask is None else np.pad(mask, ((0, 0), (1, 0)), constant_values=1)


def _insert_eos(ids, pad_token_id, eos_token_id):  # (B, T) -> (B, T+1)
    # ref: _pad_extra_bos_eos_tokens: gather with columns shifted by one past the first pad
    B, T = ids.shape
    is_pad = ids == pad_token_id
    first_pad = np.where(is_pad.any(1), is_pad.argmax(1), T)[:, None]  # (B, 1); T when there is no pad
    col = np.arange(T + 1)[None, :]  # (1, T+1)
    src = np.where(col < first_pad, col, np.maximum(col - 1, 0))  # (B, T+1)
    out = np.take_along_axis(ids, src, axis=1)  # (B, T+1): ids with a gap opened at first_pad
    return np.where(col == first_pad, eos_token_id, out)


def groupnorm_groups(channels: int, groups: int = 32) -> int:
    # ref: ClvpConditioningEncoder.compute_groupnorm_groups (from Tortoise's arch_util.normalization)
    if channels <= 16:
        groups = 8
    elif channels <= 64:
        groups = 16
    while channels % groups != 0:
        groups = int(groups / 2)
    if groups <= 2:
        raise ValueError(f"GroupNorm needs more than 2 groups, got {groups} for hidden_size {channels}; "
                         f"use a different decoder hidden_size")
    return groups


def text_embeddings(input_ids, attention_mask, p):  # (B, T), (B, T) -> (B, T, C)
    positions = np.cumsum(attention_mask, axis=-1) - 1  # (B, T): padded tokens repeat the last position
    tok = p["text_token_embedding.weight"][input_ids]  # (B, T, C)
    pos = p["text_position_embedding.weight"][positions]  # (B, T, C)
    return tok.astype(np.float32) + pos.astype(np.float32)


def mel_attention_block(x, p, i, H, groups, ops):  # (B, C, T) -> (B, C, T)
    residual = x.transpose(0, 2, 1)  # (B, T, C)
    h = ops.group_norm(x, p[f"group_norms.{i}.weight"], p[f"group_norms.{i}.bias"], groups, 1e-5)  # (B, C, T)
    attn = strip_prefix(p, f"mel_attn_blocks.{i}.")
    h = self_attention(h.transpose(0, 2, 1), attn, H, ops) + residual  # (B, T, C), no mask
    return h.transpose(0, 2, 1)  # (B, C, T)


def mel_vector(input_features, p, cfg, ops):  # (B, M, T) -> (B, 1, C)
    x = ops.linear(input_features.transpose(0, 2, 1), p["mel_conv.weight"][:, :, 0], p["mel_conv.bias"])  # (B, T, C)
    x = np.ascontiguousarray(x.transpose(0, 2, 1))  # (B, C, T)
    groups = groupnorm_groups(cfg.hidden_size)
    for i in range(cfg.num_mel_attn_blocks):
        x = mel_attention_block(x, p, i, cfg.num_attention_heads, groups, ops)  # (B, C, T)
    return x[:, None, :, 0]  # frame 0 of every channel: (B, 1, C)


def repeat_to_match(text, mel):  # (Bt, T, C), (Bm, 1, C) -> both (B, ., C)
    if text.shape[0] == 1 and mel.shape[0] != 1:
        text = np.repeat(text, mel.shape[0], axis=0)
    elif text.shape[0] != 1 and mel.shape[0] == 1:
        mel = np.repeat(mel, text.shape[0], axis=0)
    elif text.shape[0] != mel.shape[0]:
        raise ValueError(f"the number of texts and of audio clips must be the same (or one of them 1); "
                         f"got {text.shape[0]} texts and {mel.shape[0]} clips")
    return text, mel


def conditioning_encoder(input_features, input_ids, attention_mask, p, cfg, ops):  # -> (B, 1+T+2, C)
    """input_features (Bm, M, Tm) float32, input_ids (Bt, T) int, attention_mask (Bt, T) or None.

    `cfg` is the whole ClvpConfig (the text bos/eos ids and the decoder sizes are both needed).
    """
    if attention_mask is None:
        attention_mask = np.ones(input_ids.shape, dtype=np.int64)
    t = cfg.text_config
    ids, mask = pad_extra_bos_eos_tokens(input_ids, attention_mask, bos_token_id=t.bos_token_id,
                                         eos_token_id=t.eos_token_id)  # (Bt, T+2) x2
    text = text_embeddings(ids, mask, p)  # (Bt, T+2, C)
    mel = mel_vector(input_features, p, cfg.decoder_config, ops)  # (Bm, 1, C)
    text, mel = repeat_to_match(text, mel)
    return np.concatenate([mel, text], axis=1)  # (B, 1+T+2, C)
