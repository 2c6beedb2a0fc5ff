// provides: CpuIsa, the ISAs this build compiled, the one detected at run time, and the one in use.
// The ISA names here ("scalar", "avx2", "avx512") must match pyclvp/ops/__init__.py and tests/conftest.py.
#pragma once
#include <string>
#include <vector>

namespace pyclvp::cpu {

enum class CpuIsa { SCALAR = 0, AVX2 = 1, AVX512 = 2 };

const char* isa_name(CpuIsa isa);
CpuIsa isa_from_name(const std::string& name);  // throws std::invalid_argument on an unknown name

std::vector<CpuIsa> compiled_isas();  // what CMake built objects for, best last
bool cpu_supports(CpuIsa isa);        // cpuid + xgetbv: the CPU *and* the OS (saved YMM/ZMM state)
CpuIsa best_isa();                    // best compiled ISA the CPU supports
std::vector<CpuIsa> usable_isas();    // compiled and supported, best last

// The ISA the kernels dispatch to: PYCLVP_ISA=scalar|avx2|avx512 at first use, else best_isa().
CpuIsa active_isa();
void set_active_isa(CpuIsa isa);  // throws if not usable here

}  // namespace pyclvp::cpu
