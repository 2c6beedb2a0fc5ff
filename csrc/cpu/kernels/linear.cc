// linear: y = act(x @ W^T + b) for float32 activations and float32 / float16 / bfloat16 weights.
// matches pyclvp/ops/numpy_ops.py::linear. Compiled once per ISA (see csrc/cpu/kernels.h).
//
// The weights are never copied as a whole (they are memory-mapped); half ones are widened to float32
// as they are loaded, and every sum is float32. Four kernels, chosen by layout and row count N:
//
//   (Cout, Cin) nn.Linear weights:
//     dot     N <= FEW_ROWS (decode): a tile of RB rows x CB output columns keeps RB*CB*KU vector
//             accumulators along k (x and weight rows both contiguous); the lanes are summed at the
//             end. With N == 1, float32 reads 4 weight rows side by side; a half-precision row is
//             read alone, with wide loads and a software prefetch 2 KiB ahead (measured: without
//             them a bfloat16 row streamed no faster than a float32 one, at half the bytes).
//     wt      more rows: the weight rows are the broadcast operand. x^T is packed once into panels
//             of XR rows (Xp[k][0:XR], contiguous), a task takes WR weight rows (half ones widened to
//             float32 first, float32 ones read in place), and a
//             WR x XR register tile does, per k, 2 vector loads of Xp, WR broadcasts and 2*WR FMAs.
//             Each weight row is read once, contiguously, per panel: no transposition of W.
//     gemm    N >= GEMM_NT_MIN (encoders): as below, the weights transposed while packed (a scalar
//             scatter, amortized over the MC_NT rows of a task).
//   (Cin, Cout) Conv1D weights (GPT-2's MLP):
//     splitk  N <= FEW_ROWS (decode): a task owns a range of k, i.e. a contiguous slab of W, and
//             accumulates x[:, k] W[k, :] over it into its own partial y (in L1), 4 weight rows per
//             pass; the partials are summed afterwards. Reading W in storage order keeps the memory
//             system streaming; with N == 1 the next pass's rows are prefetched.
//     gemm    more rows: BLIS-style. A task packs a KC x NC block of W (row by row, contiguous
//             reads) into float32 panels of NR columns (Bp[k][0:NR]); an MR x NR register tile
//             runs over each panel: per k, NV vector loads of the panel, MR broadcasts of x[r, k],
//             NV*MR FMAs. The panel stays in L1 across the row tiles, the x rows in L2.
//
// Tasks (row block x column block, or k slab) are spread over the thread pool; several products (the
// decoder's q, k, v) share one parallel region. Ragged edges: row pointers are clamped to the last
// row and the duplicate results dropped; the last column vector is loaded and stored partially.
#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/threadpool.h"
#include "cpu/kernels.h"
#include "cpu/vec.h"
#include "cpu/vec_math.h"

namespace pyclvp::cpu {
namespace {

constexpr CpuIsa ISA = CpuIsa::PYCLVP_COMPILE_ISA;
using V = Vec<ISA>;
constexpr int W = V::W;

// Tile shapes, sized to the register file (16 ymm for AVX2, 32 zmm for AVX-512).
constexpr int DOT_RB = 2, DOT_CB = 2;  // dot: rows x columns (1 < N <= FEW_ROWS), two vectors per row per step
// dot with N == 1: columns (weight rows) read side by side, and vectors of each row per step.
// float32 rows gain from several streams; half rows (half as long) from fewer, longer ones.
template <class WT>
constexpr int DOT_CB1 = std::is_same_v<WT, float> ? 4 : 1;
template <class WT>
constexpr int DOT_KU1 = std::is_same_v<WT, float> ? 2 : 4;
constexpr int MR = W == 16 ? 8 : 4;    // gemm: rows of the register tile (4 x 4 = the 16 rows of batch-16 decode)
constexpr int NV = 3;                  // gemm: vectors of a packed panel
constexpr int NR = NV * W;             // gemm: columns of a packed panel
constexpr int64_t KC = 256;            // gemm: k chunk (a KC x NR panel is 24 KiB (AVX2) / 48 KiB)
constexpr int64_t NC_MAX = 10 * NR;    // gemm: columns of a packed block
// gemm: ... when all rows fit one task (batch-16 decode): each block is packed for 16 rows only, so it is
// read from memory while the micro-kernels run on the previous one (PrefetchCursor); a KC x NC_MAX block
// (240 KiB) and the next one's prefetch did not both fit L2 (512 KiB): the packing waited on memory.
constexpr int64_t NC_ONE_TASK = 5 * NR;
constexpr int64_t MC = 16 * MR;        // gemm: rows of a task
constexpr int64_t MC_NT = 128 * MR;    // gemm: rows of a task for nn.Linear weights (amortizes their transposition)
constexpr int64_t GEMM_NT_MIN = 512;   // nn.Linear weights take gemm from this many rows on (encoders)
constexpr int64_t PACK_PF_ROWS = 16;   // gemm: packing prefetches this many weight rows ahead
constexpr int WR = W == 16 ? 12 : 6;   // wt: weight rows (output columns) of the register tile
constexpr int XR = 2 * W;              // wt: x rows of a packed panel (two vectors)
constexpr int64_t WT_KC = 1024;        // wt: k chunk
constexpr int64_t WT_MC = 8 * XR;      // wt: rows of a task (a multiple of XR)
constexpr int64_t FEW_ROWS = 4;        // dot / splitk up to this many rows

inline int lanes(int64_t n, int64_t i) { return static_cast<int>(std::min<int64_t>(W, n - i)); }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Columns per task: at most `cap`, at least `unit`, and small enough for ~4 tasks per thread.
int64_t task_cols(int64_t Cout, int64_t unit, int64_t cap) {
  const int64_t want = ceil_div(Cout, 4 * static_cast<int64_t>(num_threads()));
  return std::clamp(round_up(want, unit), unit, std::max(unit, cap));
}

inline float bias_at(const LinearJob& j, int64_t c) { return j.b ? j.b[c] : 0.0f; }

// y[n0:n1, c0:c1] = act(y) (the dot and stream kernels apply the activation once their block is done)
void apply_act(const LinearJob& j, int64_t n0, int64_t n1, int64_t c0, int64_t c1) {
  if (j.act != Act::GELU_NEW) return;
  for (int64_t n = n0; n < n1; ++n) {
    float* y = j.y + n * j.ldy;
    for (int64_t c = c0; c < c1; c += W) store_n(y + c, vgelu_new(load_n<V>(y + c, lanes(c1, c))), lanes(c1, c));
  }
}

// ---------------------------------------------------------------------------------------------
// dot: (Cout, Cin) weights, few rows

template <int RB, int CB, int KU, class WT>
void dot_tile(const LinearJob& j, const WT* w, int64_t n0, int64_t c0) {
  const float* xr[RB];
  const WT* wr[CB];
  for (int r = 0; r < RB; ++r) xr[r] = j.x + std::min(n0 + r, j.N - 1) * j.ldx;
  for (int c = 0; c < CB; ++c) wr[c] = w + std::min(c0 + c, j.Cout - 1) * j.Cin;
  V acc[RB][CB][KU];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CB; ++c)
      for (int u = 0; u < KU; ++u) acc[r][c][u] = V::zero();
  int64_t k = 0;
  for (; k + KU * W <= j.Cin; k += KU * W) {  // KU vectors of each row per step: fewer, longer loads in flight
    V xv[RB][KU];
    for (int r = 0; r < RB; ++r)
      for (int u = 0; u < KU; ++u) xv[r][u] = V::load(xr[r] + k + u * W);
    for (int c = 0; c < CB; ++c)
      for (int u = 0; u < KU; u += 2) {  // KU is even: two vectors per (wide) load
        if constexpr (CB == 1) __builtin_prefetch(reinterpret_cast<const char*>(wr[c] + k + u * W) + 2048);
        V w0, w1;
        V::load2(wr[c] + k + u * W, w0, w1);
        for (int r = 0; r < RB; ++r) {
          acc[r][c][u] = V::fma(xv[r][u], w0, acc[r][c][u]);
          acc[r][c][u + 1] = V::fma(xv[r][u + 1], w1, acc[r][c][u + 1]);
        }
      }
  }
  for (; k < j.Cin; k += W) {  // the rest, one vector at a time (the last one ragged: zero lanes add nothing)
    const int m = lanes(j.Cin, k);
    V xv[RB];
    for (int r = 0; r < RB; ++r) xv[r] = load_n<V>(xr[r] + k, m);
    for (int c = 0; c < CB; ++c) {
      const V wv = load_n<V>(wr[c] + k, m);
      for (int r = 0; r < RB; ++r) acc[r][c][0] = V::fma(xv[r], wv, acc[r][c][0]);
    }
  }
  for (int r = 0; r < RB && n0 + r < j.N; ++r) {
    float* y = j.y + (n0 + r) * j.ldy;
    for (int c = 0; c < CB && c0 + c < j.Cout; ++c) {
      V sum = acc[r][c][0];
      for (int u = 1; u < KU; ++u) sum = sum + acc[r][c][u];
      const float s = sum.reduce_add() + bias_at(j, c0 + c);
      y[c0 + c] = j.accumulate ? y[c0 + c] + s : s;
    }
  }
}

template <int RB, int CB, int KU, class WT>
void dot_block(const LinearJob& j, const float*, int64_t n0, int64_t n1, int64_t c0, int64_t c1) {
  const WT* w = static_cast<const WT*>(j.w.data);
  for (int64_t c = c0; c < c1; c += CB)
    for (int64_t n = n0; n < n1; n += RB) dot_tile<RB, CB, KU, WT>(j, w, n, c);
  apply_act(j, n0, n1, c0, c1);
}

// ---------------------------------------------------------------------------------------------
// splitk: (Cin, Cout) weights, few rows. part (N, Cout) = x[:, k0:k1] @ W[k0:k1, :]

constexpr int SPLITK_RU = 4;  // splitk: weight rows per pass (they share one load and store of each y vector)

template <int NROWS, class WT>
void splitk_slab(const LinearJob& j, int64_t k0, int64_t k1, float* part) {
  constexpr int RU = SPLITK_RU;
  const WT* w = static_cast<const WT*>(j.w.data);
  const int64_t C = j.Cout;
  std::fill(part, part + NROWS * C, 0.0f);
  int64_t k = k0;
  for (; k + RU <= k1; k += RU) {
    const WT* wk = w + k * C;
    V xb[NROWS][RU];
    for (int n = 0; n < NROWS; ++n)
      for (int i = 0; i < RU; ++i) xb[n][i] = V::set1(j.x[n * j.ldx + k + i]);
    int64_t c = 0;
    if constexpr (NROWS == 1)  // two vectors per (wide) load of each row; y's two vectors in registers meanwhile
      for (; c + 2 * W <= C; c += 2 * W) {
        V lo = V::load(part + c), hi = V::load(part + c + W);
        for (int i = 0; i < RU; ++i) {
          __builtin_prefetch(wk + (RU + i) * C + c);  // the same column of the next pass's rows
          V w0, w1;
          V::load2(wk + i * C + c, w0, w1);
          lo = V::fma(xb[0][i], w0, lo);
          hi = V::fma(xb[0][i], w1, hi);
        }
        lo.store(part + c);
        hi.store(part + c + W);
      }
    for (; c + W <= C; c += W) {
      V wv[RU];
      for (int i = 0; i < RU; ++i) wv[i] = V::load(wk + i * C + c);
      for (int n = 0; n < NROWS; ++n) {
        float* y = part + n * C + c;
        V acc = V::load(y);
        for (int i = 0; i < RU; ++i) acc = V::fma(xb[n][i], wv[i], acc);
        acc.store(y);
      }
    }
    if (c < C) {  // the ragged last vector
      const int m = static_cast<int>(C - c);
      V wv[RU];
      for (int i = 0; i < RU; ++i) wv[i] = load_n<V>(wk + i * C + c, m);
      for (int n = 0; n < NROWS; ++n) {
        V acc = load_n<V>(part + n * C + c, m);
        for (int i = 0; i < RU; ++i) acc = V::fma(xb[n][i], wv[i], acc);
        store_n(part + n * C + c, acc, m);
      }
    }
  }
  for (; k < k1; ++k)  // the slab's last rows, one at a time
    for (int n = 0; n < NROWS; ++n) {
      const V xb = V::set1(j.x[n * j.ldx + k]);
      for (int64_t c = 0; c < C; c += W)
        store_n(part + n * C + c, V::fma(xb, load_n<V>(w + k * C + c, lanes(C, c)), load_n<V>(part + n * C + c, lanes(C, c))),
                lanes(C, c));
    }
}

// y[:, c0:c1] = act((accumulate ? y : 0) + sum of the slabs' partials + b)
void splitk_reduce(const LinearJob& j, const float* parts, int64_t slabs, int64_t c0, int64_t c1) {
  const int64_t C = j.Cout;
  for (int64_t n = 0; n < j.N; ++n) {
    float* y = j.y + n * j.ldy;
    for (int64_t c = c0; c < c1; c += W) {
      const int m = lanes(c1, c);
      V acc = j.accumulate ? load_n<V>(y + c, m) : V::zero();
      if (j.b) acc = acc + load_n<V>(j.b + c, m);
      for (int64_t s = 0; s < slabs; ++s) acc = acc + load_n<V>(parts + (s * j.N + n) * C + c, m);
      if (j.act == Act::GELU_NEW) acc = vgelu_new(acc);
      store_n(y + c, acc, m);
    }
  }
}

template <class WT>
void splitk_run(const LinearJob& j, int64_t k0, int64_t k1, float* part) {
  switch (j.N) {
    case 1: return splitk_slab<1, WT>(j, k0, k1, part);
    case 2: return splitk_slab<2, WT>(j, k0, k1, part);
    case 3: return splitk_slab<3, WT>(j, k0, k1, part);
    default: return splitk_slab<4, WT>(j, k0, k1, part);
  }
}

// ---------------------------------------------------------------------------------------------
// wt: (Cout, Cin) weights, more rows; the weight rows are broadcast against packed x^T panels

// Xt[k][0:XR] = x[n0 + r, k] for one panel of XR rows starting at n0 (zeros past N), every k
void pack_xt_panel(float* xt, const LinearJob& j, int64_t n0) {
  for (int r = 0; r < XR; ++r) {
    const int64_t n = n0 + r;
    if (n >= j.N) {
      for (int64_t k = 0; k < j.Cin; ++k) xt[k * XR + r] = 0.0f;
      continue;
    }
    const float* src = j.x + n * j.ldx;
    for (int64_t k = 0; k < j.Cin; ++k) xt[k * XR + r] = src[k];
  }
}

// Wf[i][0:kc] = W[c0 + i, k0:k0+kc] widened to float32 (rows past Cout repeat the last one)
template <class WT>
void widen_rows(float* wf, const LinearJob& j, int64_t c0, int64_t k0, int64_t kc) {
  const WT* w = static_cast<const WT*>(j.w.data);
  for (int i = 0; i < WR; ++i) {
    const WT* src = w + std::min(c0 + i, j.Cout - 1) * j.Cin + k0;
    for (int64_t k = 0; k < kc; k += W) store_n(wf + i * kc + k, load_n<V>(src + k, lanes(kc, k)), lanes(kc, k));
  }
}

// y[n0:n0+XR, c0:c0+WR] (+)= x[., k0:k0+kc] @ W[c0:c0+WR, k0:k0+kc]^T, from Xp (kc x XR) and the WR float32
// weight rows wr[i][0:kc] (float32 weights in place, half ones widened into Wf)
// pf: the next weight tile (pf_bytes, contiguous), prefetched along the k loop so that its widening does
// not wait on memory (with few rows the loop is otherwise memory-latency bound, one tile after another)
void wt_micro(const LinearJob& j, const float* const* wr, const float* xp, int64_t kc, int64_t n0, int64_t c0, int64_t k0,
              const char* pf = nullptr, int64_t pf_bytes = 0) {
  V acc[WR][2];
  for (int i = 0; i < WR; ++i) acc[i][0] = acc[i][1] = V::zero();
  for (int64_t k = 0; k < kc; ++k) {
    if (pf && (k & 1) == 0 && 32 * k < pf_bytes) __builtin_prefetch(pf + 32 * k);  // 64 B every other step
    const V x0 = V::load(xp + k * XR), x1 = V::load(xp + k * XR + W);
    for (int i = 0; i < WR; ++i) {
      const V a = V::set1(wr[i][k]);
      acc[i][0] = V::fma(a, x0, acc[i][0]);
      acc[i][1] = V::fma(a, x1, acc[i][1]);
    }
  }
  const bool add_y = k0 > 0 || j.accumulate, last = k0 + kc == j.Cin;
  float col[XR];  // one output column for the panel's XR rows
  for (int i = 0; i < WR && c0 + i < j.Cout; ++i) {
    acc[i][0].store(col);
    acc[i][1].store(col + W);
    const float bias = last ? bias_at(j, c0 + i) : 0.0f;
    for (int r = 0; r < XR && n0 + r < j.N; ++r) {
      float* y = j.y + (n0 + r) * j.ldy + c0 + i;
      *y = (add_y ? *y : 0.0f) + col[r] + bias;
    }
  }
}

template <class WT>
void wt_block(const LinearJob& j, const float* xt, int64_t n0, int64_t n1, int64_t c0, int64_t c1) {
  thread_local std::vector<float> wf;
  wf.resize(static_cast<size_t>(WR * WT_KC));
  for (int64_t k0 = 0; k0 < j.Cin; k0 += WT_KC) {
    const int64_t kc = std::min(WT_KC, j.Cin - k0);
    for (int64_t c = c0; c < c1; c += WR) {
      const float* wr[WR];
      if constexpr (std::is_same_v<WT, float>) {  // read in place (rows past Cout repeat the last)
        for (int i = 0; i < WR; ++i) wr[i] = static_cast<const float*>(j.w.data) + std::min(c + i, j.Cout - 1) * j.Cin + k0;
      } else {
        widen_rows<WT>(wf.data(), j, c, k0, kc);
        for (int i = 0; i < WR; ++i) wr[i] = wf.data() + i * kc;
      }
      // the next tile's rows [c + WR, c + 2 WR) at columns [k0, k0 + kc): contiguous when kc == Cin
      const WT* next = static_cast<const WT*>(j.w.data) + (c + WR) * j.Cin + k0;
      const bool ahead = kc == j.Cin && c + 2 * WR <= j.Cout;
      for (int64_t n = n0; n < n1; n += XR)
        wt_micro(j, wr, xt + (n / XR * j.Cin + k0) * XR, kc, n, c, k0,
                 ahead && n == n0 ? reinterpret_cast<const char*>(next) : nullptr,
                 static_cast<int64_t>(WR * kc * sizeof(WT)));
    }
  }
  apply_act(j, n0, n1, c0, c1);
}

// ---------------------------------------------------------------------------------------------
// gemm: packed panels

// Bp[p][k][0:NR] = W[k0 + k, c0 + p*NR : ...] for the block (kc x nc), zero past Cout. Row by row,
// so each weight row segment is read contiguously.
template <class WT>
void pack_kn(float* bp, const LinearJob& j, int64_t k0, int64_t kc, int64_t c0, int64_t nc) {
  const WT* w = static_cast<const WT*>(j.w.data);
  const int64_t seg_bytes = std::min(nc, j.Cout - c0) * static_cast<int64_t>(sizeof(WT));
  for (int64_t k = 0; k < kc; ++k) {
    const WT* src = w + (k0 + k) * j.Cout + c0;
    if (k0 + k + PACK_PF_ROWS < j.Cin) {  // the rows are far apart: fetch the segment PACK_PF_ROWS rows ahead
      const char* ahead = reinterpret_cast<const char*>(src + PACK_PF_ROWS * j.Cout);
      for (int64_t b = 0; b < seg_bytes; b += 64) __builtin_prefetch(ahead + b);
    }
    for (int64_t p = 0; p < nc; p += NR) {
      float* dst = bp + p * kc + k * NR;
      for (int v = 0; v < NR; v += W) {
        const int m = static_cast<int>(std::clamp<int64_t>(j.Cout - c0 - p - v, 0, W));
        (m ? load_n<V>(src + p + v, m) : V::zero()).store(dst + v);
      }
    }
  }
}

// The same block from (Cout, Cin) weights: each weight row segment is read contiguously (widened) and
// scattered into its column of the panels. For many rows only (the scatter costs ~1 store per weight).
template <class WT>
void pack_nt(float* bp, const LinearJob& j, int64_t k0, int64_t kc, int64_t c0, int64_t nc) {
  const WT* w = static_cast<const WT*>(j.w.data);
  float row[W];
  for (int64_t c = 0; c < nc; ++c) {
    float* dst = bp + c / NR * NR * kc + c % NR;
    if (c0 + c >= j.Cout) {
      for (int64_t k = 0; k < kc; ++k) dst[k * NR] = 0.0f;
      continue;
    }
    const WT* src = w + (c0 + c) * j.Cin + k0;
    for (int64_t k = 0; k < kc; k += W) {
      const int m = lanes(kc, k);
      load_n<V>(src + k, m).store(row);
      for (int i = 0; i < m; ++i) dst[(k + i) * NR] = row[i];
    }
  }
}

// Prefetches the next weight block (rows of `line_count` cache lines, `stride` bytes apart) into L2, a
// line every other k step of the micro-kernels: the next block's packing then reads L2, not memory,
// and the memory stream overlaps the arithmetic instead of alternating with it.
// (No division per step: it sits in the micro-kernel's inner loop.)
struct PrefetchCursor {
  const char* row = nullptr;  // the row being fetched
  int64_t stride = 0, lines_per_row = 0, rows_left = 0, line = 0;
  void step() {
    if (rows_left == 0) return;
    __builtin_prefetch(row + line * 64, 0, 2);
    if (++line == lines_per_row) line = 0, row += stride, --rows_left;
  }
};

// The MR x NR register tile over one packed panel: y[n0:n0+MR, c0:c0+ncols] (+)= x[:, k0:k0+kc] @ panel
void micro(const LinearJob& j, const float* bp, int64_t n0, int64_t c0, int64_t k0, int64_t kc, int ncols,
           PrefetchCursor& pf) {
  const bool first = k0 == 0, last = k0 + kc == j.Cin;
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = j.x + std::min(n0 + r, j.N - 1) * j.ldx + k0;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
  for (int64_t k = 0; k < kc; ++k) {
    if ((k & 1) == 0) pf.step();
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = V::load(bp + k * NR + v * W);
    for (int r = 0; r < MR; ++r) {
      const V a = V::set1(xr[r][k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(a, b[v], acc[r][v]);
    }
  }
  int m[NV];  // valid columns of each vector
  V bias[NV];
  for (int v = 0; v < NV; ++v) {
    m[v] = std::clamp(ncols - v * W, 0, W);
    bias[v] = last && j.b && m[v] ? load_n<V>(j.b + c0 + v * W, m[v]) : V::zero();
  }
  const bool add_y = !first || j.accumulate;
  for (int r = 0; r < MR && n0 + r < j.N; ++r) {
    float* y = j.y + (n0 + r) * j.ldy + c0;
    for (int v = 0; v < NV; ++v) {
      if (!m[v]) continue;
      V out = acc[r][v] + bias[v];
      if (add_y) out = out + load_n<V>(y + v * W, m[v]);
      if (last && j.act == Act::GELU_NEW) out = vgelu_new(out);
      store_n(y + v * W, out, m[v]);
    }
  }
}

template <class WT>
void gemm_block(const LinearJob& j, const float*, int64_t n0, int64_t n1, int64_t c0, int64_t c1) {
  thread_local std::vector<float> packed;
  const int64_t nc = round_up(c1 - c0, NR);
  packed.resize(static_cast<size_t>(KC * NC_MAX));
  for (int64_t k0 = 0; k0 < j.Cin; k0 += KC) {
    const int64_t kc = std::min(KC, j.Cin - k0);
    if (j.w.kn) pack_kn<WT>(packed.data(), j, k0, kc, c0, nc);
    else pack_nt<WT>(packed.data(), j, k0, kc, c0, nc);
    PrefetchCursor pf;  // the next k chunk's block of this task
    if (j.w.kn && k0 + KC < j.Cin) {
      pf.row = reinterpret_cast<const char*>(static_cast<const WT*>(j.w.data) + (k0 + KC) * j.Cout + c0);
      pf.stride = j.Cout * static_cast<int64_t>(sizeof(WT));
      pf.lines_per_row = ceil_div((c1 - c0) * static_cast<int64_t>(sizeof(WT)), 64);
      pf.rows_left = std::min(KC, j.Cin - k0 - KC);
    }
    for (int64_t p = 0; p < nc; p += NR) {
      const int ncols = static_cast<int>(std::min<int64_t>(NR, c1 - c0 - p));
      for (int64_t n = n0; n < n1; n += MR) micro(j, packed.data() + p * kc, n, c0 + p, k0, kc, ncols, pf);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Planning: each job becomes tasks; the split-k jobs get a reduction afterwards

using BlockFn = void (*)(const LinearJob&, const float* xt, int64_t, int64_t, int64_t, int64_t);
using SlabFn = void (*)(const LinearJob&, int64_t, int64_t, float*);

struct Plan {
  BlockFn block = nullptr;      // tiles: rows x cols blocks
  int64_t rows = 0, cols = 0;
  SlabFn slab = nullptr;        // split-k: slabs of `krows` rows of W, partials in parts
  int64_t krows = 0, slabs = 0;
  float* parts = nullptr;       // (slabs, N, Cout)
  bool packs_x = false;         // wt: needs x^T in panels (xt)
  const float* xt = nullptr;    // (ceil(N / XR), Cin, XR)
  int64_t ntasks = 0, first_task = 0;
};

template <class WT>
Plan plan_for(const LinearJob& j) {
  Plan p;
  if (j.w.kn && j.N <= FEW_ROWS) {
    p.slab = splitk_run<WT>;
    const int64_t want = std::max<int64_t>(2 * num_threads(), 1);
    p.krows = std::max<int64_t>(16, round_up(ceil_div(j.Cin, want), 4));
    p.slabs = p.ntasks = ceil_div(j.Cin, p.krows);
    return p;
  }
  if (j.w.kn) p.block = gemm_block<WT>, p.rows = MC, p.cols = task_cols(j.Cout, NR, j.N <= MC ? NC_ONE_TASK : NC_MAX);
  else if (j.N == 1)
    p.block = dot_block<1, DOT_CB1<WT>, DOT_KU1<WT>, WT>, p.rows = 1, p.cols = task_cols(j.Cout, DOT_CB1<WT>, 256);
  else if (j.N <= FEW_ROWS) p.block = dot_block<DOT_RB, DOT_CB, 2, WT>, p.rows = j.N, p.cols = task_cols(j.Cout, DOT_CB, 64);
  else if (j.N >= GEMM_NT_MIN) p.block = gemm_block<WT>, p.rows = MC_NT, p.cols = task_cols(j.Cout, NR, NC_MAX);
  else p.block = wt_block<WT>, p.rows = WT_MC, p.cols = task_cols(j.Cout, WR, 16 * WR), p.packs_x = true;
  p.ntasks = ceil_div(j.N, p.rows) * ceil_div(j.Cout, p.cols);
  return p;
}

Plan plan(const LinearJob& j) {
  switch (j.w.dtype) {
    case DType::F16: return plan_for<f16_t>(j);
    case DType::BF16: return plan_for<bf16_t>(j);
    default: return plan_for<float>(j);
  }
}

void run_task(const LinearJob& j, const Plan& p, int64_t t) {
  if (p.slab) {
    const int64_t k0 = t * p.krows;
    return p.slab(j, k0, std::min(j.Cin, k0 + p.krows), p.parts + t * j.N * j.Cout);
  }
  const int64_t col_blocks = ceil_div(j.Cout, p.cols), n0 = t / col_blocks * p.rows, c0 = t % col_blocks * p.cols;
  p.block(j, p.xt, n0, std::min(j.N, n0 + p.rows), c0, std::min(j.Cout, c0 + p.cols));
}

}  // namespace

template <>
void linear<ISA>(const LinearJob* jobs, int njobs) {
  std::vector<Plan> plans(njobs);
  int64_t ntasks = 0, nparts = 0;
  for (int i = 0; i < njobs; ++i) {
    plans[i] = jobs[i].N > 0 && jobs[i].Cout > 0 ? plan(jobs[i]) : Plan{};
    plans[i].first_task = ntasks;
    ntasks += plans[i].ntasks;
    nparts += plans[i].slabs * jobs[i].N * jobs[i].Cout;
  }
  std::vector<float> parts(static_cast<size_t>(nparts));
  for (int i = 0, off = 0; i < njobs; ++i) {
    plans[i].parts = parts.data() + off;
    off += plans[i].slabs * jobs[i].N * jobs[i].Cout;
  }
  // wt jobs: x^T in panels, once per distinct x (the decoder's q, k, v share theirs)
  std::vector<std::vector<float>> xts;
  std::vector<std::pair<int, int64_t>> panels;  // (job, first row)
  for (int i = 0; i < njobs; ++i) {
    if (!plans[i].packs_x) continue;
    for (int o = 0; o < i && !plans[i].xt; ++o)
      if (plans[o].packs_x && jobs[o].x == jobs[i].x && jobs[o].ldx == jobs[i].ldx && jobs[o].N == jobs[i].N &&
          jobs[o].Cin == jobs[i].Cin)
        plans[i].xt = plans[o].xt;
    if (plans[i].xt) continue;
    xts.emplace_back(static_cast<size_t>(round_up(jobs[i].N, XR) * jobs[i].Cin));
    plans[i].xt = xts.back().data();
    for (int64_t n = 0; n < jobs[i].N; n += XR) panels.emplace_back(i, n);
  }
  parallel_for(static_cast<int64_t>(panels.size()), [&](int64_t t) {
    const auto [i, n0] = panels[t];
    pack_xt_panel(const_cast<float*>(plans[i].xt) + n0 * jobs[i].Cin, jobs[i], n0);
  });
  parallel_for(ntasks, [&](int64_t t) {
    int i = njobs - 1;
    while (plans[i].first_task > t) --i;
    run_task(jobs[i], plans[i], t - plans[i].first_task);
  });
  // split-k jobs: sum the partials, in column chunks
  constexpr int64_t kChunk = 512;
  std::vector<std::pair<int, int64_t>> chunks;
  for (int i = 0; i < njobs; ++i)
    if (plans[i].slab)
      for (int64_t c = 0; c < jobs[i].Cout; c += kChunk) chunks.emplace_back(i, c);
  parallel_for(static_cast<int64_t>(chunks.size()), [&](int64_t t) {
    const auto [i, c0] = chunks[t];
    splitk_reduce(jobs[i], plans[i].parts, plans[i].slabs, c0, std::min(jobs[i].Cout, c0 + kChunk));
  });
}

// In blocks of 8 x 8 elements, transposed in registers where the ISA has vectors (8 source rows in, 8
// destination rows out: every load and store touches 8 lines, so the power-of-two strides of the weights do
// not evict each other from L1 as a one-element-at-a-time copy's 64 rows did), spread over the pool in bands
// of destination rows; the ragged edges element by element.
template <class E>
void transpose_block8(E* d, int64_t ld, const E* s, int64_t ls) {  // d[c][k] = s[k][c], c, k < 8
#if defined(__AVX2__)
  if constexpr (sizeof(E) == 4) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(reinterpret_cast<const float*>(s + i * ls));
    for (int i = 0; i < 8; i += 2) t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    for (int i = 0; i < 8; i += 4)
      for (int h = 0; h < 2; ++h) {
        r[i + h] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + h + 2] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], _MM_SHUFFLE(3, 2, 3, 2));
      }
    // r[0..3]: columns 0, 4 | 2, 6 | 1, 5 | 3, 7 of rows 0-3 (low lane) and rows 4-7 (high); r[4..7] likewise
    const int col_of[4] = {0, 2, 1, 3};
    for (int i = 0; i < 4; ++i) {
      const int c = col_of[i];
      _mm256_storeu_ps(reinterpret_cast<float*>(d + c * ld), _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
      _mm256_storeu_ps(reinterpret_cast<float*>(d + (c + 4) * ld), _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
    return;
  } else {
    __m128i r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i * ls));
    for (int i = 0; i < 8; i += 2) t[i] = _mm_unpacklo_epi16(r[i], r[i + 1]), t[i + 1] = _mm_unpackhi_epi16(r[i], r[i + 1]);
    for (int i = 0; i < 8; i += 4)
      for (int h = 0; h < 2; ++h)
        r[i + 2 * h] = _mm_unpacklo_epi32(t[i + h], t[i + h + 2]), r[i + 2 * h + 1] = _mm_unpackhi_epi32(t[i + h], t[i + h + 2]);
    // r[0..3]: columns (0,1) (2,3) (4,5) (6,7) of rows 0-3; r[4..7] the same of rows 4-7
    for (int i = 0; i < 4; ++i) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * i * ld), _mm_unpacklo_epi64(r[i], r[i + 4]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + (2 * i + 1) * ld), _mm_unpackhi_epi64(r[i], r[i + 4]));
    }
    return;
  }
#endif
  for (int c = 0; c < 8; ++c)
    for (int k = 0; k < 8; ++k) d[c * ld + k] = s[k * ls + c];
}

template <class E>
void transpose_blocks(E* dst, const E* src, int64_t Cin, int64_t Cout) {
  constexpr int64_t BAND = 32;  // destination rows per task
  parallel_for(ceil_div(Cout, BAND), [&](int64_t t) {
    const int64_t c0 = t * BAND, c1 = std::min(Cout, c0 + BAND), c8 = c0 + (c1 - c0) / 8 * 8, k8 = Cin / 8 * 8;
    for (int64_t k = 0; k < k8; k += 8)
      for (int64_t c = c0; c < c8; c += 8) transpose_block8(dst + c * Cin + k, Cin, src + k * Cout + c, Cout);
    for (int64_t c = c0; c < c1; ++c)  // the ragged edges: columns past the last block of 8, rows past Cin's
      for (int64_t k = c < c8 ? k8 : 0; k < Cin; ++k) dst[c * Cin + k] = src[k * Cout + c];
  });
}

template <>
void transpose_weight<ISA>(void* dst, const void* src, int64_t Cin, int64_t Cout, int elem_bytes) {
  if (elem_bytes == 4) transpose_blocks(static_cast<uint32_t*>(dst), static_cast<const uint32_t*>(src), Cin, Cout);
  else transpose_blocks(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), Cin, Cout);
}

}  // namespace pyclvp::cpu
