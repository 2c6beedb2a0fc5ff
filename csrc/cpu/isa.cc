// Runtime ISA detection (cpuid + xgetbv) and selection.
// ref: Intel SDM vol. 1 §14.3 "Detection of AVX instructions" / §15.2 (AVX-512): the CPUID feature
// bit alone is not enough, the OS must also enable the register state (XCR0), as ggml's FIXME notes.
#include "cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define PYCLVP_X86 1
#endif

namespace pyclvp::cpu {

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::SCALAR: return "scalar";
    case CpuIsa::AVX2: return "avx2";
    case CpuIsa::AVX512: return "avx512";
  }
  return "unknown";
}

CpuIsa isa_from_name(const std::string& name) {
  if (name == "scalar") return CpuIsa::SCALAR;
  if (name == "avx2") return CpuIsa::AVX2;
  if (name == "avx512") return CpuIsa::AVX512;
  throw std::invalid_argument("unknown ISA '" + name + "' (expected scalar, avx2 or avx512)");
}

std::vector<CpuIsa> compiled_isas() {
  std::vector<CpuIsa> out;
#ifdef PYCLVP_HAVE_SCALAR
  out.push_back(CpuIsa::SCALAR);
#endif
#ifdef PYCLVP_HAVE_AVX2
  out.push_back(CpuIsa::AVX2);
#endif
#ifdef PYCLVP_HAVE_AVX512
  out.push_back(CpuIsa::AVX512);
#endif
  return out;
}

#ifdef PYCLVP_X86
static unsigned long long xgetbv0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

bool cpu_supports(CpuIsa isa) {
  if (isa == CpuIsa::SCALAR) return true;
#ifdef PYCLVP_X86
  unsigned int a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!(osxsave && avx && fma && f16c)) return false;
  const unsigned long long xcr0 = xgetbv0();
  if ((xcr0 & 0x6) != 0x6) return false;  // XMM and YMM state enabled by the OS
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16);
  if (isa == CpuIsa::AVX2) return avx2;
  if (isa == CpuIsa::AVX512) return avx2 && avx512f && (xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM state
#endif
  return false;
}

std::vector<CpuIsa> usable_isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : compiled_isas())
    if (cpu_supports(isa)) out.push_back(isa);
  return out;
}

CpuIsa best_isa() { return usable_isas().back(); }

static std::atomic<int> g_active{-1};

CpuIsa active_isa() {
  int v = g_active.load();
  if (v < 0) {
    CpuIsa isa = best_isa();
    if (const char* env = std::getenv("PYCLVP_ISA"); env && *env) {
      // An unusable request falls back to the best ISA; Python warns about it (pyclvp/ops).
      try {
        CpuIsa want = isa_from_name(env);
        if (cpu_supports(want)) {
          for (CpuIsa c : compiled_isas())
            if (c == want) isa = want;
        }
      } catch (const std::invalid_argument&) {
      }
    }
    int expected = -1;
    g_active.compare_exchange_strong(expected, static_cast<int>(isa));
    v = g_active.load();
  }
  return static_cast<CpuIsa>(v);
}

void set_active_isa(CpuIsa isa) {
  for (CpuIsa u : usable_isas())
    if (u == isa) {
      g_active.store(static_cast<int>(isa));
      return;
    }
  throw std::invalid_argument(std::string("ISA '") + isa_name(isa) + "' is not usable on this CPU/build");
}

}  // namespace pyclvp::cpu
