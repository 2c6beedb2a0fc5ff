"""Helpers shared by the tools/ref_*.py parts: the tiny fixture configurations and seeded models.

TINY_CONFIGS are the two small CLVP architectures every model-level test runs on. They differ in
what the model issue asks to cover: head count, rotary dimension (32 vs 64), n_inner set/unset,
use_attention_bias both ways, and the summary type; tiny_a keeps Tortoise's real token ids
(vocab 8194, start 8192, stop 8193), tiny_b uses a small vocabulary with its own start/stop ids.
"""
from __future__ import annotations

import json
from pathlib import Path

FIXTURE_VERSION = 1

TINY_CONFIGS = {
    "tiny_a": dict(
        text_config=dict(vocab_size=256, hidden_size=64, intermediate_size=96, projection_dim=32,
                         num_hidden_layers=2, num_attention_heads=2, use_attention_bias=False,
                         summary_type="mean"),
        speech_config=dict(vocab_size=8194, hidden_size=32, intermediate_size=80, projection_dim=32,
                           num_hidden_layers=2, num_attention_heads=1, use_attention_bias=True,
                           summary_type="mean", bos_token_id=8192, eos_token_id=8193),
        decoder_config=dict(vocab_size=8194, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            n_inner=None, num_mel_attn_blocks=2, max_position_embeddings=64,
                            max_text_tokens=40, use_attention_bias=True),
        projection_dim=32,
    ),
    "tiny_b": dict(
        text_config=dict(vocab_size=256, hidden_size=96, intermediate_size=64, projection_dim=128,
                         num_hidden_layers=1, num_attention_heads=1, use_attention_bias=True,
                         summary_type="last"),
        speech_config=dict(vocab_size=300, hidden_size=96, intermediate_size=64, projection_dim=128,
                           num_hidden_layers=2, num_attention_heads=1, use_attention_bias=False,
                           summary_type="first", bos_token_id=298, eos_token_id=299),
        decoder_config=dict(vocab_size=300, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                            n_inner=72, num_mel_attn_blocks=1, max_position_embeddings=40,
                            max_text_tokens=32, use_attention_bias=False, bos_token_id=298,
                            eos_token_id=299, decoder_fixing_codes=[83, 45, 45, 248]),
        projection_dim=128,
    ),
}


def tiny_model(name: str, seed: int = 0):
    """A ClvpModelForConditionalGeneration with seeded weights that exercise every parameter.

    transformers' init leaves norms at 1/0 and biases at 0, which would hide bugs in their use, so
    every parameter is redrawn: norms' weights around 1, everything else N(0, 0.1^2) (logit_scale kept).
    """
    import torch
    from transformers import ClvpConfig, ClvpModelForConditionalGeneration

    torch.manual_seed(seed)
    model = ClvpModelForConditionalGeneration(ClvpConfig(**TINY_CONFIGS[name])).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key == "logit_scale":
                continue
            noise = torch.randn(p.shape, generator=g) * 0.1
            is_norm_weight = p.ndim == 1 and key.endswith("weight") and ("norm" in key or "ln" in key)
            p.copy_(1.0 + noise if is_norm_weight else noise)
    return model


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
