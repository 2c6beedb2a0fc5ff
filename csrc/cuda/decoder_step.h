// provides: CudaDecoder (the speech decoder's weights on the device, uploaded once) and
// CudaDecoderState (one batch's KV cache on the device, with its step buffers and its captured
// step graph); prefill(), step(), select(), download(). The CUDA twin of csrc/cpu/decoder_step.h:
// the same phase list (pyclvp/model/decoder.py, llama2.c's run.c forward()), the same checkpoint keys.
// Plain C++; defined in csrc/cuda/decoder_step.cu.
//
// Only token ids and positions go to the device each step, and only the logits (or the chosen
// tokens) come back:
//   step  : pinned (length, ids, pos) -> device; embed; L x [qkv, attention, out_proj, c_fc, c_proj];
//           final norms; lm_head. All of it is captured once per state in a CUDA graph and replayed
//           (use_graph = false launches the same kernels eagerly instead); with PYCLVP_CUDA_PDL=1 on
//           sm_90+ each kernel is a programmatic dependent launch (csrc/cuda/common.cuh), so a product's
//           blocks fetch their weights into L2 while the kernel before finishes. Then either the logits
//           go to the host, or csrc/cuda/sampling.cu chooses each row's token and only the ids do.
//   prefill: the same layers over B x T prompt positions (GEMM path), eagerly.
//
// KV-cache layout (as csrc/cpu/decoder_step.h KVCache): k, v (L, B, H, S, D) in float32 / float16 /
// bfloat16, key_mask (B, S) bytes; positions [0, length) are filled and a call appends at `length`.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/decoder_step.h"  // cpu::DecoderModel: the host-side weights the upload reads
#include "cuda/kernels.h"

namespace pyclvp::cuda {

// Checkpoint keys relative to `speech_decoder_model.model.decoder.layers.{i}.`
struct DeviceLayer {
  DeviceBuffer ln1_g, ln1_b;  // input_layernorm.{weight,bias}             (C,) f32
  DeviceMatrix qkv;           // attn.{q,k,v}_proj.weight, stacked           (3C, C)
  DeviceBuffer qkv_b;         // attn.{q,k,v}_proj.bias, stacked; zeros where absent (use_attention_bias=False)  (3C,)
  DeviceMatrix o;             // attn.out_proj.weight                        (C, C)
  DeviceBuffer o_b;           // attn.out_proj.bias                          (C,)
  DeviceBuffer ln2_g, ln2_b;  // post_attention_layernorm.{weight,bias}      (C,)
  DeviceMatrix fc;            // mlp.c_fc.weight: Conv1D (C, F), here transposed to (F, C)
  DeviceBuffer fc_b;          // mlp.c_fc.bias                               (F,)
  DeviceMatrix proj;          // mlp.c_proj.weight: Conv1D (F, C), here (C, F)
  DeviceBuffer proj_b;        // mlp.c_proj.bias                             (C,)
};

struct DeviceModel {
  int64_t L = 0, C = 0, H = 0, D = 0, F = 0, V = 0, P = 0;
  float eps = 1e-5f;
  DeviceBuffer wte;  // model.decoder.input_embeds_layer.weight     (V, C) as stored
  DType wte_dtype = DType::F32;
  DeviceBuffer wpe;  // model.decoder.position_embeds_layer.weight  (P, C) as stored
  DType wpe_dtype = DType::F32;
  std::vector<DeviceLayer> layers;
  DeviceBuffer lnf_g, lnf_b;      // model.decoder.layer_norm.{weight,bias}  (C,)
  DeviceBuffer final_g, final_b;  // final_norm.{weight,bias}                (C,), eps 1e-5
  DeviceMatrix lm;                // lm_head.weight                          (V, C)
  DeviceBuffer lm_b;              // lm_head.bias                            (V,)
};

// Per-position work buffers of a forward pass over N = B*T rows, all f32.
struct Activations {
  DeviceBuffer x;    // (N, C)  the residual stream
  DeviceBuffer h;    // (N, C)  a sub-block's normalized input (unused when the norm is fused), then the final norms
  DeviceBuffer qkv;  // (N, 3C) q | new k | new v
  DeviceBuffer att;  // (N, C)  the attention output
  DeviceBuffer f;    // (N, F)  the MLP's hidden activations
  DeviceBuffer logits;  // (B, V)
};

class CudaDecoder;

class CudaDecoderState {
 public:
  int64_t batch() const { return B_; }
  int64_t max_len() const { return S_; }
  int64_t length() const { return length_; }
  DType dtype() const { return dtype_; }

 private:
  friend class CudaDecoder;
  const CudaDecoder* owner_ = nullptr;  // states work with the decoder that made them only
  int64_t B_ = 0, S_ = 0, length_ = 0;
  DType dtype_ = DType::F32;
  DeviceBuffer k_, v_;     // (L, B, H, S, D) in dtype_
  DeviceBuffer key_mask_;  // (B, S) bytes
  Activations step_;       // the step's buffers (B rows)
  DeviceBuffer in_dev_;    // (1 + 2B) int64: length, ids (B), positions (B)
  PinnedBuffer in_host_;   // its host side, written before each replay
  PinnedBuffer logits_host_;  // (B, V) f32, the step's result
  DeviceBuffer seen_;         // (B, V) bytes: each row's start token and tokens so far (device token choice)
  DeviceBuffer u_dev_;        // (B,) f64: the step's uniforms
  DeviceBuffer pick_dev_;     // (B,) int64: the chosen tokens
  PinnedBuffer pick_host_;    // (B,) f64 uniforms in, then (B,) int64 tokens out
  GraphExec graph_;        // the captured step, made on the first step
};

class CudaDecoder {
 public:
  // Checks the host model (ValueError-style std::invalid_argument), then uploads every weight;
  // the host arrays are not used afterwards. use_graph: replay each state's step as a CUDA graph.
  CudaDecoder(const cpu::DecoderModel& host, bool use_graph);

  const DeviceModel& model() const { return m_; }

  // A zeroed cache for B rows of S positions (B, S >= 1).
  std::unique_ptr<CudaDecoderState> new_state(int64_t B, int64_t S, DType dtype) const;

  // The prompt: embeds (B, T, C) f32 and mask (B, T) bytes, in host memory; writes cache positions
  // [length, length + T) and logits (B, V) f32 (host) of each row's last position.
  void prefill(CudaDecoderState& st, const float* embeds, const uint8_t* mask, int64_t T, float* logits) const;

  // One token per row: ids, pos (B,) int64 in host memory, already checked to lie in [0, V) and
  // [0, P); logits (B, V) f32 host, written.
  void step(CudaDecoderState& st, const int64_t* ids, const int64_t* pos, float* logits) const;

  // The same step, then each row's next token chosen on the device (pick, as csrc/cuda/kernels.h's
  // SampleArgs; u (B,) f64 host uniforms,
  // read when pick.do_sample); only the tokens come back: next (B,) int64 host, written.
  void step(CudaDecoderState& st, const int64_t* ids, const int64_t* pos, const Pick& pick, const double* u,
            int64_t* next) const;

  // The first token after the prompt: each row's seen set becomes {start}, and its token is chosen
  // from logits (B, V) f32 host (the prefill's, one row per state row), as above.
  void pick_first(CudaDecoderState& st, const float* logits, int64_t start, const Pick& pick, const double* u,
                  int64_t* next) const;

  // The last prefill's / step's final-normed hidden state of each row's last position (what lm_head read, Tortoise's
  // speech latent): out (B, C) f32 host, written (zeros before any call on this state, a select's result included).
  void latent(const CudaDecoderState& st, float* out) const;

  // A new state holding rows `rows` (n of them, each in [0, st.batch())) of st, in that order.
  std::unique_ptr<CudaDecoderState> select(const CudaDecoderState& st, const int64_t* rows, int64_t n) const;

  // Host copies of the cache: k, v (L, B, H, S, D) in the state's dtype, key_mask (B, S) bytes.
  void download(const CudaDecoderState& st, void* k, void* v, uint8_t* key_mask) const;

 private:
  struct Pass;
  void check_owner(const CudaDecoderState& st) const;
  void enqueue_layers(const CudaDecoderState& st, const Pass& p) const;
  void enqueue_head(const Pass& p) const;
  void enqueue_step(CudaDecoderState& st) const;
  void launch_step(CudaDecoderState& st, const int64_t* ids, const int64_t* pos) const;
  void choose(CudaDecoderState& st, int64_t start, const Pick& pick, const double* u, int64_t* next) const;
  void capture_step(CudaDecoderState& st) const;

  StreamHandle stream() const { return stream_->get(); }

  std::unique_ptr<Stream> stream_;  // every call's work, in order; made after the checks
  DeviceModel m_;
  bool use_graph_ = true;
};

}  // namespace pyclvp::cuda
