// tools/avx512_emu only: SIMDe's AVX-512F emulation plus, written lane by lane, the intrinsics
// csrc/cpu/vec_avx512.h uses that SIMDe 0.7.4 lacks (half conversions through csrc/common/half.h, int8 widening,
// which the tests check against NumPy; reductions in _mm512_reduce_*'s halving order).
#pragma once
#include <simde/x86/avx512.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include "common/half.h"

static inline simde__m512 simde_mm512_cvtph_ps(simde__m256i h) {
  uint16_t a[16]; float f[16];
  simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(a), h);
  for (int i = 0; i < 16; ++i) f[i] = pyclvp::to_f32(pyclvp::f16_t{a[i]});
  return simde_mm512_loadu_ps(f);
}
static inline simde__m256i simde_mm512_cvtps_ph(simde__m512 v, int) {
  float f[16]; uint16_t a[16];
  simde_mm512_storeu_ps(f, v);
  for (int i = 0; i < 16; ++i) a[i] = pyclvp::to_f16(f[i]).bits;
  return simde_mm256_loadu_si256(reinterpret_cast<const simde__m256i*>(a));
}
static inline simde__m512i simde_mm512_cvtepu16_epi32(simde__m256i h) {
  uint16_t a[16]; uint32_t b[16];
  simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(a), h);
  for (int i = 0; i < 16; ++i) b[i] = a[i];
  return simde_mm512_loadu_si512(b);
}
static inline simde__m256i simde_mm512_cvtepi32_epi16(simde__m512i v) {
  int32_t a[16]; int16_t b[16];
  simde_mm512_storeu_si512(a, v);
  for (int i = 0; i < 16; ++i) b[i] = static_cast<int16_t>(a[i]);
  return simde_mm256_loadu_si256(reinterpret_cast<const simde__m256i*>(b));
}
static inline simde__m512 simde_mm512_maskz_loadu_ps(simde__mmask16 m, const float* p) {
  float f[16];
  for (int i = 0; i < 16; ++i) f[i] = (m >> i) & 1 ? p[i] : 0.0f;
  return simde_mm512_loadu_ps(f);
}
static inline void simde_mm512_mask_storeu_ps(float* p, simde__mmask16 m, simde__m512 v) {
  float f[16];
  simde_mm512_storeu_ps(f, v);
  for (int i = 0; i < 16; ++i) if ((m >> i) & 1) p[i] = f[i];
}
static inline simde__m512i simde_mm512_cvtps_epi32(simde__m512 v) {
  float f[16]; int32_t a[16];
  simde_mm512_storeu_ps(f, v);
  for (int i = 0; i < 16; ++i) a[i] = static_cast<int32_t>(std::nearbyint(f[i]));
  return simde_mm512_loadu_si512(a);
}
static inline float simde_mm512_reduce_add_ps(simde__m512 v) {
  float f[16];
  simde_mm512_storeu_ps(f, v);
  for (int w = 8; w >= 1; w >>= 1) for (int i = 0; i < w; ++i) f[i] += f[i + w];
  return f[0];
}
static inline float simde_mm512_reduce_max_ps(simde__m512 v) {
  float f[16];
  simde_mm512_storeu_ps(f, v);
  for (int w = 8; w >= 1; w >>= 1) for (int i = 0; i < w; ++i) f[i] = f[i] > f[i + w] ? f[i] : f[i + w];
  return f[0];
}
static inline simde__m512i simde_mm512_cvtepi8_epi32(simde__m128i b8) {
  int8_t a[16]; int32_t b[16];
  simde_mm_storeu_si128(reinterpret_cast<simde__m128i*>(a), b8);
  for (int i = 0; i < 16; ++i) b[i] = a[i];
  return simde_mm512_loadu_si512(b);
}
static inline simde__m512 simde_mm512_cvtepi32_ps(simde__m512i v) {
  int32_t a[16]; float f[16];
  simde_mm512_storeu_si512(a, v);
  for (int i = 0; i < 16; ++i) f[i] = static_cast<float>(a[i]);
  return simde_mm512_loadu_ps(f);
}
