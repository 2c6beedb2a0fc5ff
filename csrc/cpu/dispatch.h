// provides: dispatch(isa, f) -> f(std::integral_constant<CpuIsa, ISA>{}) for the ISAs this build has.
// Only compiled ISAs appear in the switch, so an aarch64 build never references kernel<AVX2>.
#pragma once
#include <type_traits>

#include "cpu/isa.h"

namespace pyclvp::cpu {

template <CpuIsa I>
using IsaTag = std::integral_constant<CpuIsa, I>;

template <typename F>
decltype(auto) dispatch(CpuIsa isa, F&& f) {
  switch (isa) {
#ifdef PYCLVP_HAVE_AVX512
    case CpuIsa::AVX512: return f(IsaTag<CpuIsa::AVX512>{});
#endif
#ifdef PYCLVP_HAVE_AVX2
    case CpuIsa::AVX2: return f(IsaTag<CpuIsa::AVX2>{});
#endif
    default: return f(IsaTag<CpuIsa::SCALAR>{});
  }
}

}  // namespace pyclvp::cpu
