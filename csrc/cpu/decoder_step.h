// provides: DecoderModel (the speech decoder's weights, bound once), KVCache, DecoderScratch, and
// decoder_forward(): every decoder layer, decoder.layer_norm, final_norm and lm_head in one call,
// for a prompt (prefill) or one new token per row (step), against a preallocated KV cache.
//
// ref: transformers/models/clvp/modeling_clvp.py, ClvpForCausalLM.forward -> ClvpModel -> ClvpDecoder
// (-> ClvpDecoderLayer -> ClvpSelfAttention, ClvpDecoderMLP); the phase list is the one of
// pyclvp/model/decoder.py and of llama2.c's run.c forward(), with batch rows added.
//
// KV-cache layout (must match pyclvp/ops/cpu_ops.py, CpuDecoderState):
//   k, v     : (L, B, H, S, D) contiguous, float32 / float16 / bfloat16, S = the preallocated length
//   key_mask : (B, S) bool: key s of row b is attended to (prompt padding is false)
// Positions [0, length) are filled; a call writes positions [length, length + T).
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/isa.h"
#include "cpu/kernels.h"

namespace pyclvp::cpu {

// Checkpoint keys are relative to `speech_decoder_model.`; {i} is the layer index.
struct DecoderLayer {
  const float* ln1_g = nullptr;  // model.decoder.layers.{i}.input_layernorm.weight           (C,)
  const float* ln1_b = nullptr;  // model.decoder.layers.{i}.input_layernorm.bias             (C,)
  WeightView q, k, v;            // model.decoder.layers.{i}.attn.{q,k,v}_proj.weight         (C, C)
  const float* q_b = nullptr;    // model.decoder.layers.{i}.attn.q_proj.bias  (C,), or null: use_attention_bias=False
  const float* k_b = nullptr;    // model.decoder.layers.{i}.attn.k_proj.bias  (C,), or null
  const float* v_b = nullptr;    // model.decoder.layers.{i}.attn.v_proj.bias  (C,), or null
  WeightView o;                  // model.decoder.layers.{i}.attn.out_proj.weight             (C, C)
  const float* o_b = nullptr;    // model.decoder.layers.{i}.attn.out_proj.bias               (C,)
  const float* ln2_g = nullptr;  // model.decoder.layers.{i}.post_attention_layernorm.weight  (C,)
  const float* ln2_b = nullptr;  // model.decoder.layers.{i}.post_attention_layernorm.bias    (C,)
  WeightView fc;                 // model.decoder.layers.{i}.mlp.c_fc.weight    (C, F), Conv1D layout
  const float* fc_b = nullptr;   // model.decoder.layers.{i}.mlp.c_fc.bias      (F,)
  WeightView proj;               // model.decoder.layers.{i}.mlp.c_proj.weight  (F, C), Conv1D layout
  const float* proj_b = nullptr; // model.decoder.layers.{i}.mlp.c_proj.bias    (C,)
};

struct DecoderModel {
  int64_t L = 0, C = 0, H = 0, D = 0, F = 0, V = 0, P = 0;  // P: max_position_embeddings
  float eps = 1e-5f;                 // layer_norm_epsilon (the layers and decoder.layer_norm)
  const void* wte = nullptr;         // model.decoder.input_embeds_layer.weight     (V, C)
  DType wte_dtype = DType::F32;
  const void* wpe = nullptr;         // model.decoder.position_embeds_layer.weight  (P, C)
  DType wpe_dtype = DType::F32;
  std::vector<DecoderLayer> layers;  // L of them
  const float* lnf_g = nullptr;      // model.decoder.layer_norm.weight  (C,)
  const float* lnf_b = nullptr;      // model.decoder.layer_norm.bias    (C,)
  const float* final_g = nullptr;    // final_norm.weight  (C,)   nn.LayerNorm default eps 1e-5
  const float* final_b = nullptr;    // final_norm.bias    (C,)
  WeightView lm;                     // lm_head.weight  (V, C)
  const float* lm_b = nullptr;       // lm_head.bias    (V,)
};

struct KVCache {
  void* k = nullptr;           // (L, B, H, S, D)
  void* v = nullptr;           // (L, B, H, S, D)
  DType dtype = DType::F32;
  uint8_t* key_mask = nullptr;  // (B, S)
  int64_t B = 0, S = 0;
};

// Work buffers, kept by the session between calls so a step allocates nothing.
struct DecoderScratch {
  std::vector<float> x;     // (B*T, C) the residual stream
  std::vector<float> h;     // (B*T, C) normalized input of a sub-block
  std::vector<float> q;     // (B*T, C) queries, then the attention output
  std::vector<float> kv;    // (B*T, 2C) new keys | new values, before the cache write
  std::vector<float> f;     // (B*T, F) the MLP's hidden activations
  std::vector<float> last;  // (B, C) each row's last position, through the final norms
};

// Runs the decoder over T new positions per row, starting at cache position `length`.
//   s.x    : (B, T, C) f32, on entry the input embeddings (token + position); consumed
//   logits : (B, V) f32 contiguous, written: lm_head at each row's last new position
// The caller has checked every shape and has set key_mask[:, length:length+T].
void decoder_forward(CpuIsa isa, const DecoderModel& m, const KVCache& cache, int64_t length, int64_t T,
                     DecoderScratch& s, float* logits);

// x[b] = wte[ids[b]] + wpe[pos[b]]: the step's input embedding.   x : (B, C); ids, pos : (B,) checked in range
void decoder_embed(CpuIsa isa, const DecoderModel& m, const int64_t* ids, const int64_t* pos, int64_t B, float* x);

}  // namespace pyclvp::cpu
