// provides: the CUDA kernel launchers, each with its contract block; the ops bindings
// (csrc/bindings/cuda_ops.cc) and the fused decoder (csrc/cuda/decoder_step.cu) call them. Plain C++.
//
// One op, one name in four places: pyclvp/ops/numpy_ops.py::<op> (the spec; the math is explained
// there), csrc/cpu/kernels/<family>.cc, csrc/cuda/<family>.cu, tests/test_cuda.py. A kernel here
// says which reference it matches and does not re-derive it.
//
// Shape legend (as csrc/cpu/kernels.h): B batch, T time (query positions), S key positions, C hidden,
// H heads, D head dim, F feed-forward width, V vocab, L layers, G groups, R rotary dim, N rows (any
// flattened leading dims), Cin/Cout a linear layer's input/output width.
//
// Common contract: every pointer is device memory valid for the stated shapes; "contiguous" means
// row-major with no gaps; outputs do not alias inputs unless said. Every launcher is asynchronous
// on `stream` and accumulates in float32. Launchers check only what the caller cannot know (a grid
// too large, a head dim above the attention kernel's limit) and throw std::runtime_error; the
// bindings check every argument, with a ValueError, before any device memory is touched.
#pragma once
#include <cstdint>

#include "common/half.h"
#include "cuda/memory.h"

namespace pyclvp::cuda {

// ---------------------------------------------------------------------------------------------
// linear (csrc/cuda/linear.cu)

// A weight matrix on the device, always (rows, cols) = (Cout, Cin) row-major (nn.Linear's layout)
// in its storage dtype; a Conv1D (Cin, Cout) weight is transposed once, on upload.
struct DeviceMatrix {
  DeviceBuffer buf;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
};

// A weight matrix in host memory as stored: (Cout, Cin) row-major, or, with kn, (Cin, Cout) row-major.
struct HostMatrix {
  const void* data = nullptr;
  DType dtype = DType::F32;
  bool kn = false;
  int64_t Cout = 0, Cin = 0;
};

// Uploads m into rows [row0, row0 + m.Cout) of dst (dst.cols == m.Cin, dst.dtype == m.dtype), which
// lets q, k and v share one (3C, C) matrix. Synchronous with respect to m.data (it may be freed after).
void upload_rows(DeviceMatrix& dst, int64_t row0, const HostMatrix& m, StreamHandle stream);
DeviceMatrix upload_matrix(const HostMatrix& m, StreamHandle stream, const char* what);

enum class Act { NONE = 0, GELU_NEW = 1 };

// y = act(x @ W^T + b), one product. matches pyclvp/ops/numpy_ops.py::linear (+ ::gelu_new with act)
//   y  : (N, Cout) f32, row stride ldy >= Cout, written (accumulate: y += x @ W^T + b; act must be NONE)
//   x  : (N, Cin)  f32, row stride ldx >= Cin
//   w  : (Cout, Cin) row-major, f32/f16/bf16 (a DeviceMatrix's buffer)
//   b  : (Cout,) f32 or nullptr
//   ln_g, ln_b : (Cin,) f32 or nullptr: when set, each x row is first layer-normalized (eps ln_eps),
//                as numpy_ops.layer_norm, inside the product (GEMV path only: N <= kGemvMaxRows)
// N <= kGemvMaxRows: one warp per output column pair, each weight read once per call (decode).
// Larger N: a shared-memory tiled GEMM (prefill, encoders, large batches).
struct LinearArgs {
  float* y = nullptr;
  const float* x = nullptr;
  const void* w = nullptr;
  DType w_dtype = DType::F32;
  const float* b = nullptr;
  const float* ln_g = nullptr;
  const float* ln_b = nullptr;
  float ln_eps = 1e-5f;
  int64_t N = 0, Cin = 0, Cout = 0, ldx = 0, ldy = 0;
  bool accumulate = false;
  Act act = Act::NONE;
};
constexpr int64_t kGemvMaxRows = 16;
void linear(const LinearArgs& a, StreamHandle stream);

// ---------------------------------------------------------------------------------------------
// normalizations (csrc/cuda/norms.cu)

// matches pyclvp/ops/numpy_ops.py::layer_norm over the last axis; two passes (mean, centred variance).
//   y : (N, C) f32 contiguous, written       x : (N, C) f32, row stride ldx >= C (y may alias x when ldx == C)
//   g, b : (C,) f32
//   g2, b2 : (C,) f32 or nullptr: when set, a second layer_norm (eps2) is applied to the result
//            (the decoder's decoder.layer_norm followed by final_norm)
void layer_norm(float* y, const float* x, int64_t ldx, const float* g, const float* b, float eps, int64_t N, int64_t C,
                StreamHandle stream, const float* g2 = nullptr, const float* b2 = nullptr, float eps2 = 0.0f);

// matches pyclvp/ops/numpy_ops.py::rms_norm.   y, x : (N, C) f32 contiguous (may alias)   g : (C,) f32
// clamp false: g * x / sqrt(mean(x^2) + eps) (transformers); true: x / max(|x| * C^-1/2, eps) * g (Tortoise)
void rms_norm(float* y, const float* x, const float* g, float eps, bool clamp, int64_t N, int64_t C,
              StreamHandle stream);

// matches pyclvp/ops/numpy_ops.py::group_norm.   y, x : (B, C, T) f32 contiguous (may alias); g, b : (C,); C % G == 0
// with silu, pyclvp/ops/numpy_ops.py::group_norm_silu (SiLU of the result in the same pass)
void group_norm(float* y, const float* x, const float* g, const float* b, int64_t G, float eps, bool silu, int64_t B, int64_t C,
                int64_t T, StreamHandle stream);

// ---------------------------------------------------------------------------------------------
// activations and softmax (csrc/cuda/activations.cu)

// matches pyclvp/ops/numpy_ops.py::gelu_new / ::gelu / ::silu, elementwise.   y, x : (n,) f32 (may alias)
void gelu_new(float* y, const float* x, int64_t n, StreamHandle stream);
void gelu(float* y, const float* x, int64_t n, StreamHandle stream);
void silu(float* y, const float* x, int64_t n, StreamHandle stream);

// matches pyclvp/ops/numpy_ops.py::gated_gelu.   y : (N, F) f32 contiguous, written   x : (N, 2F) f32 contiguous
void gated_gelu(float* y, const float* x, int64_t N, int64_t F, StreamHandle stream);

// matches pyclvp/ops/numpy_ops.py::softmax over the last axis.   y, x : (N, C) f32 contiguous (may alias), C >= 1
void softmax(float* y, const float* x, int64_t N, int64_t C, StreamHandle stream);

// ---------------------------------------------------------------------------------------------
// attention (csrc/cuda/attention.cu)

// matches pyclvp/ops/numpy_ops.py::rotary on the first R channels of every head (the rest copied).
//   y : (M, T, D) f32 contiguous, written      x : (M, T, D) f32 contiguous (M = B*H; y may alias x)
//   cos, sin : (T, R) f32 contiguous;  R even, R <= D
void rotary(float* y, const float* x, const float* cos, const float* sin, int64_t M, int64_t T, int64_t D, int64_t R,
            StreamHandle stream);

// softmax(q k^T * scale + mask) v with an online softmax over key tiles (the (T, S) scores are never
// stored). matches pyclvp/ops/numpy_ops.py::attention; the same contract as csrc/cpu/kernels.h
// AttentionArgs, plus the decoder step's two extras (length, new_k/new_v):
//   q    : (B, H, T, D) f32, strides (q_sb, q_sh, q_st) in elements, D contiguous
//   k, v : (B, H, S, D) in kv_dtype, strides (k_sb, k_sh, k_ss) / (v_*), D contiguous; D <= kAttentionMaxD
//   out  : (B, H, T, D) f32, strides (o_sb, o_sh, o_st), written; must not overlap q, k, v
//   mask : additive (B, H, T, S) f32 with strides (m_sb, m_sh, m_st) (0 broadcasts), S contiguous; or nullptr
//   key_mask : (B, S) bytes, row stride km_sb: 0 drops the key (it scores finfo(float32).min); or nullptr
//   causal   : query t sees keys s <= t + causal_offset only (the others are not visited)
//   length   : a device int64 or nullptr: when set, causal_offset = *length and S = *length + T
//              (the decoder step reads the cache length from the device, so its graph can be replayed)
//   new_k, new_v : (B*T, *) f32 with row stride new_ld, head h at columns [h*D, h*D+D), or nullptr:
//              when set, each block first stores its (b, h)'s T new keys/values into the cache at
//              positions causal_offset + t (rounded to kv_dtype), then attends; needs T == 1.
// An all-dropped row averages the values uniformly, as the reference (never NaN): with causal, all S
// keys', the unvisited ones included (as the CPU kernel); a row with no key at all is zeros.
struct AttentionArgs {
  const float* q = nullptr;
  int64_t q_sb = 0, q_sh = 0, q_st = 0;
  void* k = nullptr;  // written only through new_k
  void* v = nullptr;
  DType kv_dtype = DType::F32;
  int64_t k_sb = 0, k_sh = 0, k_ss = 0, v_sb = 0, v_sh = 0, v_ss = 0;
  float* out = nullptr;
  int64_t o_sb = 0, o_sh = 0, o_st = 0;
  const float* mask = nullptr;
  int64_t m_sb = 0, m_sh = 0, m_st = 0;
  const uint8_t* key_mask = nullptr;
  int64_t km_sb = 0;
  bool causal = false;
  int64_t causal_offset = 0;
  const int64_t* length = nullptr;
  const float* new_k = nullptr;
  const float* new_v = nullptr;
  int64_t new_ld = 0;
  int64_t B = 0, H = 0, T = 0, S = 0, D = 0;
  float scale = 1.0f;
};
constexpr int64_t kAttentionMaxD = 128;
void attention(const AttentionArgs& a, StreamHandle stream);

// The prefill's cache write: cache[b, h, offset + t, :] = new[b*T + t, h*D : h*D + D] for k and v,
// rounded to dtype.   k, v : (B, H, Scache, D) contiguous in dtype   new_k, new_v : (B*T, *) f32, row stride new_ld
void write_kv(void* k, void* v, DType dtype, int64_t Scache, const float* new_k, const float* new_v, int64_t new_ld,
              int64_t B, int64_t H, int64_t T, int64_t D, int64_t offset, StreamHandle stream);

// ---------------------------------------------------------------------------------------------
// token choice (csrc/cuda/sampling.cu)

// The next token of each row from its logits, as pyclvp/decoding.py does on the host:
// process_logits (repetition penalty on the seen tokens, one suppressed token, temperature, top-k,
// top-p, in that order) then argmax (the lowest id on a tie) or sample()'s inverse-CDF draw with the
// row's uniform u. One block per row. Equal to the host up to float rounding: the host's top-p sums
// float32 probabilities in ascending order and its draw float64 weights in index order, one after
// another; here top-p sums them exactly in 2^-52 fixed point and the draw segment by segment, so a
// token can differ only when a cumulative sum lies within rounding of its threshold.
//   logits : (B, V) f32, processed in place (removed tokens become -inf)
//   seen   : (B, V) bytes: the start token and the tokens so far; the chosen token is added.
//            start >= 0 first resets each row to {start} (the first choice after the prompt)
//   u      : (B,) f64 in [0, 1), read when do_sample
//   out    : (B,) int64, written; -1 where a draw's total weight is not finite (NaN or overflowed logits)
//   pick   : the processors' options, the same for every row (Pick)
// V <= 2^32 (the launcher throws otherwise).
struct Pick {
  float penalty = 1.0f;       // repetition penalty on the seen tokens (1: none; x / 1 == x exactly)
  int64_t suppress = -1;      // a token set to -inf (eos before min_new_tokens), or -1
  bool do_sample = false;     // false: argmax
  float temperature = 1.0f;   // read when do_sample
  int64_t top_k = 0;          // read when do_sample; 0: none
  bool top_p = false;         // read when do_sample: the ascending prefix is removed while its
  float top_p_remove = 0.0f;  //   cumulative probability <= top_p_remove (the host's float32(1 - top_p))
};
struct SampleArgs {
  float* logits = nullptr;
  uint8_t* seen = nullptr;
  const double* u = nullptr;
  int64_t* out = nullptr;
  int64_t B = 0, V = 0, start = -1;
  Pick pick;
};
void sample(const SampleArgs& a, StreamHandle stream);

// ---------------------------------------------------------------------------------------------
// convolutions (csrc/cuda/conv.cu): the CPU kernels' twins (csrc/cpu/kernels.h ConvArgs, same fields)

// One convolution, torch's (B, C, T) layout, groups = 1, zero padding; the bindings checked the sizes.
//   y : (B, Cout, To) f32 contiguous, written       x : (B, Cin, T) f32 contiguous
//   w : conv1d (Cout, Cin, K), conv_transpose1d (Cin, Cout, K); f32 contiguous      b : (Cout,) f32 or nullptr
//   leaky, slope, residual : as csrc/cpu/kernels.h ConvArgs says (x read as leaky_relu(x, slope); y += residual)
//   To : as csrc/cpu/kernels.h ConvArgs says, >= 1
struct ConvArgs {
  float* y = nullptr;
  const float* x = nullptr;
  const float* w = nullptr;
  const float* b = nullptr;
  const float* residual = nullptr;
  bool leaky = false;
  float slope = 0.0f;
  int64_t B = 0, Cin = 0, Cout = 0, T = 0, K = 0, To = 0;
  int64_t stride = 1, padding = 0, dilation = 1, output_padding = 0;
};

// matches pyclvp/ops/numpy_ops.py::conv1d
void conv1d(const ConvArgs& a, StreamHandle stream);

// matches pyclvp/ops/numpy_ops.py::conv_transpose1d (gathered per output: no atomics)
void conv_transpose1d(const ConvArgs& a, StreamHandle stream);

// matches pyclvp/ops/numpy_ops.py::location_variable_conv (UnivNet's LVC): window l = t / hop of every output row
// uses its own kernel.   y : (B, Cout, L hop) written   x : (B, Cin, L hop)   kernels : (B, Cin, Cout, K, L), K odd
//   bias : (B, Cout, L); all f32 contiguous
void location_variable_conv(float* y, const float* x, const float* kernels, const float* bias, int64_t B, int64_t Cin,
                            int64_t Cout, int64_t K, int64_t L, int64_t hop, StreamHandle stream);

// matches pyclvp/ops/numpy_ops.py::leaky_relu, elementwise.   y, x : (n,) f32 (may alias)
void leaky_relu(float* y, const float* x, int64_t n, float slope, StreamHandle stream);

}  // namespace pyclvp::cuda
