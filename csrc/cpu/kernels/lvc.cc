// location_variable_conv: UnivNet's LVCBlock convolution, one kernel per frame. Compiled once per ISA (see
// csrc/cpu/kernels.h for the contract; the math is pyclvp/ops/numpy_ops.py::location_variable_conv).
//
// Tasks are (batch, block of LB frames). A task gathers its frames' kernels (frame-minor in the input, so LB
// consecutive floats at a time) into wl (LB, Cout, Cin K); then per frame its window of hop + K - 1 samples (zeros
// past the ends) into xw (Cin, hop + K - 1), and the (Cout, hop) output in register tiles of RO output channels x
// SV vectors of samples: per (c, k), SV loads of the shifted window, RO broadcasts of the kernel, RO*SV FMAs.
// A task holds LB Cout Cin K + Cin (hop + K - 1) floats (UnivNet: 8 x 64 x 96 floats = 192 KiB of kernels).
#include <algorithm>
#include <vector>

#include "common/threadpool.h"
#include "cpu/kernels.h"
#include "cpu/vec.h"

namespace pyclvp::cpu {
namespace {

constexpr CpuIsa ISA = CpuIsa::PYCLVP_COMPILE_ISA;
using V = Vec<ISA>;
constexpr int W = V::W;
constexpr int RO = 4;  // output channels of a register tile
constexpr int SV = 2;  // sample vectors of a register tile
constexpr int64_t LB = 8;  // frames of a task

inline V load_k(const float* p, int k) { return k == W ? V::load(p) : load_n<V>(p, k); }

}  // namespace

template <>
void location_variable_conv<ISA>(float* y, const float* x, const float* kernels, const float* bias, int64_t B,
                                 int64_t Cin, int64_t Cout, int64_t K, int64_t L, int64_t hop) {
  const int64_t T = L * hop, pad = (K - 1) / 2, CK = Cin * K, HW = hop + K - 1;
  const int64_t blocks = (L + LB - 1) / LB;
  parallel_for(B * blocks, [&](int64_t task) {
    const int64_t b = task / blocks, l0 = task % blocks * LB, nl = std::min(LB, L - l0);
    thread_local std::vector<float> wls, xw;
    wls.resize(LB * Cout * CK), xw.resize(Cin * HW);
    // wls[j][o][c K + k] = kernels[b, c, o, k, l0 + j]
    for (int64_t c = 0; c < Cin; ++c)
      for (int64_t o = 0; o < Cout; ++o)
        for (int64_t k = 0; k < K; ++k) {
          const float* src = kernels + (((b * Cin + c) * Cout + o) * K + k) * L + l0;
          for (int64_t j = 0; j < nl; ++j) wls[(j * Cout + o) * CK + c * K + k] = src[j];
        }
    for (int64_t l = l0; l < l0 + nl; ++l) {
      const float* wl = wls.data() + (l - l0) * Cout * CK;
      // xw[c][j] = x[b, c, l hop + j - pad], 0 outside [0, T)
      for (int64_t c = 0; c < Cin; ++c) {
        const float* xr = x + (b * Cin + c) * T;
        for (int64_t j = 0; j < HW; ++j) {
          const int64_t t = l * hop + j - pad;
          xw[c * HW + j] = t >= 0 && t < T ? xr[t] : 0.0f;
        }
      }
      for (int64_t o0 = 0; o0 < Cout; o0 += RO) {
        const float* wr[RO];
        float bs[RO];
        for (int r = 0; r < RO; ++r) {
          const int64_t o = std::min<int64_t>(o0 + r, Cout - 1);  // rows past Cout repeat the last, unstored
          wr[r] = wl + o * CK, bs[r] = bias[(b * Cout + o) * L + l];
        }
        for (int64_t s0 = 0; s0 < hop; s0 += SV * W) {
          int cnt[SV];
          for (int v = 0; v < SV; ++v) cnt[v] = static_cast<int>(std::clamp<int64_t>(hop - s0 - v * W, 0, W));
          V acc[RO][SV];
          for (int r = 0; r < RO; ++r)
            for (int v = 0; v < SV; ++v) acc[r][v] = V::set1(bs[r]);
          for (int64_t c = 0; c < Cin; ++c) {
            const float* xc = xw.data() + c * HW + s0;
            for (int64_t k = 0; k < K; ++k) {
              V xv[SV];
              for (int v = 0; v < SV; ++v) xv[v] = cnt[v] ? load_k(xc + v * W + k, cnt[v]) : V::zero();
              for (int r = 0; r < RO; ++r) {
                const V wv = V::set1(wr[r][c * K + k]);
                for (int v = 0; v < SV; ++v) acc[r][v] = V::fma(wv, xv[v], acc[r][v]);
              }
            }
          }
          for (int r = 0; r < RO && o0 + r < Cout; ++r) {
            float* yr = y + (b * Cout + o0 + r) * T + l * hop + s0;
            for (int v = 0; v < SV; ++v)
              if (cnt[v]) store_n(yr + v * W, acc[r][v], cnt[v]);
          }
        }
      }
    }
  });
}

}  // namespace pyclvp::cpu
