"""The CLVP model in NumPy, written once against the ops seam (pyclvp/ops). Read in this order:

  weights.py       which tensors a checkpoint holds, and the checked, memory-mapped loader
  attention.py     ClvpSelfAttention, used by the three parts below
  conditioning.py  voice clip + text -> the decoder's conditioning embeddings
  decoder.py       the GPT-2 speech-token decoder: forward, prefill and the KV-cached step
  encoder.py       the text and speech encoders (rotary, RMSNorm, gated GELU, summary, projection)
  clvp.py          ClvpModelForConditionalGeneration: loading, forward(), the similarity scores
"""
from .clvp import ClvpModelForConditionalGeneration, ClvpOutput
from .decoder import Decoder, DecoderState
from .encoder import Encoder, EncoderOutput
from .weights import CheckpointError

__all__ = ["ClvpModelForConditionalGeneration", "ClvpOutput", "Decoder", "DecoderState", "Encoder",
           "EncoderOutput", "CheckpointError"]
