"""Speech latents (Decoder.speech_latents) against Tortoise's UnifiedVoice.forward(..., return_latent=True,
clip_inputs=False), and the conditioning vector against UnifiedVoice.get_conditioning, on two tiny random
UnifiedVoice configurations with batch 2 (tests/data/speech/unified_voice, tools/ref_speech.py)."""
import json

import numpy as np
import pytest

from conftest import DATA, assert_close
from conftest import tortoise_folder
from pyclvp.model import ClvpModelForConditionalGeneration

UV = DATA / "speech" / "unified_voice"


def _model(name, tmp_path, backend):
    heads = json.loads((UV / name / "config.json").read_text())["constructor"]["heads"]
    return ClvpModelForConditionalGeneration.from_pretrained(tortoise_folder(UV / name / "autoregressive.pth", heads,
                                                                             tmp_path), backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name", ["tiny_ar", "tiny_ar_b"])
def test_latents_match_unified_voice(name, backend, tmp_path):
    model = _model(name, tmp_path, backend)
    with np.load(UV / name / "expected.npz") as f:
        ref = dict(f)
    B, N, M, frames = ref["cond_mels"].shape  # N clips per row
    ids = np.repeat(ref["text"], N, axis=0)  # forward() with clip_inputs=False reads every text column
    cond = model.encode_conditioning(ref["cond_mels"].reshape(B * N, M, frames), ids, None)  # (B*N, 1+T+2, C)
    cond = cond.reshape(B, N, *cond.shape[1:])
    vector = cond[:, :, 0].mean(1)  # (B, C): the clips averaged, as get_conditioning
    assert_close(vector, ref["conditioning"], atol=1e-5, name="conditioning vector")
    prompt = np.concatenate([vector[:, None], cond[:, 0, 1:]], axis=1)  # (B, 1+T+2, C)
    latents = model.decoder_ref.speech_latents(prompt, ref["codes_after_set_mel_padding"])  # (B, N, C)
    assert_close(latents, ref["latents"], atol=1e-4, name="latents")
