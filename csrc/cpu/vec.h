// provides: Vec<ISA>, one SIMD register of float32 lanes and the few operations the kernels use;
// the scalar specialization (one lane, plain C++); load_n/store_n for ragged tails of any dtype.
//
// Kernels (csrc/cpu/kernels/*.cc) are written once against this interface and compiled once per
// ISA, so Vec<SCALAR> is also the reference the SIMD versions are tested against. The interface,
// which vec_avx2.h and vec_avx512.h implement with the same names:
//
//   W                                  lanes per register (1, 8, 16)
//   zero(), set1(f)                    constants
//   load(p), store(p)                  W lanes from/to float*, f16_t* or bf16_t* (half: widened / rounded to nearest even);
//                                      load also from const int8_t* (sign-extended, converted exactly: int8 weights)
//   load2(p, lo, hi)                   2W lanes: lo = p[0:W], hi = p[W:2W]; half types with one wide load
//   load_partial(p, n), store_partial  the first n < W float lanes (the rest read as 0 / left untouched)
//   + - * /, fma(a, b, c) = a*b + c    arithmetic (fma may be fused or not: it is a*b+c within 1 ulp)
//   max(a, b), min(a, b)               lane-wise; b where either is NaN (as x86's maxps / minps)
//   if_positive(c, a, b)               lane-wise c > 0 ? a : b (a NaN c picks b)
//   abs, copysign(m, s)                lane-wise
//   round(x)                           to nearest integer, ties to even
//   exp2i(n)                           2^n for integer-valued n in [-126, 127] (builds the exponent bits)
//   reduce_add(), reduce_max()         horizontal, to a float
//
// Intrinsics appear only in vec_avx2.h and vec_avx512.h.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/half.h"
#include "cpu/isa.h"

namespace pyclvp::cpu {
inline namespace PYCLVP_ISA_NAMESPACE {  // see common/isa_namespace.h

template <CpuIsa ISA>
struct Vec;

template <>
struct Vec<CpuIsa::SCALAR> {
  static constexpr int W = 1;
  float v;

  static Vec zero() { return {0.0f}; }
  static Vec set1(float f) { return {f}; }
  static Vec load(const float* p) { return {*p}; }
  static Vec load(const f16_t* p) { return {to_f32(*p)}; }
  static Vec load(const bf16_t* p) { return {to_f32(*p)}; }
  static Vec load(const int8_t* p) { return {static_cast<float>(*p)}; }
  template <class T>
  static void load2(const T* p, Vec& lo, Vec& hi) { lo = load(p), hi = load(p + 1); }
  static Vec load_partial(const float* p, int n) { return {n > 0 ? *p : 0.0f}; }
  void store(float* p) const { *p = v; }
  void store(f16_t* p) const { *p = to_f16(v); }
  void store(bf16_t* p) const { *p = to_bf16(v); }
  void store_partial(float* p, int n) const {
    if (n > 0) *p = v;
  }

  friend Vec operator+(Vec a, Vec b) { return {a.v + b.v}; }
  friend Vec operator-(Vec a, Vec b) { return {a.v - b.v}; }
  friend Vec operator*(Vec a, Vec b) { return {a.v * b.v}; }
  friend Vec operator/(Vec a, Vec b) { return {a.v / b.v}; }
  static Vec fma(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
  static Vec max(Vec a, Vec b) { return {a.v > b.v ? a.v : b.v}; }
  static Vec min(Vec a, Vec b) { return {a.v < b.v ? a.v : b.v}; }
  static Vec if_positive(Vec c, Vec a, Vec b) { return {c.v > 0.0f ? a.v : b.v}; }
  static Vec abs(Vec a) { return {std::fabs(a.v)}; }
  static Vec copysign(Vec mag, Vec sign) { return {std::copysign(mag.v, sign.v)}; }
  static Vec round(Vec a) { return {std::nearbyint(a.v)}; }
  static Vec exp2i(Vec n) { return {f32_from_bits(static_cast<uint32_t>(static_cast<int32_t>(n.v) + 127) << 23)}; }
  float reduce_add() const { return v; }
  float reduce_max() const { return v; }
};

// The first n (0 <= n <= W) lanes of any storage type; the rest read as zero / are not written.
template <class V, class T>
inline V load_n(const T* p, int n) {
  if (n == V::W) return V::load(p);
  if constexpr (std::is_same_v<T, float>) {
    return V::load_partial(p, n);
  } else {
    T buf[V::W] = {};
    std::memcpy(buf, p, sizeof(T) * n);
    return V::load(buf);
  }
}

template <class V, class T>
inline void store_n(T* p, V x, int n) {
  if (n == V::W) return x.store(p);
  if constexpr (std::is_same_v<T, float>) {
    x.store_partial(p, n);
  } else {
    T buf[V::W];
    x.store(buf);
    std::memcpy(p, buf, sizeof(T) * n);
  }
}

}  // namespace PYCLVP_ISA_NAMESPACE
}  // namespace pyclvp::cpu

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include "cpu/vec_avx2.h"
#endif
#if defined(__AVX512F__)
#include "cpu/vec_avx512.h"
#endif
