// provides: PYCLVP_ISA_NAMESPACE, an inline namespace named after the ISA this translation unit is
// compiled for (isa_SCALAR, isa_AVX2, isa_AVX512; isa_core outside the per-ISA objects).
//
// Why: the inline functions of vec.h / vec_math.h / half.h are compiled into every per-ISA object,
// each with different -m flags. Were they one symbol, the linker would keep one copy (possibly the
// AVX-512 one) for all callers, and a CPU without AVX-512 would die of SIGILL. Inside this inline
// namespace each object gets its own mangled copies; the source still says pyclvp::cpu::Vec.
// (Inline standard-library code is shared the same way; CMakeLists.txt links the core and the
// scalar object first, so GNU ld keeps their generic copies.)
#pragma once

#define PYCLVP_CAT2_(a, b) a##b
#define PYCLVP_CAT_(a, b) PYCLVP_CAT2_(a, b)
#ifdef PYCLVP_COMPILE_ISA
#define PYCLVP_ISA_NAMESPACE PYCLVP_CAT_(isa_, PYCLVP_COMPILE_ISA)
#else
#define PYCLVP_ISA_NAMESPACE isa_core
#endif
