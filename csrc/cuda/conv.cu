// conv1d, conv_transpose1d (direct, gathered: no atomics), location_variable_conv and leaky_relu (grid-stride).
// Contracts in csrc/cuda/kernels.h; the math is pyclvp/ops/numpy_ops.py's (torch's (B, C, T) layout).
//
// A block computes kConvRows output channels x kConvThreads output times of one batch row: each thread
// owns one time and kConvRows float32 accumulators, walks (channel, tap) and reads each input value
// once for all its channels; the warp's weight reads are one address (a broadcast), its input reads
// consecutive times (coalesced for stride 1). conv_transpose1d gathers: output j takes tap k from input
// t = (j + padding - k dilation) / stride when that division is exact and t in [0, T): the CPU
// kernel's stride phases (csrc/cpu/kernels/conv.cc), one thread at a time. Correct and simple rather
// than fast: no shared-memory tiles yet.
#include "cuda/common.cuh"

namespace pyclvp::cuda {
namespace {

constexpr int kConvThreads = 128;  // output times per block
constexpr int kConvRows = 8;       // output channels per block

template <bool Transposed>
__global__ void __launch_bounds__(kConvThreads) conv_kernel(ConvArgs a) {
  wait_for_previous_kernel();
  const int64_t j = blockIdx.x * static_cast<int64_t>(kConvThreads) + threadIdx.x;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kConvRows, bb = blockIdx.z;
  if (j >= a.To) return;  // no barriers below
  float acc[kConvRows];
  int64_t orow[kConvRows];  // clamped to the last channel: reads stay in bounds, the extra rows are not stored
#pragma unroll
  for (int r = 0; r < kConvRows; ++r) {
    orow[r] = o0 + r < a.Cout ? o0 + r : a.Cout - 1;
    acc[r] = a.b ? a.b[orow[r]] : 0.0f;
  }
  const float* x = a.x + bb * a.Cin * a.T;
  for (int64_t k = 0; k < a.K; ++k) {
    int64_t t;
    if constexpr (Transposed) {
      const int64_t u = j + a.padding - k * a.dilation;
      if (u < 0 || u % a.stride) continue;
      t = u / a.stride;
    } else {
      t = j * a.stride + k * a.dilation - a.padding;
    }
    if (t < 0 || t >= a.T) continue;
    for (int64_t c = 0; c < a.Cin; ++c) {
      float xv = x[c * a.T + t];
      if (a.leaky && !(xv > 0.0f)) xv *= a.slope;  // leaky_relu's select, as the reference
#pragma unroll
      for (int r = 0; r < kConvRows; ++r) {
        // conv1d: w (Cout, Cin, K); conv_transpose1d: w (Cin, Cout, K)
        const float wv = Transposed ? a.w[(c * a.Cout + orow[r]) * a.K + k] : a.w[(orow[r] * a.Cin + c) * a.K + k];
        acc[r] = fmaf(wv, xv, acc[r]);
      }
    }
  }
  float* y = a.y + bb * a.Cout * a.To + j;
  const float* res = a.residual ? a.residual + bb * a.Cout * a.To + j : nullptr;
#pragma unroll
  for (int r = 0; r < kConvRows; ++r)
    if (o0 + r < a.Cout) y[(o0 + r) * a.To] = res ? acc[r] + res[(o0 + r) * a.To] : acc[r];
}

// LVC: a block computes kConvRows output channels x kConvThreads times of one batch row; thread t's window
// l = t / hop picks the kernels (c, o, k, l), read strided by L (the warp's threads share one or a few windows).
__global__ void __launch_bounds__(kConvThreads)
    lvc_kernel(float* y, const float* x, const float* kern, const float* bias, int64_t Cin, int64_t Cout, int64_t K,
               int64_t L, int64_t hop) {
  wait_for_previous_kernel();
  const int64_t T = L * hop, t = blockIdx.x * static_cast<int64_t>(kConvThreads) + threadIdx.x;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kConvRows, bb = blockIdx.z;
  if (t >= T) return;  // no barriers below
  const int64_t l = t / hop, pad = (K - 1) / 2;
  float acc[kConvRows];
  int64_t orow[kConvRows];  // clamped to the last channel: reads stay in bounds, the extra rows are not stored
#pragma unroll
  for (int r = 0; r < kConvRows; ++r) {
    orow[r] = o0 + r < Cout ? o0 + r : Cout - 1;
    acc[r] = bias[(bb * Cout + orow[r]) * L + l];
  }
  const float* xb = x + bb * Cin * T;
  const float* kb = kern + bb * Cin * Cout * K * L;
  for (int64_t c = 0; c < Cin; ++c) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = t + k - pad;
      if (s < 0 || s >= T) continue;
      const float xv = xb[c * T + s];
#pragma unroll
      for (int r = 0; r < kConvRows; ++r) acc[r] = fmaf(kb[((c * Cout + orow[r]) * K + k) * L + l], xv, acc[r]);
    }
  }
  float* yb = y + bb * Cout * T + t;
#pragma unroll
  for (int r = 0; r < kConvRows; ++r)
    if (o0 + r < Cout) yb[(o0 + r) * T] = acc[r];
}

__global__ void __launch_bounds__(256) leaky_relu_kernel(float* y, const float* x, int64_t n, float slope) {
  wait_for_previous_kernel();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(256) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * 256)
    y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;
}

template <bool Transposed>
void conv(const ConvArgs& a, StreamHandle s, const char* what) {
  if (a.B == 0 || a.Cout == 0 || a.To == 0) return;
  const dim3 grid(grid_x(ceil_div(a.To, kConvThreads), what), grid_yz(ceil_div(a.Cout, kConvRows), what),
                  grid_yz(a.B, what));
  launch(conv_kernel<Transposed>, grid, kConvThreads, s, a);
}

}  // namespace

void conv1d(const ConvArgs& a, StreamHandle s) { conv<false>(a, s, "conv1d"); }

void conv_transpose1d(const ConvArgs& a, StreamHandle s) { conv<true>(a, s, "conv_transpose1d"); }

void location_variable_conv(float* y, const float* x, const float* kernels, const float* bias, int64_t B, int64_t Cin,
                            int64_t Cout, int64_t K, int64_t L, int64_t hop, StreamHandle s) {
  const int64_t T = L * hop;
  if (B == 0 || Cout == 0 || T == 0) return;
  const dim3 grid(grid_x(ceil_div(T, kConvThreads), "location_variable_conv"),
                  grid_yz(ceil_div(Cout, kConvRows), "location_variable_conv"), grid_yz(B, "location_variable_conv"));
  launch(lvc_kernel, grid, kConvThreads, s, y, x, kernels, bias, Cin, Cout, K, L, hop);
}

void leaky_relu(float* y, const float* x, int64_t n, float slope, StreamHandle s) {
  if (n == 0) return;
  launch(leaky_relu_kernel, grid_stride_blocks(n), 256, s, y, x, n, slope);
}

}  // namespace pyclvp::cuda
