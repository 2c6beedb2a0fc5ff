// The CPU kernels, written once and compiled once per ISA: CMake defines PYCLVP_COMPILE_ISA
// (SCALAR, AVX2 or AVX512) and the matching -m flags for this object only.
#include "cpu/kernels.h"

#ifndef PYCLVP_COMPILE_ISA
#error "kernels.cc is compiled once per ISA by CMake with -DPYCLVP_COMPILE_ISA=<SCALAR|AVX2|AVX512>"
#endif

namespace pyclvp::cpu {

constexpr CpuIsa ISA = CpuIsa::PYCLVP_COMPILE_ISA;

template <>
int simd_width<ISA>() {
  return ISA == CpuIsa::AVX512 ? 16 : ISA == CpuIsa::AVX2 ? 8 : 1;
}

}  // namespace pyclvp::cpu
