// provides: Vec<AVX512>, 16 float lanes in a __m512; the interface is documented in vec.h.
// The only file with _mm512_* intrinsics. Uses AVX-512F only (no DQ/BW/VL, so bit operations on
// floats go through the integer forms), plus the 256-bit loads AVX2 brings.
#pragma once
#include <immintrin.h>

namespace pyclvp::cpu {
inline namespace PYCLVP_ISA_NAMESPACE {  // see common/isa_namespace.h

template <>
struct Vec<CpuIsa::AVX512> {
  static constexpr int W = 16;
  __m512 v;

  static Vec zero() { return {_mm512_setzero_ps()}; }
  static Vec set1(float f) { return {_mm512_set1_ps(f)}; }
  static Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Vec load(const f16_t* p) { return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))}; }
  static Vec load(const bf16_t* p) {
    const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(u, 16))};
  }
  static Vec load(const int8_t* p) {  // 16 bytes, sign-extended to 16 x int32, converted (exact)
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))};
  }
  // One 64-byte load feeds two vectors of half-precision values (see vec_avx2.h).
  static void load2(const float* p, Vec& lo, Vec& hi) { lo = load(p), hi = load(p + W); }
  static void load2(const f16_t* p, Vec& lo, Vec& hi) {
    const __m512i u = _mm512_loadu_si512(p);
    lo.v = _mm512_cvtph_ps(_mm512_castsi512_si256(u));
    hi.v = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(u, 1));
  }
  static void load2(const bf16_t* p, Vec& lo, Vec& hi) {
    const __m512i u = _mm512_loadu_si512(p);
    lo.v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(u)), 16));
    hi.v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(u, 1)), 16));
  }
  static __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static Vec load_partial(const float* p, int n) { return {_mm512_maskz_loadu_ps(tail_mask(n), p)}; }

  void store(float* p) const { _mm512_storeu_ps(p, v); }
  void store(f16_t* p) const {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  void store(bf16_t* p) const {
    // Round to nearest even in the integer domain (as half.h::to_bf16), NaN -> 0x7fc0, then narrow u32 -> u16.
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_blend_epi32(nan, r, _mm512_set1_epi32(0x7fc0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
  void store_partial(float* p, int n) const { _mm512_mask_storeu_ps(p, tail_mask(n), v); }

  friend Vec operator+(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
  friend Vec operator-(Vec a, Vec b) { return {_mm512_sub_ps(a.v, b.v)}; }
  friend Vec operator*(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
  friend Vec operator/(Vec a, Vec b) { return {_mm512_div_ps(a.v, b.v)}; }
  static Vec fma(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  static Vec max(Vec a, Vec b) { return {_mm512_max_ps(a.v, b.v)}; }
  static Vec min(Vec a, Vec b) { return {_mm512_min_ps(a.v, b.v)}; }
  static Vec if_positive(Vec c, Vec a, Vec b) {
    return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(c.v, _mm512_setzero_ps(), _CMP_GT_OQ), b.v, a.v)};
  }
  static Vec abs(Vec a) {
    return {_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(0x7fffffff)))};
  }
  static Vec copysign(Vec mag, Vec sign) {
    const __m512i s = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i m = _mm512_andnot_si512(s, _mm512_castps_si512(mag.v));
    return {_mm512_castsi512_ps(_mm512_or_si512(m, _mm512_and_si512(s, _mm512_castps_si512(sign.v))))};
  }
  static Vec round(Vec a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  static Vec exp2i(Vec n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
    return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
  }
  float reduce_add() const { return _mm512_reduce_add_ps(v); }
  float reduce_max() const { return _mm512_reduce_max_ps(v); }
};

}  // namespace PYCLVP_ISA_NAMESPACE
}  // namespace pyclvp::cpu
