// layer_norm, rms_norm, group_norm (+ SiLU): per-row (per-group) statistics in float32, then the affine.
// Compiled once per ISA (see csrc/cpu/kernels.h for the contracts). Rows are spread over the pool.
#include <algorithm>
#include <cmath>

#include "common/threadpool.h"
#include "cpu/kernels.h"
#include "cpu/vec.h"
#include "cpu/vec_math.h"

namespace pyclvp::cpu {
namespace {

constexpr CpuIsa ISA = CpuIsa::PYCLVP_COMPILE_ISA;
using V = Vec<ISA>;
constexpr int W = V::W;
constexpr int64_t kGrain = 16384;  // elements per parallel chunk

inline int64_t rows_per_chunk(int64_t C) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)); }

// Row statistics: float32 vector sums over blocks of kBlock elements, the block sums added in
// float64. A plain running float32 sum loses ~n ulp of the row's magnitude (a row of 257 values
// near 70 drifts by 1e-4 after normalization); NumPy's pairwise sum loses ~log n, and so does this.
constexpr int64_t kBlock = 128;

template <class F>  // sum over i in [0, n) of f(v) for the W-lane vectors v of x (ragged lanes masked)
double blocked_sum(const float* x, int64_t n, F f) {
  double total = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    V acc = V::zero();
    int64_t i = b;
    for (; i + W <= e; i += W) acc = acc + f(V::load(x + i), W);
    if (i < e) acc = acc + f(load_n<V>(x + i, static_cast<int>(e - i)), static_cast<int>(e - i));
    total += acc.reduce_add();
  }
  return total;
}

// sum(x[0:n])
float row_sum(const float* x, int64_t n) {
  return static_cast<float>(blocked_sum(x, n, [](V v, int) { return v; }));
}

// sum((x[0:n] - mu)^2); the ragged lanes (read as 0) must not add mu^2: they are zeroed after the subtraction
float row_centred_sq(const float* x, int64_t n, float mu) {
  const V m = V::set1(mu);
  return static_cast<float>(blocked_sum(x, n, [&](V v, int lanes) {
    V d = v - m;
    if (lanes < W) {  // keep the first `lanes` lanes, zero the rest
      float buf[W];
      store_n(buf, d, lanes);
      d = load_n<V>(buf, lanes);
    }
    return d * d;
  }));
}

// sum(x[0:n]^2)
float row_sq(const float* x, int64_t n) {
  return static_cast<float>(blocked_sum(x, n, [](V v, int) { return v * v; }));
}

}  // namespace

template <>
void layer_norm<ISA>(float* y, const float* x, const float* g, const float* b, int64_t N, int64_t C, float eps) {
  const int64_t rpc = rows_per_chunk(C);
  parallel_for((N + rpc - 1) / rpc, [&](int64_t chunk) {
    for (int64_t n = chunk * rpc; n < std::min(N, (chunk + 1) * rpc); ++n) {
      const float* xr = x + n * C;
      float* yr = y + n * C;
      const float mu = row_sum(xr, C) / static_cast<float>(C);
      const float var = row_centred_sq(xr, C, mu) / static_cast<float>(C);
      const V inv = V::set1(1.0f / std::sqrt(var + eps)), m = V::set1(mu);
      for (int64_t i = 0; i < C; i += W) {
        const int k = static_cast<int>(std::min<int64_t>(W, C - i));
        const V xc = load_n<V>(xr + i, k) - m;
        store_n(yr + i, V::fma(xc * inv, load_n<V>(g + i, k), load_n<V>(b + i, k)), k);
      }
    }
  });
}

template <>
void rms_norm<ISA>(float* y, const float* x, const float* g, int64_t N, int64_t C, float eps, bool clamp) {
  const int64_t rpc = rows_per_chunk(C);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(C)));  // dim ** -0.5, rounded once
  parallel_for((N + rpc - 1) / rpc, [&](int64_t chunk) {
    for (int64_t n = chunk * rpc; n < std::min(N, (chunk + 1) * rpc); ++n) {
      const float* xr = x + n * C;
      float* yr = y + n * C;
      const float sq = row_sq(xr, C);
      const float denom = clamp ? std::max(std::sqrt(sq) * scale, eps)  // Tortoise: norm * scale, clamped
                                : std::sqrt(sq / static_cast<float>(C) + eps);  // transformers: eps inside
      const V inv = V::set1(1.0f / denom);
      for (int64_t i = 0; i < C; i += W) {
        const int k = static_cast<int>(std::min<int64_t>(W, C - i));
        store_n(yr + i, load_n<V>(g + i, k) * (load_n<V>(xr + i, k) * inv), k);
      }
    }
  });
}

template <>
void group_norm<ISA>(float* y, const float* x, const float* g, const float* b, int64_t B, int64_t C, int64_t T,
                     int64_t G, float eps, bool silu) {
  const int64_t cpg = C / G, n = cpg * T;  // channels per group; elements per (batch, group), contiguous
  parallel_for(B * G, [&](int64_t bg) {
    const float* xg = x + bg * n;
    float* yg = y + bg * n;
    const float mu = row_sum(xg, n) / static_cast<float>(n);
    const float inv = 1.0f / std::sqrt(row_centred_sq(xg, n, mu) / static_cast<float>(n) + eps);
    const int64_t c0 = (bg % G) * cpg;
    for (int64_t c = 0; c < cpg; ++c) {
      // per channel: y = (x - mu) * inv * g[c] + b[c] = x * a + (b[c] - mu * a) with a = inv * g[c]
      const float a = inv * g[c0 + c];
      const V va = V::set1(a), vm = V::set1(mu), vb = V::set1(b[c0 + c]);
      for (int64_t t = 0; t < T; t += W) {
        const int k = static_cast<int>(std::min<int64_t>(W, T - t));
        V v = V::fma(load_n<V>(xg + c * T + t, k) - vm, va, vb);
        if (silu) v = v / (V::set1(1.0f) + vexp(V::zero() - v));  // as activations.cc's silu
        store_n(yg + c * T + t, v, k);
      }
    }
  });
}

}  // namespace pyclvp::cpu
