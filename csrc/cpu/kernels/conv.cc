// conv1d, conv_transpose1d, leaky_relu in torch's (B, C, T) layout, float32.
// matches pyclvp/ops/numpy_ops.py::conv1d / ::conv_transpose1d / ::leaky_relu. Compiled once per ISA
// (see csrc/cpu/kernels.h for the contracts).
//
// Both convolutions become one kernel, a "correlation" over contiguous time rows:
//
//   out[b, o, m] = bias[o] + sum_{c, i} wp[o, c, i] * src[b, c, m + off[i]]      m in [0, M)
//
// i.e. one GEMM (Cout x Cin*taps) @ (Cin*taps x M) whose right operand is never built whole: its row (c, i)
// is source row c shifted by off[i], copied panel by panel (below).
//
//   conv1d            src = x zero-padded in time, split into `stride` phases (plane r holds
//                     x_padded[r::stride]); tap k reads plane (k d) % stride at shift (k d) / stride.
//                     With stride 1 (every HiFi-GAN conv) that is x_padded itself, shifted by k d.
//   conv_transpose1d  one correlation per output phase ph in [0, stride): output j = m stride + ph
//                     receives x[t] w[:, :, k] exactly when t = m + (ph + padding - k d) / stride is
//                     an integer, so phase ph gathers only the taps with (ph + padding - k d) divisible
//                     by stride, at shift e_k = (ph + padding - k d) / stride into x padded on both
//                     sides. No scatter, no zero-stuffed input; the phases' outputs are interleaved last.
//
// The correlation is BLIS-like. A register tile of MR output channels x NR = NV*W times does, per
// (c, i), NV vector loads of the shifted source row, MR broadcasts of weights and MR*NV FMAs. conv1d
// reads its weights in place: row o of (Cout, Cin, K) is already contiguous along the (c, k) loop.
// conv_transpose1d's phases take every stride-th tap of (Cin, Cout, K): those weights are packed into
// tiles of MR output channels (wp[tile][c][i][0:MR], contiguous along the (c, i) loop), by the caller once
// per weight (conv_transpose1d_pack, cached by pyclvp/ops/cpu_ops.py) or else per call.
// A task owns (batch, MC channels, NC times) and walks the channels in chunks of KC1; per chunk and panel of
// NR times it copies the chunk's (c, i) source vectors -- NR floats of row c from m + off[i] -- one after the
// other into an L1-sized buffer, which every weight tile of the task then streams with a single pointer: the
// tile's loop is flat over (c, i), whatever the taps' shifts (dilations, strided conv1d's planes, transposed
// phases). The rows in place sit a page or more apart (one TLB and L2 access per channel step, which starved
// the K = 3 / 7 convs). Partial sums wait in y between chunks. Ragged edges: weight tiles are zero-padded to
// MR rows, the source rows are zero-padded to whole panels (so loads never check bounds), stores are partial.
//
// Two fusions save the model a pass and an array each: the input activation (leaky_relu(x, slope), which precedes
// every HiFi-GAN / UnivNet conv) is applied while x is copied into the padded planes, which the kernel makes anyway,
// and conv1d's residual is added as the last channel chunk's sums are stored.
#include <algorithm>
#include <memory>
#include <vector>

#include "common/threadpool.h"
#include "cpu/kernels.h"
#include "cpu/vec.h"

namespace pyclvp::cpu {
namespace {

constexpr CpuIsa ISA = CpuIsa::PYCLVP_COMPILE_ISA;
using V = Vec<ISA>;
constexpr int W = V::W;

// Tile shapes, sized to the register file (16 ymm for AVX2: 12 accumulators; 32 zmm for AVX-512: 24).
constexpr int MR = W == 16 ? 8 : 4;  // output channels of the register tile
constexpr int NV = 3;                // vectors (along time) of the register tile
constexpr int NR = NV * W;           // times of the register tile
constexpr int64_t MC = 16 * MR;      // output channels of a task
constexpr int64_t NC = 8 * NR;       // times of a task
constexpr int64_t kPanelFloats = 6144;  // a source panel: 24 KiB of the 32 KiB L1

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// The input activation: leaky_relu(v, slope) when on (the reference's select x > 0 ? x : x * slope, lane-wise, so
// NaN and -0.0 come out as the reference's), else v itself.
struct InputAct {
  bool on = false;
  float slope = 0.0f;
  float operator()(float v) const { return on && !(v > 0.0f) ? v * slope : v; }
  V operator()(V v) const { return on ? V::if_positive(v, v, v * V::set1(slope)) : v; }
};

// dst[0:n) = act(src[0:n)), whole vectors then one partial.
void copy_act(float* dst, const float* src, int64_t n, InputAct act) {
  int64_t i = 0;
  for (; i + W <= n; i += W) act(V::load(src + i)).store(dst + i);
  if (i < n) store_n(dst + i, act(load_n<V>(src + i, static_cast<int>(n - i))), static_cast<int>(n - i));
}

// A kernel's scratch array (uninitialized). Up to kKeepBytes it lives in a per-thread buffer kept between calls
// (slot: one per array a call holds at once): fresh memory for every call cost page faults and the kernel's
// zeroing, ~1 s of system time per 2 s of audio in the HiFi-GAN. Larger arrays are allocated per call.
constexpr int64_t kKeepBytes = int64_t(64) << 20;

class Scratch {
 public:
  Scratch(int slot, int64_t n) {
    n = std::max<int64_t>(n, 1);
    thread_local std::vector<float> kept[3];
    if (n * static_cast<int64_t>(sizeof(float)) > kKeepBytes) {
      own_.reset(new float[n]);
      p_ = own_.get();
      return;
    }
    if (static_cast<int64_t>(kept[slot].size()) < n) kept[slot].resize(n);
    p_ = kept[slot].data();
  }
  float* get() const { return p_; }

 private:
  std::unique_ptr<float[]> own_;
  float* p_ = nullptr;
};

// One correlation (see the top of the file). Rows of batch b: src + b * src_sb + c * src_sc, out + b * out_sb + o * out_so.
struct Corr {
  // weight(o, c, i) = w[o * w_row + (c * ntaps + i) * w_step]: packed (ceil(Cout / MR) * MR, Cin, ntaps) tiles,
  // w_row 1 and w_step MR within a tile of MR rows (zero rows past Cout), or conv1d's (Cout, Cin, K): w_row Cin K, w_step 1
  const float* w = nullptr;
  int64_t w_tile = 0, w_row = 0, w_step = 0;  // w_tile: from one tile of MR rows to the next
  std::vector<int64_t> off;    // (ntaps,) shifts into a source row (may reach into other planes, see conv1d)
  const float* src = nullptr;  // >= max(off) + round_up(M, NR) readable floats from every row start
  int64_t src_sb = 0, src_sc = 0;
  float* out = nullptr;
  const float* res = nullptr;  // added to out as the last chunk's sums are stored (out's layout), or nullptr
  int64_t out_sb = 0, out_so = 0;
  int64_t M = 0;
};

// The register tile: out[o0 : o0 + rows, m0 : m0 + NR) (clipped at M) over the n = (c1 - c0) ntaps (channel, tap)
// pairs from c0 on, whose source vectors are the panel's consecutive rows of NR floats (xp).
// first: start from the bias (or 0), else from the partial sums in out. res (out's layout): added as the sums are
// stored (the last chunk), or nullptr.
template <int STEP>  // Corr::w_step: 1 (weights in place) or MR (packed)
void tile(const Corr& j, const float* wt, int64_t ntaps, const float* xp, float* out, const float* res,
          const float* bias, int64_t o0, int rows, int64_t m0, int64_t c0, int64_t c1, bool first) {
  int lanes[NV];
  for (int v = 0; v < NV; ++v) lanes[v] = static_cast<int>(std::clamp<int64_t>(j.M - m0 - v * W, 0, W));
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r) {
    const float* yr = out + (o0 + std::min(r, rows - 1)) * j.out_so + m0;
    for (int v = 0; v < NV; ++v) {
      if (first) acc[r][v] = V::set1(bias && r < rows ? bias[o0 + r] : 0.0f);
      else acc[r][v] = lanes[v] ? load_n<V>(yr + v * W, lanes[v]) : V::zero();
    }
  }
  const float* wr[MR];  // rows past Cout read the last row (their sums are not stored)
  for (int r = 0; r < MR; ++r) wr[r] = wt + std::min(r, rows - 1) * j.w_row + c0 * ntaps * STEP;
  const int64_t n = (c1 - c0) * ntaps;
#pragma GCC unroll 2
  for (int64_t idx = 0; idx < n; ++idx, xp += NR) {
    V xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = V::load(xp + v * W);
    for (int r = 0; r < MR; ++r) {
      const V wv = V::set1(wr[r][idx * STEP]);
      for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(wv, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* yr = out + (o0 + r) * j.out_so + m0;
    const float* rr = res ? res + (o0 + r) * j.out_so + m0 : nullptr;
    for (int v = 0; v < NV; ++v)
      if (lanes[v]) store_n(yr + v * W, rr ? acc[r][v] + load_n<V>(rr + v * W, lanes[v]) : acc[r][v], lanes[v]);
  }
}

// Runs every correlation of `jobs` (all with Cout outputs over Cin channels) for B batches, in parallel.
void run(const std::vector<Corr>& jobs, int64_t B, int64_t Cin, int64_t Cout, const float* bias) {
  struct Task {
    int64_t job, b, o0, m0;
  };
  std::vector<Task> tasks;
  for (int64_t jj = 0; jj < static_cast<int64_t>(jobs.size()); ++jj)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t o0 = 0; o0 < Cout; o0 += MC)
        for (int64_t m0 = 0; m0 < jobs[jj].M; m0 += NC) tasks.push_back({jj, b, o0, m0});
  parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t ti) {
    const Task& t = tasks[ti];
    const Corr& j = jobs[t.job];
    const int64_t ntaps = static_cast<int64_t>(j.off.size());
    const int64_t Ceff = ntaps ? Cin : 0;  // a phase without taps writes the bias only
    const float* src = j.src + t.b * j.src_sb;
    float* out = j.out + t.b * j.out_sb;
    const float* res = j.res ? j.res + t.b * j.out_sb : nullptr;
    const int64_t o1 = std::min(Cout, t.o0 + MC), m1 = std::min(j.M, t.m0 + NC);
    // The panel: for each channel c of a chunk of KC1 and each tap i, the NR source times [m + off[i], m + off[i] + NR)
    // of row c, one row of NR floats after the other in (c, i) order: every weight tile of the task streams it from L1
    // with one pointer (the rows in place sit a page or more apart, a TLB and an L2 access per channel step).
    const int64_t KC1 = std::max<int64_t>(1, kPanelFloats / (NR * std::max<int64_t>(ntaps, 1)));
    thread_local std::vector<float> panel_buf;
    constexpr int64_t kAlign = 64 / sizeof(float);  // whole cache lines: no vector load splits one
    if (static_cast<int64_t>(panel_buf.size()) < KC1 * ntaps * NR + kAlign) panel_buf.resize(KC1 * ntaps * NR + kAlign);
    float* panel = panel_buf.data() + (kAlign - reinterpret_cast<uintptr_t>(panel_buf.data()) / sizeof(float) % kAlign) % kAlign;
    int64_t c0 = 0;
    do {
      const int64_t c1 = std::min(Ceff, c0 + KC1);
      const float* r = c1 == Ceff ? res : nullptr;
      for (int64_t m = t.m0; m < m1; m += NR) {
        float* p = panel;
        for (int64_t c = c0; c < c1; ++c) {
          const float* xr = src + c * j.src_sc + m;
          for (int64_t i = 0; i < ntaps; ++i, p += NR)
            for (int v = 0; v < NV; ++v) V::load(xr + j.off[i] + v * W).store(p + v * W);
        }
        for (int64_t o = t.o0; o < o1; o += MR) {
          const float* wt = j.w + (o / MR) * j.w_tile;
          const int rows = static_cast<int>(std::min<int64_t>(MR, o1 - o));
          if (j.w_step == 1) tile<1>(j, wt, ntaps, panel, out, r, bias, o, rows, m, c0, c1, c0 == 0);
          else tile<MR>(j, wt, ntaps, panel, out, r, bias, o, rows, m, c0, c1, c0 == 0);
        }
      }
      c0 = c1;
    } while (c0 < Ceff);
  });
}

}  // namespace

template <>
void conv1d<ISA>(const ConvArgs& a) {
  const int64_t s = a.stride, d = a.dilation, p = a.padding, K = a.K, T = a.T;
  // Tap k reads plane (k d) % s at shift (k d) / s; a plane holds Lp times of every (batch, channel) row.
  int64_t max_q = 0;
  for (int64_t k = 0; k < K; ++k) max_q = std::max(max_q, k * d / s);
  const int64_t Lp = max_q + round_up(a.To, NR), rows = a.B * a.Cin, plane = rows * Lp;
  Scratch planes(0, s * plane);
  float* xs = planes.get();
  const InputAct act{a.leaky, a.slope};
  parallel_for(s * rows, [&](int64_t pr) {  // plane r, row (b, c): xs[r][b, c][u] = act(x[b, c][u s + r - p]) or 0
    const int64_t r = pr / rows, row = pr % rows;
    const float* x = a.x + row * T;
    float* dst = xs + r * plane + row * Lp;
    if (s == 1) {  // [p zeros, act(x), zeros], clipped to Lp
      const int64_t u0 = std::min(p, Lp), u1 = std::min(p + T, Lp);
      std::fill(dst, dst + u0, 0.0f);
      copy_act(dst + u0, x, u1 - u0, act);
      std::fill(dst + u1, dst + Lp, 0.0f);
      return;
    }
    for (int64_t u = 0; u < Lp; ++u) {
      const int64_t t = u * s + r - p;
      dst[u] = t >= 0 && t < T ? act(x[t]) : 0.0f;
    }
  });
  Corr j;  // the weights in place: row o of (Cout, Cin, K) runs along (c, k)
  j.w = a.w, j.w_row = a.Cin * K, j.w_tile = MR * j.w_row, j.w_step = 1;
  for (int64_t k = 0; k < K; ++k) j.off.push_back((k * d) % s * plane + k * d / s);
  j.src = xs, j.src_sb = a.Cin * Lp, j.src_sc = Lp;
  j.out = a.y, j.res = a.residual, j.out_sb = a.Cout * a.To, j.out_so = a.To, j.M = a.To;
  run({j}, a.B, a.Cin, a.Cout, a.b);
}

namespace {

// conv_transpose1d's stride phases: phase ph takes the taps k with (ph + p - k d) % s == 0, at shift
// e = (ph + p - k d) / s; M_ph = ceil((To - ph) / s). Depends on (s, p, d, K) only.
struct Phases {
  std::vector<std::vector<int64_t>> taps, shifts;
  int64_t min_e = 0, max_e = 0;
  std::vector<int64_t> at;  // (s + 1,): phase ph's packed tiles start at wp + at[ph]; at[s] = the packed size
};

Phases phases(const ConvArgs& a) {
  const int64_t s = a.stride, d = a.dilation, p = a.padding, K = a.K;
  Phases P;
  P.taps.resize(s), P.shifts.resize(s), P.at.assign(s + 1, 0);
  for (int64_t ph = 0; ph < s; ++ph) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t u = ph + p - k * d;
      if (((u % s) + s) % s) continue;
      const int64_t e = (u - (((u % s) + s) % s)) / s;  // exact
      P.taps[ph].push_back(k), P.shifts[ph].push_back(e);
      P.min_e = std::min(P.min_e, e), P.max_e = std::max(P.max_e, e);
    }
    P.at[ph + 1] = P.at[ph] + round_up(a.Cout, MR) * a.Cin * static_cast<int64_t>(P.taps[ph].size());
  }
  return P;
}

// Phase ph's packed tiles: wp[at[ph] + ((t Cin + c) nt + i) MR + r] = w[c, t MR + r, taps[ph][i]] (0 past Cout). One
// pass over w: a tile's block w[c, t MR : t MR + MR, :] is MR K contiguous floats, read once for every phase.
void pack(float* wp, const ConvArgs& a, const Phases& P) {
  const int64_t s = a.stride, K = a.K, Cout = a.Cout;
  parallel_for(ceil_div(Cout, MR), [&](int64_t t) {
    for (int64_t c = 0; c < a.Cin; ++c) {
      const float* blk = a.w + (c * Cout + t * MR) * K;
      for (int64_t ph = 0; ph < s; ++ph) {
        const int64_t nt = static_cast<int64_t>(P.taps[ph].size());
        float* dst = wp + P.at[ph] + (t * a.Cin + c) * nt * MR;
        for (int64_t i = 0; i < nt; ++i)
          for (int r = 0; r < MR; ++r) dst[i * MR + r] = t * MR + r < Cout ? blk[r * K + P.taps[ph][i]] : 0.0f;
      }
    }
  });
}

}  // namespace

template <>
int64_t conv_transpose1d_packed_size<ISA>(const ConvArgs& a) {
  return phases(a).at[a.stride];
}

template <>
void conv_transpose1d_pack<ISA>(float* wp, const ConvArgs& a) {
  pack(wp, a, phases(a));
}

template <>
void conv_transpose1d<ISA>(const ConvArgs& a) {
  const int64_t s = a.stride, T = a.T, Cout = a.Cout;
  const Phases P = phases(a);
  const int64_t M0 = ceil_div(a.To, s);  // the longest phase (ph = 0)
  const int64_t padL = -P.min_e, Lx = std::max(padL + T, padL + P.max_e + round_up(M0, NR)), rows = a.B * a.Cin;
  Scratch xpad(0, rows * Lx);
  parallel_for(rows, [&](int64_t row) {  // xpad[b, c] = [padL zeros, act(x[b, c]), zeros]
    float* dst = xpad.get() + row * Lx;
    std::fill(dst, dst + padL, 0.0f);
    copy_act(dst + padL, a.x + row * T, T, InputAct{a.leaky, a.slope});
    std::fill(dst + padL + T, dst + Lx, 0.0f);
  });
  std::unique_ptr<Scratch> owned;  // the packed weights, unless the caller packed them once (a.wp)
  const float* wp = a.wp;
  if (!wp) {
    owned = std::make_unique<Scratch>(1, P.at[s]);
    pack(owned->get(), a, P);
    wp = owned->get();
  }
  // With stride 1 the only phase is the output itself; else each phase has its own (B, Cout, M0) plane.
  Scratch yph(2, s > 1 ? s * a.B * Cout * M0 : 0);
  std::vector<Corr> jobs;
  for (int64_t ph = 0; ph < s && ph < a.To; ++ph) {
    const int64_t nt = static_cast<int64_t>(P.taps[ph].size());
    Corr j;
    j.w = wp + P.at[ph], j.w_row = 1, j.w_tile = a.Cin * nt * MR, j.w_step = MR;
    for (int64_t e : P.shifts[ph]) j.off.push_back(e + padL);
    j.src = xpad.get(), j.src_sb = a.Cin * Lx, j.src_sc = Lx;
    j.M = ceil_div(a.To - ph, s);
    if (s > 1) j.out = yph.get() + ph * a.B * Cout * M0, j.out_sb = Cout * M0, j.out_so = M0;
    else j.out = a.y, j.out_sb = Cout * a.To, j.out_so = a.To;
    jobs.push_back(std::move(j));
  }
  run(jobs, a.B, a.Cin, Cout, a.b);
  if (s == 1) return;
  parallel_for(a.B * Cout, [&](int64_t row) {  // y[b, o, m s + ph] = yph[ph][b, o, m]
    float* y = a.y + row * a.To;
    for (int64_t ph = 0; ph < s && ph < a.To; ++ph) {
      const float* src = yph.get() + ph * a.B * Cout * M0 + row * M0;
      for (int64_t m = 0, jo = ph; jo < a.To; ++m, jo += s) y[jo] = src[m];
    }
  });
}

template <>
void leaky_relu<ISA>(float* y, const float* x, int64_t n, float slope) {
  constexpr int64_t kGrain = 16384;
  parallel_for(ceil_div(n, kGrain), [&](int64_t chunk) {
    const int64_t i = chunk * kGrain;
    copy_act(y + i, x + i, std::min(kGrain, n - i), InputAct{true, slope});
  });
}

}  // namespace pyclvp::cpu
