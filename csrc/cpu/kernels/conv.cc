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
// The source is laid out once per call in time blocks (build_blocks): block n of channel c holds the NB = kPanels NR
// source times that outputs [n NB, n NB + NB) read, plus their halo (the taps' span), in one contiguous "block row"
// of Lb floats, and the block's Cin rows follow each other. A tap's source vectors for an output panel are then NR
// floats at a fixed position in the row (Corr::off), and one channel chunk of a block -- KC1 rows, a few KiB apart
// from none -- stays in L1 while every weight tile of a task streams it (the tile walks (c, i) with an offset table).
// Read in place, x's rows sit a page or more apart: a TLB miss and an L2/L3 miss per channel step, which a
// per-task copy into a panel only moved (it stalled on the same misses). Partial sums wait in y between chunks.
// Ragged edges: weight tiles are zero-padded to MR rows, the blocks hold zeros past the source (so loads never
// check bounds), stores are partial.
//
// Two fusions save the model a pass and an array each: the input activation (leaky_relu(x, slope), which precedes
// every HiFi-GAN / UnivNet conv) is applied while x is copied into the blocks, which the kernel makes anyway,
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
constexpr int64_t kPanels = 4;       // register-tile panels (of NR times) of a source block
constexpr int64_t NB = kPanels * NR;  // times of a source block
constexpr int64_t NC = 2 * NB;       // times of a task
constexpr int64_t kChunkFloats = 6144;  // a channel chunk's source windows: 24 KiB of the 32 KiB L1

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

// The source blocks (see the top of the file): xb[b][n][c][0:Lb). A block row is one or more segments, one after the
// other: segment g holds plane[g]'s positions q in [n NB + q0[g], n NB + q0[g] + NB + span[g]), the value at q being
// act(x[b, c, q s + plane[g] - p]) -- 0 outside [0, T) -- for the layout's (s, p). conv1d: s = stride, p = padding, a
// plane per residue of the taps' k d mod s (stride 1: one); conv_transpose1d: s = 1, p = 0, one segment for all phases.
struct Blocks {
  int64_t s = 1, p = 0;
  std::vector<int64_t> plane, q0, span, at;  // per segment; at: its first float in the row
  int64_t Lb = 0, nblk = 0;                  // row length (whole vectors), blocks per batch
  // Segment g's position of source q (of its plane) in the row of the block whose first output is 0.
  int64_t pos(size_t g, int64_t q) const { return at[g] + q - q0[g]; }
};

Blocks layout(int64_t s, int64_t p, std::vector<int64_t> plane, std::vector<int64_t> q0, std::vector<int64_t> span,
              int64_t M) {
  Blocks L;
  L.s = s, L.p = p, L.plane = std::move(plane), L.q0 = std::move(q0), L.span = std::move(span);
  for (int64_t sp : L.span) L.at.push_back(L.Lb), L.Lb += NB + sp;
  L.Lb = round_up(L.Lb, W), L.nblk = ceil_div(M, NB);
  return L;
}

// xb (B, nblk, Cin, Lb) from x (B, Cin, T), one (batch, channel) row at a time.
void build_blocks(float* xb, const ConvArgs& a, const Blocks& L) {
  const InputAct act{a.leaky, a.slope};
  const int64_t T = a.T, rows = a.B * a.Cin;
  parallel_for(rows, [&](int64_t row) {
    const int64_t b = row / a.Cin, c = row % a.Cin;
    const float* x = a.x + row * T;
    for (int64_t n = 0; n < L.nblk; ++n) {
      float* dst = xb + ((b * L.nblk + n) * a.Cin + c) * L.Lb;
      for (size_t g = 0; g < L.at.size(); ++g) {
        float* d = dst + L.at[g];
        const int64_t len = NB + L.span[g], t0 = (n * NB + L.q0[g]) * L.s + L.plane[g] - L.p;  // t of d[0]
        if (L.s == 1) {  // [zeros, act(x[t0 + u]), zeros]
          const int64_t u0 = std::clamp<int64_t>(-t0, 0, len), u1 = std::clamp<int64_t>(T - t0, u0, len);
          std::fill(d, d + u0, 0.0f);
          copy_act(d + u0, x + t0 + u0, u1 - u0, act);
          std::fill(d + u1, d + len, 0.0f);
        } else {
          for (int64_t u = 0; u < len; ++u) {
            const int64_t t = t0 + u * L.s;
            d[u] = t >= 0 && t < T ? act(x[t]) : 0.0f;
          }
        }
      }
      float* pad = dst + L.at.back() + NB + L.span.back();
      std::fill(pad, dst + L.Lb, 0.0f);
    }
  });
}

// One correlation (see the top of the file) over the blocks xb of layout L: tap i of output m reads the NR floats at
// m % NB + off[i] of block m / NB's row. Output rows: out + b * out_sb + o * out_so.
struct Corr {
  // weight(o, c, i) = w[o * w_row + (c * ntaps + i) * w_step]: packed (ceil(Cout / MR) * MR, Cin, ntaps) tiles,
  // w_row 1 and w_step MR within a tile of MR rows (zero rows past Cout), or conv1d's (Cout, Cin, K): w_row Cin K, w_step 1
  const float* w = nullptr;
  int64_t w_tile = 0, w_row = 0, w_step = 0;  // w_tile: from one tile of MR rows to the next
  std::vector<int64_t> off;  // (ntaps,) positions in a block row
  float* out = nullptr;
  const float* res = nullptr;  // added to out as the last chunk's sums are stored (out's layout), or nullptr
  int64_t out_sb = 0, out_so = 0;
  int64_t M = 0;  // <= L.nblk NB
};

// The register tile: out[o0 : o0 + rows, m0 : m0 + NR) (clipped at M) over the n = (c1 - c0) ntaps (channel, tap)
// pairs from c0 on, whose source vectors are at xp + offs[idx] (the chunk's rows in the panel's block).
// first: start from the bias (or 0), else from the partial sums in out. res (out's layout): added as the sums are
// stored (the last chunk), or nullptr.
template <int STEP>  // Corr::w_step: 1 (weights in place) or MR (packed)
void tile(const Corr& j, const float* wt, int64_t ntaps, const float* xp, const int64_t* offs, float* out,
          const float* res, const float* bias, int64_t o0, int rows, int64_t m0, int64_t c0, int64_t c1, bool first) {
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
  for (int64_t idx = 0; idx < n; ++idx) {
    const float* x = xp + offs[idx];
    V xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = V::load(x + v * W);
    for (int r = 0; r < MR; ++r) {
      const V wv = V::set1(wr[r][idx * STEP]);
      for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(wv, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* yr = out + (o0 + r) * j.out_so + m0;
    const float* rr = res ? res + (o0 + r) * j.out_so + m0 : nullptr;
    // the next panel's outputs (and residual), fetched while the next tiles run: their stores would otherwise wait
    // for the lines one after another (a store misses unless the line is there)
    for (int v = 0; v < NV; v += 2) {
      __builtin_prefetch(yr + NR + v * W, 1);
      if (rr) __builtin_prefetch(rr + NR + v * W, 0);
    }
    for (int v = 0; v < NV; ++v)
      if (lanes[v]) store_n(yr + v * W, rr ? acc[r][v] + load_n<V>(rr + v * W, lanes[v]) : acc[r][v], lanes[v]);
  }
}

// Runs every correlation of `jobs` (all with Cout outputs over Cin channels, reading blocks xb of layout L) for B
// batches, in parallel.
void run(const std::vector<Corr>& jobs, const float* xb, const Blocks& L, int64_t B, int64_t Cin, int64_t Cout,
         const float* bias) {
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
    float* out = j.out + t.b * j.out_sb;
    const float* res = j.res ? j.res + t.b * j.out_sb : nullptr;
    const int64_t o1 = std::min(Cout, t.o0 + MC), m1 = std::min(j.M, t.m0 + NC);
    // A chunk: KC1 channels whose windows (the NR + taps' span floats a panel reads of each row) fill the L1 budget.
    int64_t lo = 0, hi = 0;
    if (ntaps) lo = *std::min_element(j.off.begin(), j.off.end()), hi = *std::max_element(j.off.begin(), j.off.end());
    const int64_t KC1 = std::clamp<int64_t>(kChunkFloats / (NR + hi - lo + 16), 1, std::max<int64_t>(Ceff, 1));
    thread_local std::vector<int64_t> offs;  // offs[(c - c0) ntaps + i] = (c - c0) Lb + off[i]
    offs.resize(KC1 * ntaps);
    for (int64_t c = 0; c < KC1; ++c)
      for (int64_t i = 0; i < ntaps; ++i) offs[c * ntaps + i] = c * L.Lb + j.off[i];
    int64_t c0 = 0;
    do {
      const int64_t c1 = std::min(Ceff, c0 + KC1);
      const float* r = c1 == Ceff ? res : nullptr;
      for (int64_t m = t.m0; m < m1; m += NR) {
        const float* xp = xb + ((t.b * L.nblk + m / NB) * Cin + c0) * L.Lb + m % NB;
        for (int64_t o = t.o0; o < o1; o += MR) {
          const float* wt = j.w + (o / MR) * j.w_tile;
          const int rows = static_cast<int>(std::min<int64_t>(MR, o1 - o));
          if (j.w_step == 1) tile<1>(j, wt, ntaps, xp, offs.data(), out, r, bias, o, rows, m, c0, c1, c0 == 0);
          else tile<MR>(j, wt, ntaps, xp, offs.data(), out, r, bias, o, rows, m, c0, c1, c0 == 0);
        }
      }
      c0 = c1;
    } while (c0 < Ceff);
  });
}

}  // namespace

template <>
void conv1d<ISA>(const ConvArgs& a) {
  const int64_t s = a.stride, d = a.dilation, K = a.K;
  // Tap k reads plane (k d) % s at q = (k d) / s: a segment per plane with taps, spanning their q.
  std::vector<int64_t> seg_of(s, -1), plane, q0, span;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t r = k * d % s, q = k * d / s;
    if (seg_of[r] < 0) seg_of[r] = static_cast<int64_t>(plane.size()), plane.push_back(r), q0.push_back(q), span.push_back(0);
    span[seg_of[r]] = q - q0[seg_of[r]];  // q grows with k
  }
  const Blocks L = layout(s, a.padding, plane, q0, span, a.To);
  Scratch xb(0, a.B * L.nblk * a.Cin * L.Lb);
  build_blocks(xb.get(), a, L);
  Corr j;  // the weights in place: row o of (Cout, Cin, K) runs along (c, k)
  j.w = a.w, j.w_row = a.Cin * K, j.w_tile = MR * j.w_row, j.w_step = 1;
  for (int64_t k = 0; k < K; ++k) j.off.push_back(L.pos(seg_of[k * d % s], k * d / s));
  j.out = a.y, j.res = a.residual, j.out_sb = a.Cout * a.To, j.out_so = a.To, j.M = a.To;
  run({j}, xb.get(), L, a.B, a.Cin, a.Cout, a.b);
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
  const int64_t s = a.stride, Cout = a.Cout;
  const Phases P = phases(a);
  const int64_t M0 = ceil_div(a.To, s);  // the longest phase (ph = 0)
  // Phase ph's tap with shift e reads x[m + e]: one segment over every phase's shifts.
  const Blocks L = layout(1, 0, {0}, {P.min_e}, {P.max_e - P.min_e}, M0);
  Scratch xb(0, a.B * L.nblk * a.Cin * L.Lb);
  build_blocks(xb.get(), a, L);
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
    for (int64_t e : P.shifts[ph]) j.off.push_back(L.pos(0, e));
    j.M = ceil_div(a.To - ph, s);
    if (s > 1) j.out = yph.get() + ph * a.B * Cout * M0, j.out_sb = Cout * M0, j.out_so = M0;
    else j.out = a.y, j.out_sb = Cout * a.To, j.out_so = a.To;
    jobs.push_back(std::move(j));
  }
  run(jobs, xb.get(), L, a.B, a.Cin, Cout, a.b);
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
