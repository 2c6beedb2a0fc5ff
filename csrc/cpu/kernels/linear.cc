// linear: y = act(x @ W^T + b) for float32 activations and float32 / float16 / bfloat16 weights.
// matches pyclvp/ops/numpy_ops.py::linear. Compiled once per ISA (see csrc/cpu/kernels.h).
//
// Two weight layouts, two register-tiled micro-kernels, no copy of the weights:
//
//   (Cout, Cin)  nn.Linear   "dot" kernel: a tile of RB rows x CB output columns keeps RB*CB
//                            vector accumulators; each step loads RB x vectors and CB weight-row
//                            vectors along k and does RB*CB FMAs; the lanes are summed at the end.
//   (Cin, Cout)  Conv1D      "outer" kernel: a tile of RB rows x CV vectors of columns; each step
//                            loads CV vectors of weight row k, broadcasts x[r, k] and does RB*CV
//                            FMAs (the BLIS-style outer product; no horizontal sums).
//
// Both are blocked for the caches: a task is a block of rows x columns (the weight block stays in
// L2 while the row tiles pass over it; the outer kernel also splits k so a weight tile stays in L1).
// Tasks are spread over the thread pool; several products (q, k, v) can share one parallel region.
// Edge tiles clamp their row pointers to the last row and drop the duplicate results, so one
// instantiation per tile shape serves every N. With N == 1 (decode) the tiles are 1 row wide and
// many columns wide, so each thread streams several weight rows / lines at once.
// Half weights are widened to float32 as they are loaded; accumulation is always float32.
#include <algorithm>
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
constexpr int DOT_RB = W == 16 ? 4 : 3, DOT_CB = W == 16 ? 6 : 4;  // rows x columns
constexpr int DOT_CB1 = 8;                                          // columns when N == 1
constexpr int OUT_RB = W == 16 ? 6 : 4, OUT_CV = W == 16 ? 4 : 3;  // rows x column vectors
constexpr int OUT_CV1 = 8;                                          // column vectors when N == 1
constexpr int64_t OUT_KC = 256;                                     // k chunk of the outer kernel

// ---------------------------------------------------------------------------------------------
// Epilogue helpers

inline float bias_at(const LinearJob& j, int64_t c) { return j.b ? j.b[c] : 0.0f; }

// act over y[n0:n1, c0:c1] (the dot kernel writes scalars; the activation runs vectorized after)
void apply_act(const LinearJob& j, int64_t n0, int64_t n1, int64_t c0, int64_t c1) {
  if (j.act != Act::GELU_NEW) return;
  for (int64_t n = n0; n < n1; ++n) {
    float* y = j.y + n * j.ldy;
    for (int64_t c = c0; c < c1; c += W) {
      const int m = static_cast<int>(std::min<int64_t>(W, c1 - c));
      store_n(y + c, vgelu_new(load_n<V>(y + c, m)), m);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (Cout, Cin) weights: dot-product tiles

template <int RB, int CB, class WT>
void dot_tile(const LinearJob& j, const WT* w, int64_t n0, int64_t c0) {
  const float* xr[RB];
  const WT* wr[CB];
  for (int r = 0; r < RB; ++r) xr[r] = j.x + std::min(n0 + r, j.N - 1) * j.ldx;
  for (int c = 0; c < CB; ++c) wr[c] = w + std::min(c0 + c, j.Cout - 1) * j.Cin;
  V acc[RB][CB];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CB; ++c) acc[r][c] = V::zero();
  int64_t k = 0;
  for (; k + W <= j.Cin; k += W) {
    V xv[RB];
    for (int r = 0; r < RB; ++r) xv[r] = V::load(xr[r] + k);
    for (int c = 0; c < CB; ++c) {
      const V wv = V::load(wr[c] + k);
      for (int r = 0; r < RB; ++r) acc[r][c] = V::fma(xv[r], wv, acc[r][c]);
    }
  }
  if (k < j.Cin) {  // ragged end of k: zero-filled lanes add nothing
    const int m = static_cast<int>(j.Cin - k);
    V xv[RB];
    for (int r = 0; r < RB; ++r) xv[r] = load_n<V>(xr[r] + k, m);
    for (int c = 0; c < CB; ++c) {
      const V wv = load_n<V>(wr[c] + k, m);
      for (int r = 0; r < RB; ++r) acc[r][c] = V::fma(xv[r], wv, acc[r][c]);
    }
  }
  for (int r = 0; r < RB && n0 + r < j.N; ++r) {
    float* y = j.y + (n0 + r) * j.ldy;
    for (int c = 0; c < CB && c0 + c < j.Cout; ++c) {
      const float s = acc[r][c].reduce_add() + bias_at(j, c0 + c);
      y[c0 + c] = j.accumulate ? y[c0 + c] + s : s;
    }
  }
}

template <int RB, int CB, class WT>
void dot_block(const LinearJob& j, int64_t n0, int64_t n1, int64_t c0, int64_t c1) {
  const WT* w = static_cast<const WT*>(j.w.data);
  for (int64_t n = n0; n < n1; n += RB)
    for (int64_t c = c0; c < c1; c += CB) dot_tile<RB, CB, WT>(j, w, n, c);
  apply_act(j, n0, n1, c0, c1);
}

// ---------------------------------------------------------------------------------------------
// (Cin, Cout) weights: outer-product tiles over one k chunk [k0, k1)

template <int RB, int CV, class WT>
void outer_tile(const LinearJob& j, const WT* w, int64_t n0, int64_t c0, int64_t k0, int64_t k1) {
  const bool first = k0 == 0, last = k1 == j.Cin;
  const int64_t ncols = std::min<int64_t>(CV * W, j.Cout - c0);
  int nv[CV];  // valid lanes of each column vector (W, a ragged count, or 0)
  for (int c = 0; c < CV; ++c) nv[c] = static_cast<int>(std::clamp<int64_t>(ncols - c * W, 0, W));
  const bool full = ncols == CV * W;
  const float* xr[RB];
  for (int r = 0; r < RB; ++r) xr[r] = j.x + std::min(n0 + r, j.N - 1) * j.ldx;

  V acc[RB][CV];
  for (int r = 0; r < RB; ++r)
    for (int c = 0; c < CV; ++c)
      acc[r][c] = (!first || j.accumulate) && n0 + r < j.N && nv[c] ? load_n<V>(j.y + (n0 + r) * j.ldy + c0 + c * W, nv[c])
                                                                    : V::zero();
  const WT* wk = w + k0 * j.Cout + c0;
  if (full) {
    for (int64_t k = k0; k < k1; ++k, wk += j.Cout) {
      V wv[CV];
      for (int c = 0; c < CV; ++c) wv[c] = V::load(wk + c * W);
      for (int r = 0; r < RB; ++r) {
        const V xb = V::set1(xr[r][k]);
        for (int c = 0; c < CV; ++c) acc[r][c] = V::fma(xb, wv[c], acc[r][c]);
      }
    }
  } else {  // the ragged last column tile
    for (int64_t k = k0; k < k1; ++k, wk += j.Cout) {
      V wv[CV];
      for (int c = 0; c < CV; ++c) wv[c] = nv[c] ? load_n<V>(wk + c * W, nv[c]) : V::zero();
      for (int r = 0; r < RB; ++r) {
        const V xb = V::set1(xr[r][k]);
        for (int c = 0; c < CV; ++c) acc[r][c] = V::fma(xb, wv[c], acc[r][c]);
      }
    }
  }
  for (int c = 0; c < CV; ++c) {
    if (!nv[c]) continue;
    const V bias = last && j.b ? load_n<V>(j.b + c0 + c * W, nv[c]) : V::zero();
    for (int r = 0; r < RB && n0 + r < j.N; ++r) {
      V out = acc[r][c] + bias;
      if (last && j.act == Act::GELU_NEW) out = vgelu_new(out);
      store_n(j.y + (n0 + r) * j.ldy + c0 + c * W, out, nv[c]);
    }
  }
}

template <int RB, int CV, class WT>
void outer_block(const LinearJob& j, int64_t n0, int64_t n1, int64_t c0, int64_t c1) {
  const WT* w = static_cast<const WT*>(j.w.data);
  for (int64_t k0 = 0; k0 < j.Cin; k0 += OUT_KC) {
    const int64_t k1 = std::min(j.Cin, k0 + OUT_KC);
    for (int64_t c = c0; c < c1; c += CV * W)
      for (int64_t n = n0; n < n1; n += RB) outer_tile<RB, CV, WT>(j, w, n, c, k0, k1);
  }
}

// ---------------------------------------------------------------------------------------------
// Blocking: a job is cut into (row block) x (column block) tasks

struct Blocking {
  int64_t rows, cols;  // block sizes
  void (*run)(const LinearJob&, int64_t, int64_t, int64_t, int64_t);
};

template <class WT>
Blocking blocking_for(const LinearJob& j) {
  if (j.w.kn) {
    if (j.N == 1) return {1, 4 * OUT_CV1 * W, outer_block<1, OUT_CV1, WT>};
    return {OUT_RB * 8, OUT_CV * W * 4, outer_block<OUT_RB, OUT_CV, WT>};
  }
  if (j.N == 1) return {1, DOT_CB1 * 4, dot_block<1, DOT_CB1, WT>};
  return {DOT_RB * 16, DOT_CB * 8, dot_block<DOT_RB, DOT_CB, WT>};
}

Blocking blocking(const LinearJob& j) {
  switch (j.w.dtype) {
    case DType::F16: return blocking_for<f16_t>(j);
    case DType::BF16: return blocking_for<bf16_t>(j);
    default: return blocking_for<float>(j);
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

template <>
void linear<ISA>(const LinearJob* jobs, int njobs) {
  struct Plan {
    Blocking b;
    int64_t col_blocks, first_task;
  };
  std::vector<Plan> plans(njobs);
  int64_t ntasks = 0;
  for (int i = 0; i < njobs; ++i) {
    const LinearJob& j = jobs[i];
    plans[i].b = blocking(j);
    plans[i].col_blocks = ceil_div(j.Cout, plans[i].b.cols);
    plans[i].first_task = ntasks;
    if (j.N > 0 && j.Cout > 0) ntasks += ceil_div(j.N, plans[i].b.rows) * plans[i].col_blocks;
  }
  parallel_for(ntasks, [&](int64_t t) {
    int i = njobs - 1;
    while (plans[i].first_task > t) --i;
    const LinearJob& j = jobs[i];
    const Plan& p = plans[i];
    const int64_t local = t - p.first_task, rb = local / p.col_blocks, cb = local % p.col_blocks;
    const int64_t n0 = rb * p.b.rows, c0 = cb * p.b.cols;
    p.b.run(j, n0, std::min(j.N, n0 + p.b.rows), c0, std::min(j.Cout, c0 + p.b.cols));
  });
}

}  // namespace pyclvp::cpu
