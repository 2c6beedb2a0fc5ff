// provides: f16_t / bf16_t storage types and their scalar conversions to and from float32.
//
// Half-precision values are *stored* (weights, the KV cache) and widened to float32 before any
// arithmetic: every kernel accumulates in float32. The vector conversions live in cpu/vec_*.h.
//   float16  (IEEE binary16): 1 sign, 5 exponent, 10 mantissa bits; NumPy's np.float16.
//   bfloat16: the top 16 bits of a float32; NumPy has no bfloat16, so Python holds the raw uint16
//             bits (pyclvp/io/safetensors.py bf16="raw", pyclvp/io/half.py Bf16Array).
// Narrowing rounds to nearest even, as torch's .to(torch.float16 / torch.bfloat16) does.
#pragma once
#include <cstdint>
#include <cstring>

#include "common/isa_namespace.h"

namespace pyclvp {

struct f16_t {
  uint16_t bits;
};
struct bf16_t {
  uint16_t bits;
};

// Storage dtype codes shared by the bindings and the kernels. The names ("float32", "float16",
// "bfloat16") must match pyclvp/ops/cpu_ops.py. I8 is a weight-only code: int8 matrices with per-block
// scales (pyclvp/io/q8.py), read by linear_q8 only; never a KV-cache or embedding-table dtype.
enum class DType { F32 = 0, F16 = 1, BF16 = 2, I8 = 3 };

inline namespace PYCLVP_ISA_NAMESPACE {  // see common/isa_namespace.h

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float to_f32(float x) { return x; }
inline float to_f32(bf16_t h) { return f32_from_bits(static_cast<uint32_t>(h.bits) << 16); }

// ref: IEEE 754-2008 binary16; the bit manipulation follows Maratyszcza/FP16 fp16_ieee_to_fp32_value.
inline float to_f32(f16_t h) {
  const uint32_t w = static_cast<uint32_t>(h.bits) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  // Normal and inf/NaN: move the exponent/mantissa into place and rescale by 2^-112.
  const float normalized = f32_from_bits((two_w >> 4) + (UINT32_C(0xE0) << 23)) * f32_from_bits(UINT32_C(0x7800000));
  // Subnormal: build 0.5 + m * 2^-24 style value and subtract the bias.
  const float denormalized = f32_from_bits((two_w >> 17) | (UINT32_C(126) << 23)) - 0.5f;
  const uint32_t result = sign | (two_w < (UINT32_C(1) << 27) ? f32_bits(denormalized) : f32_bits(normalized));
  return f32_from_bits(result);
}

// float32 -> bfloat16, round to nearest even; NaN stays a (quiet) NaN.
inline bf16_t to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{0x7fc0};
  return bf16_t{static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// float32 -> float16, round to nearest even, overflow to inf; ref: Maratyszcza/FP16 fp16_ieee_from_fp32_value.
inline f16_t to_f16(float f) {
  const float scale_to_inf = f32_from_bits(UINT32_C(0x77800000));
  const float scale_to_zero = f32_from_bits(UINT32_C(0x08800000));
  const uint32_t w = f32_bits(f);
  float base = (f < 0 ? -f : f) * scale_to_inf * scale_to_zero;
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & UINT32_C(0x80000000);
  uint32_t bias = shl1_w & UINT32_C(0xFF000000);
  if (bias < UINT32_C(0x71000000)) bias = UINT32_C(0x71000000);
  base = f32_from_bits((bias >> 1) + UINT32_C(0x07800000)) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
  const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return f16_t{static_cast<uint16_t>((sign >> 16) | (shl1_w > UINT32_C(0xFF000000) ? UINT32_C(0x7E00) : nonsign))};
}

template <typename T>
inline T from_f32(float x);
template <>
inline float from_f32<float>(float x) { return x; }
template <>
inline f16_t from_f32<f16_t>(float x) { return to_f16(x); }
template <>
inline bf16_t from_f32<bf16_t>(float x) { return to_bf16(x); }

}  // namespace PYCLVP_ISA_NAMESPACE
}  // namespace pyclvp
