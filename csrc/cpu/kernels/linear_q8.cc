// linear_q8: y = act(x @ W^T + b) for float32 activations and int8 weights with one float32 scale per block
// of Q8_BLOCK = 32 consecutive input channels (Q8_0-style, weight-only: x, y and every sum stay float32).
// matches pyclvp/ops/numpy_ops.py::linear_q8. Compiled once per ISA (see csrc/cpu/kernels.h).
//
//   W[c, k] = q[c, k] * scale[c, k / 32]       the reference's dequantized weight (the product is exact in float32
//                                              rounding, so the batch path forms the same bits in registers)
//
// q is (Cout, Cin) row-major whatever the checkpoint's layout (pyclvp/io/q8.py quantizes a Conv1D weight
// transposed), so one kernel serves every product: a task owns a block of rows x a block of output columns and
// walks it in register tiles of RB x rows by CB weight rows. A tile keeps RB*CB vector accumulators along k; per
// vector of k it loads RB x vectors and CB int8 vectors, each widened to float32 and multiplied by its block's
// scale as it is loaded (the dequantized weight lives in a register and is never written), then does RB*CB FMAs;
// the lanes are summed at the end. With several rows, row tiles are the outer loop: a tile's RB x rows (4 x 1024
// floats = 16 KiB) stay in L1 while it passes over the task's weight rows, which stay in L2 (a task's block is at
// most TASK_BYTES of int8) for the next row tile. (Column tiles outermost instead, the 16 rows of batch-16
// decode were re-read from L2 by every tile, 12 vector loads per 12 FMAs: slower than L2 can feed.)
//
// Decode (N == 1) streams the weights: int8 + scales are 1.125 bytes per weight, against bfloat16's 2 and float32's 4.
// CB1 = 4 rows stream side by side, each prefetched 8 KiB ahead (consecutive rows are adjacent in memory: the task's
// block is one contiguous stream); a block's x * q sums take its scale once, by one FMA, instead of a multiply per
// weight. Batch rows (the 16-candidate rank job) share each dequantized vector between RB rows, so the widening
// and the scaling are paid once per RB rows.
// Ragged edges: row pointers are clamped to the last row / column and the duplicate results dropped; Cin is a
// multiple of 32 (the bindings check it), so k has no tail.
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
constexpr int64_t QB = Q8_BLOCK;
static_assert(QB % W == 0, "a scale block holds whole vectors");

// Register tiles: (x rows, weight rows). 16 ymm registers (AVX2) hold 4 x 3 accumulators + x and the weight;
// 32 zmm (AVX-512) hold 4 x 4. With one x row the weights are the stream: 4 rows side by side.
constexpr int RB = 4;
constexpr int CB = W == 16 ? 4 : 3;
constexpr int CB1 = 4;             // weight rows per tile when N == 1
constexpr int PF_BYTES = 8192;     // N == 1: prefetch distance along each row (rows are adjacent: the stream's future)
constexpr int64_t MC = 16;         // rows of a task (the 16 rows of batch-16 decode)
constexpr int64_t TASK_BYTES = 192 << 10;  // int8 weights of a task with several rows: they stay in L2

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// y[n0:n0+R, c0:c0+C] (+)= x[n0:n0+R] @ W[c0:c0+C]^T + b (rows past N / columns past Cout are computed on
// clamped pointers and dropped)
template <int R, int C>
void tile(const LinearJob& j, int64_t n0, int64_t c0) {
  const int64_t nblk = j.Cin / QB;
  const float* xr[R];
  const int8_t* qr[C];
  const float* sr[C];
  for (int r = 0; r < R; ++r) xr[r] = j.x + std::min(n0 + r, j.N - 1) * j.ldx;
  for (int c = 0; c < C; ++c) {
    const int64_t col = std::min(c0 + c, j.Cout - 1);
    qr[c] = static_cast<const int8_t*>(j.w.data) + col * j.Cin;
    sr[c] = j.w.scale + col * nblk;
  }
  V acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = V::zero();
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t kb = blk * QB;
    if constexpr (R == 1)  // one cache line (two blocks) of each row, PF_BYTES ahead
      if ((blk & 1) == 0)
        for (int c = 0; c < C; ++c) __builtin_prefetch(qr[c] + kb + PF_BYTES);
    if constexpr (R == 1) {  // sum x * q over the block, then one FMA by its scale: no multiply per weight
      V part[C];
      for (int c = 0; c < C; ++c) part[c] = V::zero();
      for (int64_t k = kb; k < kb + QB; k += W) {
        const V xv = V::load(xr[0] + k);
        for (int c = 0; c < C; ++c) part[c] = V::fma(xv, V::load(qr[c] + k), part[c]);
      }
      for (int c = 0; c < C; ++c) acc[0][c] = V::fma(part[c], V::set1(sr[c][blk]), acc[0][c]);
    } else {  // the dequantized weights q * scale, shared by the R rows
      V s[C];
      for (int c = 0; c < C; ++c) s[c] = V::set1(sr[c][blk]);
      for (int64_t k = kb; k < kb + QB; k += W) {
        V xv[R];
        for (int r = 0; r < R; ++r) xv[r] = V::load(xr[r] + k);
        for (int c = 0; c < C; ++c) {
          const V w = V::load(qr[c] + k) * s[c];
          for (int r = 0; r < R; ++r) acc[r][c] = V::fma(xv[r], w, acc[r][c]);
        }
      }
    }
  }
  for (int r = 0; r < R && n0 + r < j.N; ++r) {
    float* y = j.y + (n0 + r) * j.ldy;
    for (int c = 0; c < C && c0 + c < j.Cout; ++c) {
      const float s = acc[r][c].reduce_add() + (j.b ? j.b[c0 + c] : 0.0f);
      y[c0 + c] = j.accumulate ? y[c0 + c] + s : s;
    }
  }
}

// One task: rows [n0, n1) x columns [c0, c1), then the activation over the block.
void block(const LinearJob& j, int64_t n0, int64_t n1, int64_t c0, int64_t c1) {
  if (j.N == 1) {
    for (int64_t c = c0; c < c1; c += CB1) tile<1, CB1>(j, 0, c);
  } else if (n1 - n0 == 2) {
    for (int64_t c = c0; c < c1; c += CB) tile<2, CB>(j, n0, c);
  } else {
    for (int64_t n = n0; n < n1; n += RB)
      for (int64_t c = c0; c < c1; c += CB) tile<RB, CB>(j, n, c);
  }
  if (j.act != Act::GELU_NEW) return;
  for (int64_t n = n0; n < n1; ++n) {
    float* y = j.y + n * j.ldy;
    for (int64_t c = c0; c < c1; c += W) {
      const int m = static_cast<int>(std::min<int64_t>(W, c1 - c));
      store_n(y + c, vgelu_new(load_n<V>(y + c, m)), m);
    }
  }
}

struct Plan {
  int64_t rows = 0, cols = 0, ntasks = 0, first_task = 0;
};

// Rows per task: all of them up to MC (decode, batch 16: the weights are read once); columns per task: a
// multiple of the tile width, small enough for ~4 tasks per thread.
Plan plan(const LinearJob& j) {
  Plan p;
  p.rows = std::min(j.N, MC);
  const int64_t unit = j.N == 1 ? CB1 : CB;
  const int64_t row_blocks = ceil_div(j.N, p.rows);
  const int64_t want = ceil_div(j.Cout * row_blocks, 4 * static_cast<int64_t>(num_threads()));
  const int64_t cap = j.N == 1 ? 256 : TASK_BYTES / j.Cin;
  p.cols = std::clamp(round_up(want, unit), unit, std::max(unit, cap / unit * unit));
  p.ntasks = row_blocks * ceil_div(j.Cout, p.cols);
  return p;
}

}  // namespace

template <>
void linear_q8<ISA>(const LinearJob* jobs, int njobs) {
  std::vector<Plan> plans(njobs);
  int64_t ntasks = 0;
  for (int i = 0; i < njobs; ++i) {
    plans[i] = jobs[i].N > 0 && jobs[i].Cout > 0 ? plan(jobs[i]) : Plan{};
    plans[i].first_task = ntasks;
    ntasks += plans[i].ntasks;
  }
  parallel_for(ntasks, [&](int64_t t) {
    int i = njobs - 1;
    while (plans[i].first_task > t) --i;
    const LinearJob& j = jobs[i];
    const Plan& p = plans[i];
    t -= p.first_task;
    const int64_t col_blocks = ceil_div(j.Cout, p.cols), n0 = t / col_blocks * p.rows, c0 = t % col_blocks * p.cols;
    block(j, n0, std::min(j.N, n0 + p.rows), c0, std::min(j.Cout, c0 + p.cols));
  });
}

}  // namespace pyclvp::cpu
