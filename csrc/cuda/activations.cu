// gelu_new, gelu, silu, gated_gelu (elementwise, grid-stride loops) and softmax (one block per row).
// Contracts in csrc/cuda/kernels.h; the math (gelu_new_f, gelu_f) is in csrc/cuda/common.cuh and
// matches pyclvp/ops/numpy_ops.py.
#include "cuda/common.cuh"

namespace pyclvp::cuda {
namespace {

constexpr int kThreads = 256;

template <int Which>  // 0: gelu_new, 1: gelu, 2: silu
__global__ void __launch_bounds__(kThreads) elementwise_kernel(float* y, const float* x, int64_t n) {
  wait_for_previous_kernel();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    y[i] = Which == 0 ? gelu_new_f(x[i]) : Which == 1 ? gelu_f(x[i]) : silu_f(x[i]);
}

// y[r, j] = x[r, j] * gelu(x[r, F + j])
__global__ void __launch_bounds__(kThreads) gated_gelu_kernel(float* y, const float* x, int64_t N, int64_t F) {
  wait_for_previous_kernel();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < N * F;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / F, j = i % F;
    y[i] = x[r * 2 * F + j] * gelu_f(x[r * 2 * F + F + j]);
  }
}

// e = exp(x - max(x)); y = e / sum(e), over one row per block
__global__ void __launch_bounds__(kThreads) softmax_kernel(float* y, const float* x, int64_t C) {
  wait_for_previous_kernel();
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * C;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * C;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < C; i += kThreads) mx = fmaxf(mx, xr[i]);
  mx = block_max<kThreads>(mx);  // its last barrier precedes every write (y may alias x)
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < C; i += kThreads) {
    const float e = expf(xr[i] - mx);
    yr[i] = e;
    s += e;
  }
  s = block_sum<kThreads>(s);
  for (int64_t i = threadIdx.x; i < C; i += kThreads) yr[i] = yr[i] / s;  // a thread's own writes only
}

template <int Which>
void elementwise(float* y, const float* x, int64_t n, StreamHandle s) {
  if (n == 0) return;
  launch(elementwise_kernel<Which>, grid_stride_blocks(n), kThreads, s, y, x, n);
}

}  // namespace

void gelu_new(float* y, const float* x, int64_t n, StreamHandle s) { elementwise<0>(y, x, n, s); }

void gelu(float* y, const float* x, int64_t n, StreamHandle s) { elementwise<1>(y, x, n, s); }

void silu(float* y, const float* x, int64_t n, StreamHandle s) { elementwise<2>(y, x, n, s); }

void gated_gelu(float* y, const float* x, int64_t N, int64_t F, StreamHandle s) {
  if (N == 0 || F == 0) return;
  launch(gated_gelu_kernel, grid_stride_blocks(N * F), kThreads, s, y, x, N, F);
}

void softmax(float* y, const float* x, int64_t N, int64_t C, StreamHandle s) {
  if (N == 0) return;
  launch(softmax_kernel, grid_x(N, "softmax"), kThreads, s, y, x, C);
}

}  // namespace pyclvp::cuda
