// The next token on the device: pyclvp/generate.py's process_logits and sample()/argmax for every
// row of a decoder step, so that only the chosen ids (B int64) come back to the host instead of the
// logits (B x V float32), and the processing (a sort of V logits per row for top-p) runs beside the
// logits instead of in NumPy. Contract in csrc/cuda/kernels.h (SampleArgs).
//
// One block of kThreads per row, in the host's order:
//   1. x = logits; seen tokens: x < 0 ? x * penalty : x / penalty; x[suppress] = -inf; x /= temperature
//   2. greedy: out = argmax x (the lowest id on a tie; NaN wins, as numpy.argmax)
//   3. sampling with top-k or top-p: keys = (orderable bits of x, id) sorted ascending (a bitonic
//      sort in the row's global scratch; the id breaks ties as the host's stable argsort does)
//        top-k: remove x < the k-th largest value (ties with it stay)
//        top-p: over the sorted survivors, p = exp(x - max) / sum, cum = inclusive cumulative sum;
//               remove while cum <= 1 - top_p, never the largest
//   4. sampling: c = cumulative sum of exp(x - max x) in index order (float64);
//      out = min(#{i : c[i] <= u * c[V-1]}, V - 1)
//   5. seen[out] = 1
// The cumulative sums are scans: each thread sums a contiguous segment, the block scans the
// segment totals, each thread walks its segment again from its prefix.
#include "cuda/common.cuh"

namespace pyclvp::cuda {
namespace {

constexpr int kThreads = 512;

// float bits -> unsigned with the same order (negatives flipped, positives above them); -0 is +0,
// so that the two zeros tie (and sort by id) as they do in the host's argsort
__device__ __forceinline__ uint32_t orderable(float x) {
  const uint32_t b = __float_as_uint(x == 0.0f ? 0.0f : x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint64_t key) {
  const uint32_t o = static_cast<uint32_t>(key >> 32);
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}
__device__ __forceinline__ int64_t key_id(uint64_t key) { return static_cast<int64_t>(key & 0xffffffffu); }

// (value, id) a beats (value, id) b for argmax: NaN first, then the larger value, then the lower id
__device__ __forceinline__ bool beats(float va, int64_t ia, float vb, int64_t ib) {
  if (isnan(va) != isnan(vb)) return isnan(va);
  if (va != vb && !isnan(va)) return va > vb;
  return ia < ib;
}

// The block's argmax of each thread's (v, i); every thread gets the id.
__device__ int64_t block_argmax(float v, int64_t i) {
  constexpr int NW = kThreads / 32;
  __shared__ float pv[NW];
  __shared__ int64_t pi[NW];
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_xor_sync(kFullMask, v, o);
    const int64_t i2 = __shfl_xor_sync(kFullMask, i, o);
    if (beats(v2, i2, v, i)) v = v2, i = i2;
  }
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) pv[w] = v, pi[w] = i;
  __syncthreads();
  v = pv[0], i = pi[0];
  for (int k = 1; k < NW; ++k)
    if (beats(pv[k], pi[k], v, i)) v = pv[k], i = pi[k];
  __syncthreads();  // pv, pi may be reused
  return i;
}

// The exclusive prefix sum of each thread's v over the block, in thread order; *total gets the sum.
template <class T>
__device__ T block_exclusive_scan(T v, T* total) {
  constexpr int NW = kThreads / 32;
  __shared__ T warp_prefix[NW + 1];  // [w]: the sum over warps before w; [NW]: the block's sum
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  T incl = v;  // the inclusive scan within the warp
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_sync(kFullMask, incl, lane - o);
    if (lane >= o) incl += y;
  }
  if (lane == 31) warp_prefix[w] = incl;
  __syncthreads();
  if (threadIdx.x == 0) {  // NW warp totals: a sequential scan
    T run = 0;
    for (int k = 0; k < NW; ++k) {
      const T t = warp_prefix[k];
      warp_prefix[k] = run;
      run += t;
    }
    warp_prefix[NW] = run;
  }
  __syncthreads();
  const T prev = __shfl_sync(kFullMask, incl, lane - 1);
  const T out = warp_prefix[w] + (lane == 0 ? T(0) : prev);
  *total = warp_prefix[NW];
  __syncthreads();  // warp_prefix may be reused
  return out;
}

// This thread's contiguous segment [lo, hi) of n items.
__device__ __forceinline__ void segment(int64_t n, int64_t* lo, int64_t* hi) {
  const int64_t per = (n + kThreads - 1) / kThreads;
  *lo = min(n, threadIdx.x * per), *hi = min(n, *lo + per);
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleArgs a) {
  const int64_t row = blockIdx.x, V = a.V, tid = threadIdx.x;
  float* x = a.logits + row * V;
  uint8_t* seen = a.seen + row * V;

  // 1. the processors that act token by token
  for (int64_t i = tid; i < V; i += kThreads) {
    if (a.start >= 0) seen[i] = (i == a.start);
    float v = x[i];
    if (seen[i]) v = v < 0.0f ? v * a.penalty : v / a.penalty;
    if (i == a.suppress) v = -INFINITY;
    x[i] = v / a.temperature;
  }
  __syncthreads();

  int64_t pick;
  if (!a.do_sample) {  // 2. greedy
    float best = -INFINITY;  // a thread without tokens loses to any real one
    int64_t best_i = INT64_MAX;
    for (int64_t i = tid; i < V; i += kThreads)
      if (beats(x[i], i, best, best_i)) best = x[i], best_i = i;
    pick = block_argmax(best, best_i);
  } else {
    if (a.top_k > 0 || a.top_p) {  // 3. sort, then top-k and top-p
      const int64_t Vp = a.Vp, lo = Vp - V;  // after the sort the V real keys are keys[lo, Vp)
      uint64_t* keys = a.keys + row * Vp;
      for (int64_t j = tid; j < Vp; j += kThreads)  // padding (key 0) sorts first
        keys[j] = j < V ? (static_cast<uint64_t>(orderable(x[j])) << 32) | static_cast<uint64_t>(j) : 0;
      __syncthreads();
      for (int64_t k = 2; k <= Vp; k <<= 1) {
        for (int64_t j = k >> 1; j > 0; j >>= 1) {
          for (int64_t i = tid; i < Vp; i += kThreads) {
            const int64_t l = i ^ j;
            if (l <= i) continue;
            const uint64_t ki = keys[i], kl = keys[l];
            if ((ki > kl) == ((i & k) == 0)) keys[i] = kl, keys[l] = ki;
          }
          __syncthreads();
        }
      }
      const float kth = a.top_k > 0 ? key_value(keys[Vp - min(a.top_k, V)]) : -INFINITY;
      for (int64_t j = lo + tid; j < Vp; j += kThreads)
        if (key_value(keys[j]) < kth) x[key_id(keys[j])] = -INFINITY;
      if (a.top_p) {
        const float mx = key_value(keys[Vp - 1]);
        auto e = [&](int64_t j) {  // exp(x - max) of the j-th smallest; 0 for what top-k removed
          const float v = key_value(keys[j]);
          return v < kth ? 0.0f : expf(v - mx);
        };
        float part = 0.0f;
        for (int64_t j = lo + tid; j < Vp; j += kThreads) part += e(j);
        const float sum = block_sum<kThreads>(part);
        int64_t s0, s1;
        segment(V, &s0, &s1);
        float seg = 0.0f;
        for (int64_t j = lo + s0; j < lo + s1; ++j) seg += e(j) / sum;
        float p_total;
        float cum = block_exclusive_scan<float>(seg, &p_total);
        for (int64_t j = lo + s0; j < lo + s1; ++j) {
          cum += e(j) / sum;
          if (cum <= a.top_p_remove && j != Vp - 1) x[key_id(keys[j])] = -INFINITY;
        }
      }
      __syncthreads();
    }
    // 4. the inverse-CDF draw, in index order, in float64
    float mx = -INFINITY;
    for (int64_t i = tid; i < V; i += kThreads) mx = fmaxf(mx, x[i]);
    const double m = block_max<kThreads>(mx);
    int64_t s0, s1;
    segment(V, &s0, &s1);
    double seg = 0.0;
    for (int64_t i = s0; i < s1; ++i) seg += exp(static_cast<double>(x[i]) - m);
    double total;
    double c = block_exclusive_scan<double>(seg, &total);
    const double threshold = a.u[row] * total;
    int64_t below = 0;
    for (int64_t i = s0; i < s1; ++i) {
      c += exp(static_cast<double>(x[i]) - m);
      below += c <= threshold;
    }
    pick = min(static_cast<int64_t>(block_sum<kThreads>(static_cast<float>(below))), V - 1);  // exact: below <= V < 2^24
  }
  if (tid == 0) {  // 5.
    a.out[row] = pick;
    seen[pick] = 1;
  }
}

}  // namespace

int64_t sort_width(int64_t V) {
  int64_t Vp = 1;
  while (Vp < V) Vp <<= 1;
  return Vp;
}

void sample(const SampleArgs& a, StreamHandle stream) {
  if (a.V >= (int64_t(1) << 24))
    throw std::runtime_error("the device sampler takes vocabularies below 2^24 tokens, got " + std::to_string(a.V));
  sample_kernel<<<grid_x(a.B, "sample"), kThreads, 0, stream>>>(a);
  PYCLVP_CUDA_LAUNCHED();
}

}  // namespace pyclvp::cuda
