// provides: the per-ISA CPU kernel declarations. Each is defined once, in kernels.cc, and that file
// is compiled once per ISA (CMakeLists.txt: pyclvp_add_isa), so every kernel exists as
// kernel<SCALAR>, kernel<AVX2>, kernel<AVX512> on x86-64 and kernel<SCALAR> elsewhere.
// Callers go through dispatch() (cpu/dispatch.h), never name an ISA themselves.
#pragma once
#include <cstdint>

#include "cpu/isa.h"

namespace pyclvp::cpu {

// Floats per SIMD register for this ISA (1 for scalar); reported by build_info().
template <CpuIsa ISA>
int simd_width();

}  // namespace pyclvp::cpu
