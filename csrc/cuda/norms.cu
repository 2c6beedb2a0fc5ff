// layer_norm, rms_norm, group_norm: one block per row (per (batch, group)), statistics reduced in
// float32 over the block, then the affine. Contracts in csrc/cuda/kernels.h; the math is
// pyclvp/ops/numpy_ops.py's: two passes (mean, then the centred variance), no E[x^2] - E[x]^2.
#include "cuda/common.cuh"

namespace pyclvp::cuda {
namespace {

constexpr int kNormThreads = 256;

struct Stats {
  float mu, rstd;  // mean and 1 / sqrt(var + eps)
};

// Two-pass statistics of x[0:n] over the block (every thread must call it).
__device__ Stats centred_stats(const float* x, int64_t n, float eps) {
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kNormThreads) s += x[i];
  const float mu = block_sum<kNormThreads>(s) / static_cast<float>(n);
  float q = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kNormThreads) {
    const float d = x[i] - mu;
    q = fmaf(d, d, q);
  }
  const float var = block_sum<kNormThreads>(q) / static_cast<float>(n);
  return {mu, 1.0f / sqrtf(var + eps)};
}

// y[i] = (x[i] - mu) * rstd * g[i] + b[i] for this thread's elements (each reads only what it writes)
__device__ void ln_apply(float* y, const float* x, int64_t C, Stats st, const float* g, const float* b) {
  for (int64_t i = threadIdx.x; i < C; i += kNormThreads) y[i] = (x[i] - st.mu) * st.rstd * g[i] + b[i];
}

__global__ void __launch_bounds__(kNormThreads)
    layer_norm_kernel(float* y, const float* x, int64_t ldx, const float* g, const float* b, float eps, int64_t C,
                      const float* g2, const float* b2, float eps2) {
  wait_for_previous_kernel();
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * ldx;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * C;
  ln_apply(yr, xr, C, centred_stats(xr, C, eps), g, b);  // the stats' last barrier precedes every write
  if (g2) ln_apply(yr, yr, C, centred_stats(yr, C, eps2), g2, b2);  // a thread re-reads its own writes only
}

__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(float* y, const float* x, const float* g, float eps, bool clamp, int64_t C) {
  wait_for_previous_kernel();
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * C;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * C;
  float q = 0.0f;
  for (int64_t i = threadIdx.x; i < C; i += kNormThreads) q = fmaf(xr[i], xr[i], q);
  const float sq = block_sum<kNormThreads>(q);
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(C)));  // dim ** -0.5, rounded once
  const float denom = clamp ? fmaxf(sqrtf(sq) * scale, eps)                  // Tortoise: norm * scale, clamped
                            : sqrtf(sq / static_cast<float>(C) + eps);       // transformers: eps inside
  for (int64_t i = threadIdx.x; i < C; i += kNormThreads) yr[i] = g[i] * (xr[i] / denom);
}

// One block per (batch, group): the group's C/G channels x T times are contiguous.
__global__ void __launch_bounds__(kNormThreads)
    group_norm_kernel(float* y, const float* x, const float* g, const float* b, int64_t G, float eps, bool silu,
                      int64_t C, int64_t T) {
  wait_for_previous_kernel();
  const int64_t cpg = C / G, n = cpg * T, bg = blockIdx.x, c0 = (bg % G) * cpg;
  const float* xg = x + bg * n;
  float* yg = y + bg * n;
  const Stats st = centred_stats(xg, n, eps);
  for (int64_t i = threadIdx.x; i < n; i += kNormThreads) {
    const int64_t c = c0 + i / T;
    const float v = (xg[i] - st.mu) * st.rstd * g[c] + b[c];
    yg[i] = silu ? silu_f(v) : v;
  }
}

}  // namespace

void layer_norm(float* y, const float* x, int64_t ldx, const float* g, const float* b, float eps, int64_t N, int64_t C,
                StreamHandle s, const float* g2, const float* b2, float eps2) {
  if (N == 0 || C == 0) return;
  launch(layer_norm_kernel, grid_x(N, "layer_norm"), kNormThreads, s, y, x, ldx, g, b, eps, C, g2, b2, eps2);
}

void rms_norm(float* y, const float* x, const float* g, float eps, bool clamp, int64_t N, int64_t C, StreamHandle s) {
  if (N == 0 || C == 0) return;
  launch(rms_norm_kernel, grid_x(N, "rms_norm"), kNormThreads, s, y, x, g, eps, clamp, C);
}

void group_norm(float* y, const float* x, const float* g, const float* b, int64_t G, float eps, bool silu, int64_t B,
                int64_t C, int64_t T, StreamHandle s) {
  if (B == 0 || C == 0 || T == 0) return;
  launch(group_norm_kernel, grid_x(B * G, "group_norm"), kNormThreads, s, y, x, g, b, G, eps, silu, C, T);
}

}  // namespace pyclvp::cuda
