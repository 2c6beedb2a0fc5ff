// linear: y = act(x @ W^T + b) for float32 activations and float32 / float16 / bfloat16 weights.
// matches pyclvp/ops/numpy_ops.py::linear; contract in csrc/cuda/kernels.h. On the device every weight
// is (Cout, Cin) row-major: upload_rows() transposes a Conv1D (Cin, Cout) weight once, on upload.
//
// Two kernels, both accumulating in float32:
//
//   gemv  (N <= kGemvMaxRows: the decoder step)  Each warp owns R output columns (R weight rows).
//         Its lanes walk k in 16-byte chunks of 8 weights, U chunks per row in flight, so every
//         weight is read from memory once and used for all N rows (at most NB per pass); the 32
//         lanes' partial dots are summed with shuffles. Optionally a LayerNorm of the x rows is the
//         prologue: one warp per row computes mean and 1/sqrt(var + eps) (two passes, as the
//         reference) into shared memory, and x is normalized as it is read. That saves the decoder
//         step a launch per sub-block.
//   gemm  (larger N: prefill, encoders, large batches)  64 x 64 output tiles, k in steps of 16
//         through shared memory (weights widened to float32 as they are staged), 4 x 4 outputs
//         per thread.
//
// The epilogue (one place, store_out) adds the bias, applies gelu_new, and adds into y when accumulating.
#include "cuda/common.cuh"

namespace pyclvp::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Epilogue

__device__ __forceinline__ void store_out(const LinearArgs& a, int64_t n, int64_t c, float s) {
  float v = s + (a.b ? a.b[c] : 0.0f);
  if (a.act == Act::GELU_NEW) v = gelu_new_f(v);
  float* y = a.y + n * a.ldy + c;
  *y = a.accumulate ? *y + v : v;
}

// ---------------------------------------------------------------------------------------------
// gemv

constexpr int kGemvWarps = 4;
constexpr int64_t kChunk = 8;            // weights per lane per 16-byte load
constexpr int64_t kStride = 32 * kChunk; // k advance of one warp-wide load

struct RowStats {  // per x row: mean and 1/sqrt(var + eps), when the LayerNorm prologue runs
  float mu[kGemvMaxRows], rstd[kGemvMaxRows];
};

// matches pyclvp/ops/numpy_ops.py::layer_norm's statistics: mean, then the centred variance
__device__ void row_stats(const LinearArgs& a, RowStats& st) {
  const int lane = threadIdx.x & 31;
  const float inv_c = 1.0f / static_cast<float>(a.Cin);
  for (int64_t n = threadIdx.x >> 5; n < a.N; n += kGemvWarps) {
    const float* xr = a.x + n * a.ldx;
    float s = 0.0f;
    for (int64_t k = lane; k < a.Cin; k += 32) s += xr[k];
    const float mu = warp_sum(s) * inv_c;
    float q = 0.0f;
    for (int64_t k = lane; k < a.Cin; k += 32) {
      const float d = xr[k] - mu;
      q = fmaf(d, d, q);
    }
    const float var = warp_sum(q) * inv_c;
    if (lane == 0) st.mu[n] = mu, st.rstd[n] = 1.0f / sqrtf(var + a.ln_eps);
  }
}

// acc[r][n] += w[r][k:k+8] . x[n0+n][k:k+8] for one chunk (x normalized first with the prologue)
template <class WT, int R, int NB>
__device__ __forceinline__ void fma_chunk(const LinearArgs& a, const RowStats& st, const Pack8<WT> (&wp)[R], int64_t k,
                                          int64_t n0, float (&acc)[R][NB]) {
  float w[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r) widen(wp[r], w[r]);
  float g[8], b[8];
  if (a.ln_g) {
    widen(ldg8(a.ln_g + k), g);
    widen(ldg8(a.ln_b + k), b);
  }
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    if (n0 + n >= a.N) break;
    float xv[8];
    widen(ldg8(a.x + (n0 + n) * a.ldx + k), xv);
    if (a.ln_g) {
      const float mu = st.mu[n0 + n], rstd = st.rstd[n0 + n];
#pragma unroll
      for (int i = 0; i < 8; ++i) xv[i] = (xv[i] - mu) * rstd * g[i] + b[i];
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[r][n] = fmaf(w[r][i], xv[i], acc[r][n]);
  }
}

// The 16-byte path: Cin % 8 == 0 and every row 16-byte aligned.
template <class WT, int R, int NB>
__device__ __forceinline__ void gemv_vec(const LinearArgs& a, const RowStats& st, const WT* const (&wr)[R], int64_t n0,
                                         float (&acc)[R][NB]) {
  constexpr int U = 8 / R;  // chunks per row in flight
  int64_t k = (threadIdx.x & 31) * kChunk;
  for (; k + (U - 1) * kStride < a.Cin; k += U * kStride) {
    Pack8<WT> wp[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) wp[u][r] = ldg8(wr[r] + k + u * kStride);
#pragma unroll
    for (int u = 0; u < U; ++u) fma_chunk<WT, R, NB>(a, st, wp[u], k + u * kStride, n0, acc);
  }
  for (; k < a.Cin; k += kStride) {
    Pack8<WT> wp[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wp[r] = ldg8(wr[r] + k);
    fma_chunk<WT, R, NB>(a, st, wp, k, n0, acc);
  }
}

// Any Cin, any alignment: one element per lane per step.
template <class WT, int R, int NB>
__device__ __forceinline__ void gemv_scalar(const LinearArgs& a, const RowStats& st, const WT* const (&wr)[R],
                                            int64_t n0, float (&acc)[R][NB]) {
  for (int64_t k = threadIdx.x & 31; k < a.Cin; k += 32) {
    float w[R];
#pragma unroll
    for (int r = 0; r < R; ++r) w[r] = to_f32(wr[r][k]);
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      if (n0 + n >= a.N) break;
      float xv = a.x[(n0 + n) * a.ldx + k];
      if (a.ln_g) xv = (xv - st.mu[n0 + n]) * st.rstd[n0 + n] * a.ln_g[k] + a.ln_b[k];
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r][n] = fmaf(w[r], xv, acc[r][n]);
    }
  }
}

// This block's weight rows, [c0, c0 + kGemvWarps * R) clipped to Cout and contiguous, fetched into L2
// while the kernel before still runs (common.cuh: programmatic dependent launch; weights are never
// written). vec: the rows are 16-byte aligned and Cin % 8 == 0, as prefetch_l2 needs.
template <class WT, int R>
__device__ __forceinline__ void prefetch_block_weights(const LinearArgs& a, bool vec) {
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kGemvWarps * R, c1 = min(c0 + kGemvWarps * R, a.Cout);
  if (vec && threadIdx.x == 0 && c0 < c1)
    prefetch_l2(static_cast<const WT*>(a.w) + c0 * a.Cin, (c1 - c0) * a.Cin * static_cast<int64_t>(sizeof(WT)));
}

template <class WT, int R, int NB>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(const LinearArgs a, const bool vec) {
  __shared__ RowStats st;
  prefetch_block_weights<WT, R>(a, vec);
  wait_for_previous_kernel();
  if (a.ln_g) {
    row_stats(a, st);
    __syncthreads();
  }
  const int lane = threadIdx.x & 31;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5)) * R;
  if (c0 >= a.Cout) return;  // after the block's only barrier
  const WT* wr[R];  // this warp's weight rows; past Cout, a duplicate of the last row whose result is dropped
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = static_cast<const WT*>(a.w) + min(c0 + r, a.Cout - 1) * a.Cin;

  for (int64_t n0 = 0; n0 < a.N; n0 += NB) {
    float acc[R][NB];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int n = 0; n < NB; ++n) acc[r][n] = 0.0f;
    if (vec) gemv_vec<WT, R, NB>(a, st, wr, n0, acc);
    else gemv_scalar<WT, R, NB>(a, st, wr, n0, acc);
    // every lane ends with every sum; lane (r * NB + n) % 32 stores output (n, c0 + r)
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int n = 0; n < NB; ++n) {
        const float s = warp_sum(acc[r][n]);
        if (lane == ((r * NB + n) & 31) && c0 + r < a.Cout && n0 + n < a.N) store_out(a, n0 + n, c0 + r, s);
      }
  }
}

template <class WT, int NB>
void launch_gemv(const LinearArgs& a, StreamHandle s) {
  constexpr int R = NB == 1 ? 2 : 4;  // more columns per warp as N grows: each x load feeds R weight rows
  const bool vec = a.Cin % kChunk == 0 && a.ldx % 4 == 0 && aligned16(a.x) && aligned16(a.w) &&
                   (!a.ln_g || (aligned16(a.ln_g) && aligned16(a.ln_b)));
  launch(gemv_kernel<WT, R, NB>, grid_x(ceil_div(a.Cout, kGemvWarps * R), "linear (gemv)"), kGemvWarps * 32, s, a, vec);
}

template <class WT>
void gemv(const LinearArgs& a, StreamHandle s) {
  // three row-block sizes (rows past N are skipped at run time): fewer instantiations to compile
  if (a.N <= 1) return launch_gemv<WT, 1>(a, s);
  if (a.N <= 4) return launch_gemv<WT, 4>(a, s);
  return launch_gemv<WT, 16>(a, s);
}

// ---------------------------------------------------------------------------------------------
// gemm

constexpr int BM = 64, BN = 64, BK = 16, kGemmThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

template <class WT>
__global__ void __launch_bounds__(kGemmThreads) gemm_kernel(const LinearArgs a) {
  __shared__ __align__(16) float xs[BK][BM + 4];  // x tile, k-major: xs[k][row]
  __shared__ __align__(16) float ws[BK][BN + 4];  // weight tile, k-major: ws[k][column]
  wait_for_previous_kernel();
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BM, c0 = static_cast<int64_t>(blockIdx.x) * BN;
  const WT* w = static_cast<const WT*>(a.w);
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < a.Cin; k0 += BK) {
    for (int i = tid; i < BM * BK; i += kGemmThreads) {
      const int m = i / BK, kk = i % BK;
      const int64_t n = n0 + m, k = k0 + kk;
      xs[kk][m] = n < a.N && k < a.Cin ? a.x[n * a.ldx + k] : 0.0f;
    }
    for (int i = tid; i < BN * BK; i += kGemmThreads) {
      const int m = i / BK, kk = i % BK;
      const int64_t c = c0 + m, k = k0 + kk;
      ws[kk][m] = c < a.Cout && k < a.Cin ? to_f32(w[c * a.Cin + k]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const float4 xa = *reinterpret_cast<const float4*>(&xs[kk][ty * 4]);
      const float4 wb = *reinterpret_cast<const float4*>(&ws[kk][tx * 4]);
      const float xv[4] = {xa.x, xa.y, xa.z, xa.w}, wv[4] = {wb.x, wb.y, wb.z, wb.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(xv[i], wv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + ty * 4 + i, c = c0 + tx * 4 + j;
      if (n < a.N && c < a.Cout) store_out(a, n, c, acc[i][j]);
    }
}

template <class WT>
void gemm(const LinearArgs& a, StreamHandle s) {
  if (a.ln_g) throw std::runtime_error("linear: the fused layer_norm prologue needs N <= kGemvMaxRows");
  const dim3 grid(grid_x(ceil_div(a.Cout, BN), "linear (gemm)"), grid_yz(ceil_div(a.N, BM), "linear (gemm)"));
  launch(gemm_kernel<WT>, grid, kGemmThreads, s, a);
}

// ---------------------------------------------------------------------------------------------
// Upload: a (rows, cols) row-major matrix of 2- or 4-byte elements, transposed (bits moved, not values)

template <class E>
__global__ void transpose_kernel(E* dst, const E* src, int64_t rows, int64_t cols) {  // dst (cols, rows)
  __shared__ E tile[32][33];
  wait_for_previous_kernel();
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * 32, c0 = static_cast<int64_t>(blockIdx.x) * 32;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = src[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (c < cols && r < rows) dst[c * rows + r] = tile[threadIdx.x][i];
  }
}

template <class E>
void transpose(void* dst, const void* src, int64_t rows, int64_t cols, StreamHandle s) {
  const dim3 grid(grid_x(ceil_div(cols, 32), "transpose"), grid_yz(ceil_div(rows, 32), "transpose"));
  launch(transpose_kernel<E>, grid, dim3(32, 8), s, static_cast<E*>(dst), static_cast<const E*>(src), rows, cols);
}

}  // namespace

void linear(const LinearArgs& a, StreamHandle s) {
  if (a.N == 0 || a.Cout == 0) return;
  dispatch_dtype(a.w_dtype, [&](auto t) {
    using WT = typename decltype(t)::type;
    if (a.N <= kGemvMaxRows) gemv<WT>(a, s);
    else gemm<WT>(a, s);
  });
}

void upload_rows(DeviceMatrix& dst, int64_t row0, const HostMatrix& m, StreamHandle s) {
  if (m.dtype != dst.dtype || m.Cin != dst.cols || row0 < 0 || row0 + m.Cout > dst.rows)
    throw std::logic_error("upload_rows: the matrix does not fit the destination");
  const size_t es = dtype_size(m.dtype), bytes = static_cast<size_t>(m.Cout * m.Cin) * es;
  char* out = static_cast<char*>(dst.buf.data()) + static_cast<size_t>(row0 * dst.cols) * es;
  if (!m.kn) return to_device(out, m.data, bytes, s);
  DeviceBuffer staged(bytes, "a Conv1D weight before its transpose");  // (Cin, Cout) as stored
  to_device(staged.data(), m.data, bytes, s);
  if (es == 4) transpose<uint32_t>(out, staged.data(), m.Cin, m.Cout, s);
  else transpose<uint16_t>(out, staged.data(), m.Cin, m.Cout, s);
  sync(s);  // before `staged` is freed
}

DeviceMatrix upload_matrix(const HostMatrix& m, StreamHandle s, const char* what) {
  DeviceMatrix d;
  d.buf = DeviceBuffer(static_cast<size_t>(m.Cout * m.Cin) * dtype_size(m.dtype), what);
  d.dtype = m.dtype, d.rows = m.Cout, d.cols = m.Cin;
  upload_rows(d, 0, m, s);
  return d;
}

}  // namespace pyclvp::cuda
