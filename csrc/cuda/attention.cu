// rotary, attention and the KV-cache write. Contracts in csrc/cuda/kernels.h.
//
// attention: a block of 4 warps per (batch, head, tile of query rows). A warp keeps one query row,
// scaled, in shared memory and walks the keys in tiles of 32, one key per lane, with the online
// softmax (ref: Milakov & Gimelshein 2018; FlashAttention's outer loop; the CPU kernel
// csrc/cpu/kernels/attention.cc does the same per row):
//     lane j scores key s0 + j:       x_j = q . k_j (+ mask), finfo.min when key_mask drops it
//     m' = max(m, max_j x_j);  p_j = e^(x_j - m');  l = l e^(m - m') + sum_j p_j
//     acc = acc e^(m - m') + sum_j p_j v_j     (p_j broadcast by shuffles; see RowAcc for which lane
//     out = acc / l                             holds which dims of which keys)
// So the (T, S) scores never exist. With T == 1 (the decoder step) the 4 warps split the keys of the
// one row instead (tiles w, w+4, ...), and their (m, l, acc) are merged through shared memory at the
// end, as FlashDecoding does. K and V are read in their storage dtype and widened on load.
#include "cuda/common.cuh"

namespace pyclvp::cuda {
namespace {

constexpr int kAttnWarps = 4;
constexpr int kThreads = 256;

// cache[offset + t, d] = new[(b*T + t) * ld + h*D + d] for t < T, d < D, for k and v; the block's threads share it
template <class KV>
__device__ void store_new_kv(KV* k, int64_t k_ss, KV* v, int64_t v_ss, const float* new_k, const float* new_v,
                             int64_t ld, int64_t b, int64_t h, int64_t T, int64_t D, int64_t offset) {
  for (int64_t i = threadIdx.x; i < T * D; i += blockDim.x) {
    const int64_t t = i / D, d = i % D, src = (b * T + t) * ld + h * D + d;
    k[(offset + t) * k_ss + d] = from_f32<KV>(new_k[src]);
    v[(offset + t) * v_ss + d] = from_f32<KV>(new_v[src]);
  }
}

// q . k over D, q in shared memory (every lane reads the same q element: a broadcast)
template <class KV>
__device__ __forceinline__ float dot_q(const float* q, const KV* k, int64_t D, bool vec) {
  float acc = 0.0f;
  if (vec) {
    for (int64_t d = 0; d < D; d += 8) {
      float kf[8];
      widen(ld8(k + d), kf);  // a plain load: the step's prologue may just have written this row
#pragma unroll
      for (int i = 0; i < 8; ++i) acc = fmaf(q[d + i], kf[i], acc);
    }
  } else {
    for (int64_t d = 0; d < D; ++d) acc = fmaf(q[d], to_f32(k[d]), acc);
  }
  return acc;
}

// A lane's accumulator slots for one query row's output: the p-weighted sum of v over the keys its
// warp visits. Two layouts, chosen by lpk (lanes per key):
//   lpk == 0  slot i holds dim i * 32 + lane (i < DPL); every lane walks all of a tile's keys, one
//             V row load per key, so a tile is 32 dependent round trips to memory: any D, any alignment.
//   lpk > 0   (the 16-byte path: D = 8 * lpk, 32 % lpk == 0) slots 0..7 hold dims [8c, 8c + 8),
//             c = lane % lpk, summed over the keys g, g + 32/lpk, ... of each tile, g = lane / lpk:
//             one 16-byte load per lane covers 32/lpk whole V rows, and a tile's lpk loads are
//             independent, all in flight at once; reduce_keys() then sums over the key groups g.
constexpr int kAccSlots = 8;  // >= the largest DPL (kAttentionMaxD / 32 = 4)
using RowAcc = float[kAccSlots];

__device__ __forceinline__ int acc_count(int lpk, int dpl) { return lpk ? 8 : dpl; }
// the head dim held in acc slot i by this lane, and whether this lane stores it (one lane per dim)
__device__ __forceinline__ int acc_dim(int lpk, int i, int lane) { return lpk ? (lane % lpk) * 8 + i : i * 32 + lane; }
__device__ __forceinline__ bool acc_owner(int lpk, int lane) { return lpk == 0 || lane < lpk; }

// acc += sum over the tile's n keys of p_j v[s0 + j]   (lane j holds p_j)
template <class KV, int DPL>
__device__ __forceinline__ void add_tile(RowAcc& acc, const KV* v, int64_t v_ss, int64_t s0, int n, float p,
                                         int64_t D, int lpk) {
  const int lane = threadIdx.x & 31;
  if (lpk) {
    const int kpi = 32 / lpk, g = lane / lpk, c = lane % lpk;  // keys per load, this lane's key group and chunk
#pragma unroll 8
    for (int r = 0; r < lpk; ++r) {  // D = 64: all 8 loads issued before the first is used
      const int j = r * kpi + g;
      const float pj = __shfl_sync(kFullMask, p, j);
      if (j < n) {
        float vf[8];
        widen(ld8(v + (s0 + j) * v_ss + c * 8), vf);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] = fmaf(pj, vf[i], acc[i]);
      }
    }
  } else {
#pragma unroll 4
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(kFullMask, p, j);
      const KV* vr = v + (s0 + j) * v_ss;
#pragma unroll
      for (int i = 0; i < DPL; ++i)
        if (i * 32 + lane < D) acc[i] = fmaf(pj, to_f32(vr[i * 32 + lane]), acc[i]);
    }
  }
}

// lpk > 0: every lane ends with its chunk's sum over all key groups (a butterfly over the groups)
__device__ __forceinline__ void reduce_keys(RowAcc& acc, int lpk) {
  if (!lpk) return;
  for (int o = lpk; o < 32; o <<= 1)
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] += __shfl_xor_sync(kFullMask, acc[i], o);
}

// DPL: slots per lane in the lpk == 0 layout (D <= 32 * DPL <= 32 * kAccSlots). QT: query rows per block;
// kAttnWarps / QT warps split each row's keys.
template <class KV, int DPL>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const AttentionArgs a, const int QT, const bool vec, const int lpk) {
  __shared__ float qs[kAttnWarps][kAttentionMaxD];        // each warp's scaled query row
  __shared__ float part_m[kAttnWarps], part_l[kAttnWarps];  // each warp's running max and sum
  __shared__ float part_acc[kAttnWarps][kAttentionMaxD];  // each warp's unnormalized output
  wait_for_previous_kernel();
  static_assert(DPL <= kAccSlots, "attention: DPL exceeds the accumulator slots");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int splits = kAttnWarps / QT, row = warp % QT, split = warp / QT, count = acc_count(lpk, DPL);
  const int64_t b = blockIdx.z, h = blockIdx.y, t = static_cast<int64_t>(blockIdx.x) * QT + row, D = a.D;
  const int64_t len = a.length ? *a.length : 0;
  const int64_t offset = a.length ? len : a.causal_offset, S = a.length ? len + a.T : a.S;
  KV* k = static_cast<KV*>(a.k) + b * a.k_sb + h * a.k_sh;
  KV* v = static_cast<KV*>(a.v) + b * a.v_sb + h * a.v_sh;
  if (a.new_k) {  // the decoder step: this (b, h)'s new key/value into the cache first
    store_new_kv(k, a.k_ss, v, a.v_ss, a.new_k, a.new_v, a.new_ld, b, h, a.T, D, offset);
    __syncthreads();  // makes the block's global writes visible to the whole block
  }

  const bool active = t < a.T;  // the same for the whole warp
  float m = -FLT_MAX, l = 0.0f;
  RowAcc acc;
#pragma unroll
  for (int i = 0; i < kAccSlots; ++i) acc[i] = 0.0f;
  if (active) {
    const float* q = a.q + b * a.q_sb + h * a.q_sh + t * a.q_st;
    for (int64_t d = lane; d < D; d += 32) qs[warp][d] = q[d] * a.scale;
    __syncwarp();
    const int64_t s_end = a.causal ? max(int64_t{0}, min(t + offset + 1, S)) : S;
    const uint8_t* km = a.key_mask ? a.key_mask + b * a.km_sb : nullptr;
    const float* mrow = a.mask ? a.mask + b * a.m_sb + h * a.m_sh + t * a.m_st : nullptr;
    for (int64_t s0 = static_cast<int64_t>(split) * 32; s0 < s_end; s0 += 32 * splits) {
      const int64_t s = s0 + lane;
      float x = -INFINITY;  // past the end: p = 0
      if (s < s_end) {
        if (km && !km[s]) {
          x = -FLT_MAX;  // as the reference's additive finfo(float32).min
        } else {
          x = dot_q(qs[warp], k + s * a.k_ss, D, vec);
          if (mrow) x += fmaxf(mrow[s], -FLT_MAX);  // -inf counts as finfo.min (numpy_ops.attention)
        }
      }
      const float m_new = fmaxf(m, warp_max(x));
      const float p = expf(x - m_new), corr = expf(m - m_new);  // corr is exactly 1 when m == m'
      l = l * corr + warp_sum(p);
#pragma unroll
      for (int i = 0; i < kAccSlots; ++i) acc[i] *= corr;
      add_tile<KV, DPL>(acc, v, a.v_ss, s0, static_cast<int>(min(int64_t{32}, s_end - s0)), p, D, lpk);
      m = m_new;
    }
    if (m == -FLT_MAX)  // every visible key dropped: the hidden ones count too (see the CPU kernel's add_hidden_keys)
      for (int64_t s0 = s_end + static_cast<int64_t>(split) * 32; s0 < S; s0 += 32 * splits) {
        const int n = static_cast<int>(min(int64_t{32}, S - s0));
        add_tile<KV, DPL>(acc, v, a.v_ss, s0, n, 1.0f, D, lpk);
        l += static_cast<float>(n);
      }
    reduce_keys(acc, lpk);
  }

  if (splits > 1) {  // merge the warps that split one row: rescale each to the common max
    if (lane == 0) part_m[warp] = m, part_l[warp] = l;
#pragma unroll
    for (int i = 0; i < kAccSlots; ++i)
      if (i < count && acc_owner(lpk, lane) && acc_dim(lpk, i, lane) < D)
        part_acc[warp][acc_dim(lpk, i, lane)] = acc[i];
    __syncthreads();
    if (split != 0) return;
    float M = -FLT_MAX;
    for (int w = row; w < kAttnWarps; w += QT) M = fmaxf(M, part_m[w]);
    l = 0.0f;
#pragma unroll
    for (int i = 0; i < kAccSlots; ++i) acc[i] = 0.0f;
    for (int w = row; w < kAttnWarps; w += QT) {
      const float f = expf(part_m[w] - M);
      l = fmaf(part_l[w], f, l);
#pragma unroll
      for (int i = 0; i < kAccSlots; ++i)
        if (i < count && acc_owner(lpk, lane) && acc_dim(lpk, i, lane) < D)
          acc[i] = fmaf(part_acc[w][acc_dim(lpk, i, lane)], f, acc[i]);
    }
  }
  if (!active) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // no key at all: zeros
  float* o = a.out + b * a.o_sb + h * a.o_sh + t * a.o_st;
#pragma unroll
  for (int i = 0; i < kAccSlots; ++i)
    if (i < count && acc_owner(lpk, lane) && acc_dim(lpk, i, lane) < D) o[acc_dim(lpk, i, lane)] = acc[i] * inv;
}

template <class KV>
__global__ void __launch_bounds__(kThreads)
    write_kv_kernel(KV* k, KV* v, int64_t Scache, const float* new_k, const float* new_v, int64_t ld, int64_t H,
                    int64_t T, int64_t D, int64_t offset) {
  wait_for_previous_kernel();
  const int64_t b = blockIdx.y, h = blockIdx.x, base = (b * H + h) * Scache * D;  // (B, H, Scache, D) contiguous
  store_new_kv(k + base, D, v + base, D, new_k, new_v, ld, b, h, T, D, offset);
}

// y = x with the first R channels of each (m, t) row rotated: y1 = x1 cos1 - x2 sin1, y2 = x2 cos2 + x1 sin2
// (x1 = x[:R/2], x2 = x[R/2:R]); one thread per pair (or per passed-through channel), so y may alias x.
__global__ void __launch_bounds__(kThreads)
    rotary_kernel(float* y, const float* x, const float* cos, const float* sin, int64_t MT, int64_t T, int64_t D,
                  int64_t R) {
  wait_for_previous_kernel();
  const int64_t half = R / 2, W = D - half;  // work items per row: R/2 pairs, then D-R copies
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < MT * W;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = i / W, j = i % W, t = row % T;
    const float* xr = x + row * D;
    float* yr = y + row * D;
    if (j < half) {
      const float x1 = xr[j], x2 = xr[j + half];
      const float* c = cos + t * R;
      const float* s = sin + t * R;
      yr[j] = x1 * c[j] - x2 * s[j];
      yr[j + half] = x2 * c[j + half] + x1 * s[j + half];
    } else {
      yr[j + half] = xr[j + half];  // channel R + (j - half)
    }
  }
}

template <class KV, int DPL>
void launch_attention(const AttentionArgs& a, StreamHandle s) {
  const int QT = a.T == 1 ? 1 : kAttnWarps;  // one row: 4 warps split its keys; else a row per warp
  const bool vec = a.D % 8 == 0 && a.k_ss % 8 == 0 && a.k_sb % 8 == 0 && a.k_sh % 8 == 0 && aligned16(a.k);
  const bool vec_v = a.D % 8 == 0 && 32 % (a.D / 8) == 0 && a.v_ss % 8 == 0 && a.v_sb % 8 == 0 && a.v_sh % 8 == 0 &&
                     aligned16(a.v);
  const dim3 grid(grid_x(ceil_div(a.T, QT), "attention"), grid_yz(a.H, "attention"), grid_yz(a.B, "attention"));
  launch(attention_kernel<KV, DPL>, grid, kAttnWarps * 32, s, a, QT, vec, vec_v ? static_cast<int>(a.D / 8) : 0);
}

}  // namespace

void attention(const AttentionArgs& a, StreamHandle s) {
  if (a.D > kAttentionMaxD)
    throw std::runtime_error("attention: head dim " + std::to_string(a.D) + " exceeds the CUDA kernel's limit " +
                             std::to_string(kAttentionMaxD));
  if (a.new_k && a.T != 1) throw std::logic_error("attention: the cache-writing prologue needs T == 1");
  if (a.B == 0 || a.H == 0 || a.T == 0 || a.D == 0) return;
  dispatch_dtype(a.kv_dtype, [&](auto t) {
    using KV = typename decltype(t)::type;
    if (a.D <= 32) launch_attention<KV, 1>(a, s);
    else if (a.D <= 64) launch_attention<KV, 2>(a, s);
    else launch_attention<KV, 4>(a, s);
  });
}

void write_kv(void* k, void* v, DType dtype, int64_t Scache, const float* new_k, const float* new_v, int64_t new_ld,
              int64_t B, int64_t H, int64_t T, int64_t D, int64_t offset, StreamHandle s) {
  if (B == 0 || H == 0 || T == 0 || D == 0) return;
  const dim3 grid(grid_x(H, "write_kv"), grid_yz(B, "write_kv"));
  dispatch_dtype(dtype, [&](auto t) {
    using KV = typename decltype(t)::type;
    launch(write_kv_kernel<KV>, grid, kThreads, s, static_cast<KV*>(k), static_cast<KV*>(v), Scache, new_k, new_v,
           new_ld, H, T, D, offset);
  });
}

void rotary(float* y, const float* x, const float* cos, const float* sin, int64_t M, int64_t T, int64_t D, int64_t R,
            StreamHandle s) {
  const int64_t work = M * T * (D - R / 2);
  if (work == 0) return;
  launch(rotary_kernel, grid_stride_blocks(work), kThreads, s, y, x, cos, sin, M * T, T, D, R);
}

}  // namespace pyclvp::cuda
