// provides: the per-ISA CPU kernel declarations, each with its contract block.
//
// Each kernel is defined once, in csrc/cpu/kernels/<family>.cc, and those files are compiled once
// per ISA (CMakeLists.txt: pyclvp_add_isa), so every kernel exists as kernel<SCALAR>,
// kernel<AVX2>, kernel<AVX512> on x86-64 and kernel<SCALAR> elsewhere. Callers go through
// dispatch() (cpu/dispatch.h) and never name an ISA themselves.
//
// Shape legend (as pyclvp/ops/numpy_ops.py): B batch, T time (query positions), S key positions,
// C hidden, H heads, D head dim, F feed-forward width, V vocab, L layers, G groups, R rotary dim,
// N rows (any flattened leading dims), Cin/Cout a linear layer's input/output width.
//
// Common contract: pointers are valid for the stated shapes, "contiguous" means row-major with
// no gaps; outputs never alias inputs unless said. Kernels do not check arguments (the bindings
// in csrc/bindings/ do, and raise ValueError) and never throw. They run on the thread pool
// (common/threadpool.h); the caller must not hold the GIL.
#pragma once
#include <cstdint>

#include "common/half.h"
#include "cpu/isa.h"

namespace pyclvp::cpu {

// Floats per SIMD register for this ISA (1 for scalar); reported by build_info().
template <CpuIsa ISA>
int simd_width();

// ---------------------------------------------------------------------------------------------
// linear (csrc/cpu/kernels/linear.cc)

// A weight matrix as stored: float32, float16 or bfloat16 elements, in one of two layouts; or int8 (DType::I8,
// linear_q8 only) in the (Cout, Cin) layout with one float32 scale per block of Q8_BLOCK input channels.
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  bool kn = false;  // false: (Cout, Cin) row-major (torch nn.Linear); true: (Cin, Cout) row-major (transformers Conv1D)
  const float* scale = nullptr;  // I8: (Cout, Cin / Q8_BLOCK) f32 contiguous; otherwise unused
};

// Input channels per int8 scale block (Q8_0's 32). Must match pyclvp/io/q8.py BLOCK.
constexpr int64_t Q8_BLOCK = 32;

enum class Act { NONE = 0, GELU_NEW = 1 };

// One y = act(x @ W^T + b) product. matches pyclvp/ops/numpy_ops.py::linear (+ ::gelu_new when act == GELU_NEW)
//   y    : (N, Cout) f32, row stride ldy >= Cout, written (accumulate: y += x @ W^T + b, act must be NONE)
//   x    : (N, Cin)  f32, row stride ldx >= Cin
//   w    : (Cout, Cin) or, with w.kn, (Cin, Cout); f32/f16/bf16, contiguous
//   b    : (Cout,) f32 or nullptr
// Accumulation is float32 (half weights are widened as they are loaded).
struct LinearJob {
  float* y = nullptr;
  const float* x = nullptr;
  WeightView w;
  const float* b = nullptr;
  int64_t N = 0, Cin = 0, Cout = 0, ldx = 0, ldy = 0;
  bool accumulate = false;
  Act act = Act::NONE;
};

// Runs njobs independent products in one parallel region (the decoder step's q, k and v share one).
// Float weights only (F32 / F16 / BF16); an I8 job goes to linear_q8.
template <CpuIsa ISA>
void linear(const LinearJob* jobs, int njobs);

// linear for int8 weights (csrc/cpu/kernels/linear_q8.cc): the same jobs, every w I8 with w.kn false and
// w.scale set, Cin % Q8_BLOCK == 0. matches pyclvp/ops/numpy_ops.py::linear_q8: W[c, k] = q[c, k] * scale[c, k / 32],
// accumulated in float32 against float32 x (with several rows the dequantized weight is formed in registers; with
// one, each block's sum of x * q is scaled once).
template <CpuIsa ISA>
void linear_q8(const LinearJob* jobs, int njobs);

// The (Cout, Cin) copy of a (Cin, Cout) Conv1D weight: the layout linear reads fastest (one contiguous run of
// weights per output column, no packing per call), for weights bound once (the decoder session).
//   dst : (Cout, Cin) contiguous, written      src : (Cin, Cout) contiguous; elements of `elem_bytes` (4 or 2:
//   f32 or f16 / bf16 bits, copied as they are)
template <CpuIsa ISA>
void transpose_weight(void* dst, const void* src, int64_t Cin, int64_t Cout, int elem_bytes);

// ---------------------------------------------------------------------------------------------
// normalizations (csrc/cpu/kernels/norms.cc)

// matches pyclvp/ops/numpy_ops.py::layer_norm: y = (x - mean) / sqrt(var + eps) * g + b over the last axis.
//   y : (N, C) f32 contiguous, written (may alias x)      x : (N, C) f32 contiguous
//   g : (C,) f32                                          b : (C,) f32
// Two passes per row (mean, then the centred variance), as the reference: no E[x^2] - E[x]^2 shortcut.
template <CpuIsa ISA>
void layer_norm(float* y, const float* x, const float* g, const float* b, int64_t N, int64_t C, float eps);

// matches pyclvp/ops/numpy_ops.py::rms_norm, over the last axis:
//   clamp false (transformers): y = g * x / sqrt(mean(x^2) + eps)
//   clamp true  (Tortoise's x-transformers RMSNorm): y = x / max(sqrt(sum(x^2)) * C^-1/2, eps) * g
//   y : (N, C) f32 contiguous, written (may alias x)      x : (N, C) f32      g : (C,) f32
template <CpuIsa ISA>
void rms_norm(float* y, const float* x, const float* g, int64_t N, int64_t C, float eps, bool clamp);

// matches pyclvp/ops/numpy_ops.py::group_norm: per (batch, group) statistics over C/G channels x T,
// then the per-channel affine; with silu, pyclvp/ops/numpy_ops.py::group_norm_silu (silu of that, in the
// same pass over y: the diffusion decoder's GroupNorm -> SiLU).
//   y : (B, C, T) f32 contiguous, written (may alias x)   x : (B, C, T) f32    g, b : (C,) f32;  C % G == 0
template <CpuIsa ISA>
void group_norm(float* y, const float* x, const float* g, const float* b, int64_t B, int64_t C, int64_t T,
                int64_t G, float eps, bool silu);

// ---------------------------------------------------------------------------------------------
// activations and softmax (csrc/cpu/kernels/activations.cc)

// matches pyclvp/ops/numpy_ops.py::gelu_new (elementwise).   y, x : (n,) f32, y may alias x
template <CpuIsa ISA>
void gelu_new(float* y, const float* x, int64_t n);

// matches pyclvp/ops/numpy_ops.py::gelu (exact, erf-based; elementwise).   y, x : (n,) f32, y may alias x
template <CpuIsa ISA>
void gelu(float* y, const float* x, int64_t n);

// matches pyclvp/ops/numpy_ops.py::gated_gelu: y = x[:, :F] * gelu(x[:, F:]).
//   y : (N, F) f32 contiguous, written      x : (N, 2F) f32 contiguous
template <CpuIsa ISA>
void gated_gelu(float* y, const float* x, int64_t N, int64_t F);

// matches pyclvp/ops/numpy_ops.py::silu (elementwise): x * sigmoid(x), as x / (1 + e^-x).   y, x : (n,) f32, y may alias x
template <CpuIsa ISA>
void silu(float* y, const float* x, int64_t n);

// matches pyclvp/ops/numpy_ops.py::softmax over the last axis (max-subtracted).
//   y : (N, C) f32 contiguous, written (may alias x)      x : (N, C) f32 contiguous
template <CpuIsa ISA>
void softmax(float* y, const float* x, int64_t N, int64_t C);

// ---------------------------------------------------------------------------------------------
// attention (csrc/cpu/kernels/attention.cc)

// matches pyclvp/ops/numpy_ops.py::rotary on the first R channels of every head (the rest copied).
//   y : (M, T, D) f32 contiguous, written (may alias x)   x : (M, T, D) f32 contiguous (M = B*H)
//   cos, sin : (T, R) f32 contiguous;  R even, R <= D
template <CpuIsa ISA>
void rotary(float* y, const float* x, const float* cos, const float* sin, int64_t M, int64_t T, int64_t D, int64_t R);

// softmax(q k^T * scale + mask) v, tiled over keys with an online softmax: a task (batch, head,
// block of query rows) holds O(rows * (D + key tile) + D * key tile) floats, never (H, T, S).
// matches pyclvp/ops/numpy_ops.py::attention
//   q    : (B, H, T, D) f32, strides (q_sb, q_sh, q_st) in elements, D contiguous
//   k, v : (B, H, S, D) in kv_dtype (f32/f16/bf16), strides (k_sb, k_sh, k_ss) / (v_*), D contiguous
//   out  : (B, H, T, D) f32, strides (o_sb, o_sh, o_st), written; must not overlap q, k, v
//   mask : additive (B, H, T, S) f32 with strides (m_sb, m_sh, m_st) (0 broadcasts; negative: a sliding window),
//          S contiguous; or nullptr
//          (a per-head mask: the diffusion decoder's relative-position bias, (1, H, T, S))
//   key_mask : (B, S) bool bytes, row stride km_sb: false drops the key; or nullptr
//   causal   : query t sees keys s <= t + causal_offset only (the others are skipped)
// A dropped key scores finfo(float32).min, as the reference's additive mask: a row whose every
// visited key is dropped averages those keys' values uniformly, as the reference does (it never
// yields NaN). With causal, the future keys are not visited, but the reference's causal mask gives
// them finfo.min too: such an all-dropped row (a padding query, whose output no valid query reads)
// averages all S keys, the future ones included, as the reference does (add_hidden_keys).
struct AttentionArgs {
  const float* q = nullptr;
  int64_t q_sb = 0, q_sh = 0, q_st = 0;
  const void* k = nullptr;
  const void* v = nullptr;
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
  int64_t B = 0, H = 0, T = 0, S = 0, D = 0;
  float scale = 1.0f;
};

template <CpuIsa ISA>
void attention(const AttentionArgs& a);

// ---------------------------------------------------------------------------------------------
// UnivNet's location-variable convolution (csrc/cpu/kernels/lvc.cc)

// matches pyclvp/ops/numpy_ops.py::location_variable_conv: frame l of batch b convolves its own window of
// hop samples (with K - 1 neighbours, zeros past the ends) with its own kernel:
//   y[b, o, l hop + s] = bias[b, o, l] + sum_{c, k} kernels[b, c, o, k, l] x[b, c, l hop + s + k - (K - 1) / 2]
// A task is (b, a block of frames): their kernel slices are gathered into (Cout, Cin K) each, a frame's window
// into (Cin, hop + K - 1), and its (Cout, hop) output is a small GEMM over register tiles.
//   y       : (B, Cout, T) f32 contiguous, written (must not overlap the inputs);  T = L hop
//   x       : (B, Cin, T) f32 contiguous
//   kernels : (B, Cin, Cout, K, L) f32 contiguous;  K odd
//   bias    : (B, Cout, L) f32 contiguous
template <CpuIsa ISA>
void location_variable_conv(float* y, const float* x, const float* kernels, const float* bias, int64_t B, int64_t Cin,
                            int64_t Cout, int64_t K, int64_t L, int64_t hop);

// ---------------------------------------------------------------------------------------------
// convolutions (csrc/cpu/kernels/conv.cc): torch's (B, C, T) layout, groups = 1, zero padding

// One convolution's arrays and sizes; the bindings (csrc/bindings/op_args.h conv_args) check them.
//   y : (B, Cout, To) f32 contiguous, written (must not overlap x, w, b)
//   x : (B, Cin, T) f32 contiguous
//   w : conv1d (Cout, Cin, K), conv_transpose1d (Cin, Cout, K) as nn.ConvTranspose1d stores it; f32 contiguous
//   b : (Cout,) f32 or nullptr
//   leaky, slope : when leaky, the convolution reads leaky_relu(x, slope) instead of x (the activation
//       before every HiFi-GAN / UnivNet conv, applied while x is copied into the kernel's padded planes)
//   residual : conv1d only: (B, Cout, To) f32 contiguous added to y (a residual block's skip), or nullptr
//   stride, dilation >= 1, padding >= 0; output_padding (conv_transpose1d only) in [0, max(stride, dilation))
//   To : conv1d (T + 2 padding - dilation (K - 1) - 1) / stride + 1, conv_transpose1d
//        (T - 1) stride - 2 padding + dilation (K - 1) + output_padding + 1; >= 1
// Accumulation is float32, over (channel, tap) pairs in channel-major order, in chunks of channels.
struct ConvArgs {
  float* y = nullptr;
  const float* x = nullptr;
  const float* w = nullptr;
  const float* b = nullptr;
  const float* wp = nullptr;  // conv_transpose1d: w as conv_transpose1d_pack wrote it (same ISA and sizes), or nullptr
  const float* residual = nullptr;
  bool leaky = false;
  float slope = 0.0f;
  int64_t B = 0, Cin = 0, Cout = 0, T = 0, K = 0, To = 0;
  int64_t stride = 1, padding = 0, dilation = 1, output_padding = 0;
};

// matches pyclvp/ops/numpy_ops.py::conv1d:
//   y[:, o, t] = b[o] + sum_{c,k} w[o, c, k] act(x)_padded[:, c, t stride + k dilation] (+ residual[:, o, t])
template <CpuIsa ISA>
void conv1d(const ConvArgs& a);

// matches pyclvp/ops/numpy_ops.py::conv_transpose1d, as stride phases: output j = m stride + ph gathers
// only the taps k with (ph + padding - k dilation) divisible by stride (no scatter, no zero-stuffing).
template <CpuIsa ISA>
void conv_transpose1d(const ConvArgs& a);

// conv_transpose1d's weights rearranged for its stride phases (tiles of this ISA's register-tile rows), so that a
// caller can pack an immutable weight once and pass it as ConvArgs::wp. The layout depends on the ISA and on
// (Cin, Cout, K, stride, padding, dilation) only; a.x, a.y, a.T and a.output_padding are not used.
//   conv_transpose1d_packed_size : floats of the packed weight
//   conv_transpose1d_pack        : wp (packed_size,) f32, written from a.w (Cin, Cout, K)
template <CpuIsa ISA>
int64_t conv_transpose1d_packed_size(const ConvArgs& a);
template <CpuIsa ISA>
void conv_transpose1d_pack(float* wp, const ConvArgs& a);

// matches pyclvp/ops/numpy_ops.py::leaky_relu (elementwise): x if x > 0 else x * slope, bit for bit.
//   y, x : (n,) f32, y may alias x
template <CpuIsa ISA>
void leaky_relu(float* y, const float* x, int64_t n, float slope);

// ---------------------------------------------------------------------------------------------
// helpers for the decoder step (csrc/cpu/kernels/activations.cc)

// dst[i] = src[i] rounded to the storage type (the KV cache write).   dst : (n,) in dtype; src : (n,) f32
template <CpuIsa ISA>
void store_as(void* dst, DType dtype, const float* src, int64_t n);

// dst[i] = a[i] + b[i] with a, b in their storage types widened to f32 (token + position embedding).
template <CpuIsa ISA>
void add_rows(float* dst, const void* a, DType a_dtype, const void* b, DType b_dtype, int64_t n);

}  // namespace pyclvp::cpu
