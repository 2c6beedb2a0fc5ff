// gelu_new, gelu, silu, gated_gelu, softmax, and the decoder step's small conversions (store_as, add_rows).
// Compiled once per ISA (see csrc/cpu/kernels.h for the contracts); the math is in cpu/vec_math.h.
#include <algorithm>

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

// y[i] = f(x[i]) for i in [0, n), in parallel chunks
template <class F>
void map(float* y, const float* x, int64_t n, F f) {
  parallel_for((n + kGrain - 1) / kGrain, [&](int64_t chunk) {
    const int64_t end = std::min(n, (chunk + 1) * kGrain);
    for (int64_t i = chunk * kGrain; i < end; i += W) {
      const int k = static_cast<int>(std::min<int64_t>(W, end - i));
      store_n(y + i, f(load_n<V>(x + i, k)), k);
    }
  });
}

template <class T>
void store_as_t(T* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i += W) {
    const int k = static_cast<int>(std::min<int64_t>(W, n - i));
    store_n(dst + i, load_n<V>(src + i, k), k);
  }
}

template <class T>
V load_as(const void* p, int64_t i, int k) {
  return load_n<V>(static_cast<const T*>(p) + i, k);
}

V load_dtype(const void* p, DType dt, int64_t i, int k) {
  switch (dt) {
    case DType::F16: return load_as<f16_t>(p, i, k);
    case DType::BF16: return load_as<bf16_t>(p, i, k);
    default: return load_as<float>(p, i, k);
  }
}

}  // namespace

template <>
void gelu_new<ISA>(float* y, const float* x, int64_t n) {
  map(y, x, n, [](V v) { return vgelu_new(v); });
}

template <>
void gelu<ISA>(float* y, const float* x, int64_t n) {
  map(y, x, n, [](V v) { return vgelu(v); });
}

template <>
void silu<ISA>(float* y, const float* x, int64_t n) {
  map(y, x, n, [](V v) { return v / (V::set1(1.0f) + vexp(V::zero() - v)); });  // x sigmoid(x); x -> -inf: -0
}

template <>
void gated_gelu<ISA>(float* y, const float* x, int64_t N, int64_t F) {
  const int64_t rpc = std::max<int64_t>(1, kGrain / std::max<int64_t>(F, 1));
  parallel_for((N + rpc - 1) / rpc, [&](int64_t chunk) {
    for (int64_t n = chunk * rpc; n < std::min(N, (chunk + 1) * rpc); ++n) {
      const float* h = x + n * 2 * F;  // x[n, :F]; the gate is x[n, F:]
      for (int64_t i = 0; i < F; i += W) {
        const int k = static_cast<int>(std::min<int64_t>(W, F - i));
        store_n(y + n * F + i, load_n<V>(h + i, k) * vgelu(load_n<V>(h + F + i, k)), k);
      }
    }
  });
}

template <>
void softmax<ISA>(float* y, const float* x, int64_t N, int64_t C) {
  const int64_t rpc = std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1));
  parallel_for((N + rpc - 1) / rpc, [&](int64_t chunk) {
    for (int64_t n = chunk * rpc; n < std::min(N, (chunk + 1) * rpc); ++n) {
      const float* xr = x + n * C;
      float* yr = y + n * C;
      float mx = xr[0];
      for (int64_t i = 1; i < C; ++i) mx = std::max(mx, xr[i]);
      const V m = V::set1(mx);
      V sum = V::zero();
      for (int64_t i = 0; i < C; i += W) {
        const int k = static_cast<int>(std::min<int64_t>(W, C - i));
        const V e = vexp(load_n<V>(xr + i, k) - m);
        store_n(yr + i, e, k);
        sum = sum + load_n<V>(yr + i, k);  // the ragged lanes of e are not zero: re-read what was stored
      }
      const V s = V::set1(sum.reduce_add());
      for (int64_t i = 0; i < C; i += W) {
        const int k = static_cast<int>(std::min<int64_t>(W, C - i));
        store_n(yr + i, load_n<V>(yr + i, k) / s, k);
      }
    }
  });
}

template <>
void store_as<ISA>(void* dst, DType dtype, const float* src, int64_t n) {
  switch (dtype) {
    case DType::F16: return store_as_t(static_cast<f16_t*>(dst), src, n);
    case DType::BF16: return store_as_t(static_cast<bf16_t*>(dst), src, n);
    default: return store_as_t(static_cast<float*>(dst), src, n);
  }
}

template <>
void add_rows<ISA>(float* dst, const void* a, DType a_dtype, const void* b, DType b_dtype, int64_t n) {
  for (int64_t i = 0; i < n; i += W) {
    const int k = static_cast<int>(std::min<int64_t>(W, n - i));
    store_n(dst + i, load_dtype(a, a_dtype, i, k) + load_dtype(b, b_dtype, i, k), k);
  }
}

}  // namespace pyclvp::cpu
