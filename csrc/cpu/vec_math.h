// provides: vexp, vgelu_new, vgelu: the transcendental functions the kernels need, written once
// against Vec<ISA> (so the scalar, AVX2 and AVX-512 builds run the same polynomial).
//
// Accuracy (float32, measured against float64 in tests/test_ops.py): vexp within 2 ulp on
// [-87, 88]; the GELUs within a few 1e-7 relative. The NumPy reference evaluates these with
// np.exp/np.tanh and a float64 erfc, so the kernels agree with it to ~1e-6, far inside 1e-4.
#pragma once
#include "cpu/vec.h"

namespace pyclvp::cpu {
inline namespace PYCLVP_ISA_NAMESPACE {  // see common/isa_namespace.h

// e^x. ref: Cephes expf (S. L. Moshier): x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of
// ln2), e^r by a degree-6 polynomial, 2^n by building the exponent. Inputs are clamped to
// [-87.3, 88]: below, the result is ~1e-38 (not 0), which no softmax sum can tell apart from 0.
// The clamp keeps a NaN (V::max / V::min return their second operand when one is NaN), so NaN in,
// NaN out, as np.exp: a NaN score then spreads through a softmax row as in the reference.
template <class V>
inline V vexp(V x) {
  x = V::min(V::set1(88.0f), V::max(V::set1(-87.33654475f), x));
  const V n = V::round(x * V::set1(1.44269504088896341f));
  V r = V::fma(n, V::set1(-0.693359375f), x);
  r = V::fma(n, V::set1(2.12194440e-4f), r);
  V p = V::set1(1.9875691500e-4f);
  p = V::fma(p, r, V::set1(1.3981999507e-3f));
  p = V::fma(p, r, V::set1(8.3334519073e-3f));
  p = V::fma(p, r, V::set1(4.1665795894e-2f));
  p = V::fma(p, r, V::set1(1.6666665459e-1f));
  p = V::fma(p, r, V::set1(5.0000001201e-1f));
  const V y = V::fma(p * r, r, r + V::set1(1.0f));
  return y * V::exp2i(n);
}

// matches pyclvp/ops/numpy_ops.py::gelu_new: 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3),
// evaluated as x * sigmoid(2u) = x / (1 + e^{-2u}) (the same function: 0.5 (1 + tanh u) = sigmoid(2u)),
// which needs one exp and has no cancellation for small x.
template <class V>
inline V vgelu_new(V x) {
  const V u = V::set1(0.7978845608028654f) * V::fma(V::set1(0.044715f) * x, x * x, x);
  return x / (V::set1(1.0f) + vexp(V::set1(-2.0f) * u));
}

// matches pyclvp/ops/numpy_ops.py::erf (Numerical Recipes erfc Chebyshev fit, |error| < 1.2e-7),
// here in float32; the sign is restored with copysign as the reference's np.where does.
template <class V>
inline V verf(V x) {
  const V z = V::abs(x);
  const V t = V::set1(1.0f) / V::fma(V::set1(0.5f), z, V::set1(1.0f));
  V p = V::set1(0.17087277f);
  p = V::fma(p, t, V::set1(-0.82215223f));
  p = V::fma(p, t, V::set1(1.48851587f));
  p = V::fma(p, t, V::set1(-1.13520398f));
  p = V::fma(p, t, V::set1(0.27886807f));
  p = V::fma(p, t, V::set1(-0.18628806f));
  p = V::fma(p, t, V::set1(0.09678418f));
  p = V::fma(p, t, V::set1(0.37409196f));
  p = V::fma(p, t, V::set1(1.00002368f));
  p = V::fma(p, t, V::set1(-1.26551223f));
  const V erfc = t * vexp(p - z * z);
  return V::copysign(V::set1(1.0f) - erfc, x);
}

// matches pyclvp/ops/numpy_ops.py::gelu (exact GELU): 0.5 x (1 + erf(x / sqrt 2))
template <class V>
inline V vgelu(V x) {
  return V::set1(0.5f) * x * (V::set1(1.0f) + verf(x * V::set1(0.7071067811865476f)));
}

}  // namespace PYCLVP_ISA_NAMESPACE
}  // namespace pyclvp::cpu
